/** gpt2_train.ts's flags, parsed and checked before a backend starts or a case runs. */
import { join } from "node:path";
import { BACKEND_FLAG, checkHostMemory, checkKeepsABlock, checkPythonImports, type CliSpec, densities as densityList, DTYPE_FLAG, FlagError, flagItems, outputDirectory, parseFlags, positiveInteger, positiveIntegers } from "./flags";
import { repoRoot } from "./machine";
import { type BenchDType, TOLERANCE } from "./validate";

/** The GPT-2 sizes it trains. */
export const SIZES: Record<string, { n_embd: number; n_layer: number; n_head: number }> = {
  tiny: { n_embd: 64, n_layer: 2, n_head: 4 },
  small: { n_embd: 768, n_layer: 12, n_head: 12 },
  medium: { n_embd: 1024, n_layer: 24, n_head: 16 },
};

export const GPT2_TRAIN_CLI = {
  usage: "tsx src/gpt2_train.ts [flags]",
  summary: "GPT-2's training step (cross-entropy, backward, AdamW), dense and with block-sparse feed-forward layers.",
  flags: {
    backend: BACKEND_FLAG,
    sizes: { type: "string", default: "small", description: `comma-separated GPT-2 sizes: ${Object.keys(SIZES).join(", ")}` },
    batch: { type: "string", default: "8", description: "sequences per step" },
    context: { type: "string", default: "1024", description: "tokens per sequence" },
    vocab: { type: "string", default: "50257", description: "vocabulary size" },
    densities: { type: "string", default: "0.25", description: "comma-separated densities of the feed-forward layers" },
    blocks: { type: "string", default: "32", description: "comma-separated block sizes" },
    dtype: DTYPE_FLAG,
    graph: { type: "boolean", default: false, description: "capture the whole step once and time its replays" },
    torch: { type: "boolean", default: false, description: "also time Hugging Face's GPT2LMHeadModel (python/gpt2_train_torch.py)" },
    "torch-compile": { type: "boolean", default: false, description: "also time the PyTorch model under torch.compile" },
    profile: { type: "boolean", default: false, description: "write an eager step's kernels and their times to gpt2-train-profile.md" },
    quick: { type: "boolean", default: false, description: "fewer timed steps" },
    out: { type: "string", description: "directory for gpt2-train.md and .json", defaultText: "benchmarks/results/tmp/gpt2-train" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one), before a backend starts; makes the output directory. */
export function parseGpt2TrainFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(GPT2_TRAIN_CLI, args);
  const dtype = values.dtype as BenchDType;
  if (!Object.hasOwn(TOLERANCE, dtype)) throw new FlagError(`--dtype: expected float32, float16 or bfloat16, got "${values.dtype}"`);
  const sizes = flagItems(values.sizes, "sizes");
  for (const size of sizes) if (!Object.hasOwn(SIZES, size)) throw new FlagError(`--sizes: "${size}" is not one of ${Object.keys(SIZES).join(", ")}`);
  const batch = positiveInteger(values.batch, "batch");
  const context = positiveInteger(values.context, "context");
  const vocab = positiveInteger(values.vocab, "vocab");
  // One token has nothing to predict: the loss is 0 whatever the model, and its check against ln(1) = 0 ended the run with a stack.
  if (vocab < 2) throw new FlagError(`--vocab: expected at least 2 tokens, got "${values.vocab}" (with one, every loss is 0 and there is nothing to check or train)`);
  const densities = densityList(values.densities, "densities");
  const blocks = positiveIntegers(values.blocks, "blocks");
  // Checked before any case runs: a misfit would otherwise end the run in the patcher, with its stack, after the dense model was timed.
  for (const size of sizes) {
    const width = SIZES[size].n_embd;
    for (const block of blocks) {
      if (width % block !== 0) throw new FlagError(`--blocks: ${block} does not divide gpt2 ${size}'s feed-forward widths ${width} and ${4 * width}; a divisor of ${width} works (e.g. 32)`);
      for (const density of densities) checkKeepsABlock(density, (4 * width) / block, width / block, `${block}x${block}`, `gpt2 ${size}'s ${4 * width}x${width} feed-forward weights`);
    }
  }
  // The logits [batch x context, vocab] and one layer's activations [batch x context, 4 x width], at the dtype's size,
  // and the weights, drawn in float32 on the host whatever the dtype (the token embedding, vocab x width, is most of
  // them with a large --vocab: it failed inside randn with an out-of-memory stack): a lower bound of a step's host memory
  // on js and cpu (on cuda each weight passes through the host as it is drawn, the embedding the largest).
  for (const size of sizes) {
    const { n_embd: width, n_layer: layers } = SIZES[size];
    const weights = (vocab + context) * width + 12 * layers * width * width;
    const bytes = batch * context * (vocab + 4 * width) * (dtype === "float32" ? 4 : 2) + 4 * weights;
    checkHostMemory(`--batch ${batch}, --context ${context} and --vocab ${vocab}`, `gpt2 ${size}'s ${dtype === "float32" ? "logits, activations and weights in float32" : `logits and activations in ${dtype} and its weights in float32`}`, bytes, 1, "use a smaller --batch, --context or --vocab");
  }
  if (values.torch || values["torch-compile"]) checkPythonImports(values.torch ? "torch" : "torch-compile", ["torch", "transformers"]);
  const outDir = outputDirectory(values.out ?? join(repoRoot, "benchmarks", "results", "tmp", "gpt2-train"));
  return { values, dtype, sizes, batch, context, vocab, densities, blocks, outDir };
}

/**
 * How far (relative) a fresh model's first loss may sit from ln(vocab): 10%, plus the spread of a mean over few tokens
 * (1 / sqrt(tokens)): a correct model at --vocab 2 with 16 tokens measured 18% off, and one of 256 with one token 17%.
 */
export function saneTolerance(tokens: number): number {
  return 0.1 + 1 / Math.sqrt(tokens);
}
