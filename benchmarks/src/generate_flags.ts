/** generate.ts's flags, parsed and checked before a backend starts or a case runs. */
import type { FloatDType } from "@blocksparse/core";
import type { GenerateOptions } from "@blocksparse/models";
import { BACKEND_FLAG, checkKeepsABlock, type CliSpec, densities as densityList, DTYPE_FLAG, FlagError, flagItems, outputDirectory, parseFlags, positiveInteger, positiveIntegers as numbers } from "./flags";

/** GPT-2's position table (every size's n_positions). */
export const N_POSITIONS = 1024;

/** Hugging Face's GPT-2 sizes. */
export const SIZES: Record<string, { n_embd: number; n_layer: number; n_head: number }> = {
  small: { n_embd: 768, n_layer: 12, n_head: 12 },
  medium: { n_embd: 1024, n_layer: 24, n_head: 16 },
  large: { n_embd: 1280, n_layer: 36, n_head: 20 },
  xl: { n_embd: 1600, n_layer: 48, n_head: 25 },
};

// eosTokenId null: no end token, so that every sequence runs all its steps (generate defaults it to the config's
// eos_token_id, 50256 for GPT-2's vocabulary).
export const MODES = {
  eager: { graph: false, eosTokenId: null },
  static: { graph: false, staticCache: true, eosTokenId: null },
  graph: { graph: true, eosTokenId: null },
} satisfies Record<string, GenerateOptions>;

export type Mode = keyof typeof MODES;

/** The side of the blocks the patcher gives the feed-forward layers: its default, nn's DEFAULT_BLOCK_SHAPE. */
const FFN_BLOCK = 32;

export const GENERATE_CLI = {
  usage: "tsx src/generate.ts [flags]",
  summary: "GPT-2 generation as a user calls it: time per new token, eager, with the static cache and captured.",
  flags: {
    backend: BACKEND_FLAG,
    sizes: { type: "string", default: "small,medium", description: "comma-separated GPT-2 sizes: small, medium, large, xl" },
    batch: { type: "string", default: "1,8", description: "comma-separated batch sizes" },
    prompt: { type: "string", default: "32", description: "prompt tokens" },
    new: { type: "string", default: "64", description: "new tokens generated" },
    densities: { type: "string", default: "0.25", description: "comma-separated densities of the block-sparse feed-forward layers (the dense model always runs)" },
    modes: { type: "string", default: "eager,static,graph", description: "which of eager, static, graph to time" },
    dtype: DTYPE_FLAG,
    repeats: { type: "string", default: "3", description: "timed runs per case" },
    torch: { type: "boolean", default: false, description: "also time Hugging Face transformers' GPT2LMHeadModel (python/generate_torch.py)" },
    out: { type: "string", description: "directory for generate.md and .json", defaultText: "none: the table is printed only" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one), before a backend starts; makes the output directory. */
export function parseGenerateFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(GENERATE_CLI, args);
  const dtype = values.dtype as FloatDType;
  if (!["float32", "float16", "bfloat16"].includes(dtype)) throw new FlagError(`--dtype: expected float32, float16 or bfloat16, got "${values.dtype}"`);
  // Object.hasOwn, not `in`: "toString" is in every object, and ran a default-sized model reported as size "toString".
  const sizes = flagItems(values.sizes, "sizes");
  for (const size of sizes) if (!Object.hasOwn(SIZES, size)) throw new FlagError(`--sizes: "${size}" is not one of ${Object.keys(SIZES).join(", ")}`);
  const batches = numbers(values.batch, "batch");
  const prompt = positiveInteger(values.prompt, "prompt");
  const fresh = positiveInteger(values.new, "new");
  if (fresh < 2) throw new FlagError("--new: at least 2 new tokens (the time per token is a difference)");
  // GPT-2's 1024 positions hold the prompt and every new token but the last: found only once the model was built.
  if (prompt + fresh - 1 > N_POSITIONS) throw new FlagError(`--prompt ${prompt} and --new ${fresh} run ${prompt + fresh - 1} positions, past GPT-2's ${N_POSITIONS}`);
  const repeats = positiveInteger(values.repeats, "repeats");
  const sparse = densityList(values.densities, "densities");
  // The dense model always runs: a 1 here timed it twice, as two identical rows.
  if (sparse.includes(1)) throw new FlagError(`--densities: 1 is the dense model, which always runs; give densities below 1, got "${values.densities}"`);
  const densities = [1, ...sparse];
  // A density that keeps no block ran a layer of one block, reported as the density asked for.
  for (const size of sizes) {
    const width = SIZES[size].n_embd;
    for (const density of sparse) checkKeepsABlock(density, (4 * width) / FFN_BLOCK, width / FFN_BLOCK, `${FFN_BLOCK}x${FFN_BLOCK}`, `gpt2 ${size}'s ${4 * width}x${width} feed-forward weights`);
  }
  // Checked before the backend starts; a mode of no graphs is dropped after, where the backend is known.
  const asked = flagItems(values.modes, "modes");
  for (const mode of asked) if (!Object.hasOwn(MODES, mode)) throw new FlagError(`--modes: "${mode}" is not one of ${Object.keys(MODES).join(", ")}`);
  const outDir = values.out ? outputDirectory(values.out) : undefined;
  return { values, dtype, sizes, batches, prompt, fresh, repeats, densities, asked, outDir };
}
