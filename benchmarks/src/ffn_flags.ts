/** ffn.ts's flags, parsed and checked before a backend starts or a case runs. */
import { join } from "node:path";
import { BACKEND_FLAG, checkHostMemory, checkKeepsABlock, checkPythonImports, type CliSpec, densities as densityList, DTYPE_FLAG, FlagError, flagItems, outputDirectory, parseFlags, positiveInteger, positiveIntegers } from "./flags";
import { repoRoot } from "./machine";
import { type BenchDType, TOLERANCE } from "./validate";

export type ModelKind = "ffn" | "block" | "head";

/** `pairs` parsed from `items`, none repeated: "32" and "32x32" (or "064x128" and "64x128") name one case, timed twice. */
function distinctPairs(pairs: [number, number][], items: string[], flag: string): [number, number][] {
  const seen = new Map<string, string>();
  pairs.forEach((pair, i) => {
    const key = pair.join("x");
    const earlier = seen.get(key);
    if (earlier !== undefined) throw new FlagError(`--${flag}: "${items[i]}" repeats "${earlier}" (both are ${key}) in "${items.join(",")}"; give each once`);
    seen.set(key, items[i]);
  });
  return pairs;
}

/** "16,32x64" -> [[16, 16], [32, 64]]: square sides or R x C block shapes. */
function blockShapes(value: string): [number, number][] {
  const items = flagItems(value, "blocks");
  return distinctPairs(items.map((item) => {
    const match = /^(\d+)(?:x(\d+))?$/.exec(item);
    if (!match || Number(match[1]) <= 0 || (match[2] !== undefined && Number(match[2]) <= 0))
      throw new FlagError(`--blocks: "${item}" is not a block side (32) or shape (32x64)`);
    const rows = Number(match[1]);
    return [rows, match[2] === undefined ? rows : Number(match[2])] as [number, number];
  }), items, "blocks");
}

/** "1024x4096" -> [dModel, hidden]. */
function widths(value: string): [number, number][] {
  const items = flagItems(value, "widths");
  return distinctPairs(items.map((item) => {
    const match = /^(\d+)x(\d+)$/.exec(item);
    if (!match || Number(match[1]) <= 0 || Number(match[2]) <= 0) throw new FlagError(`--widths: "${item}" is not DMODELxHIDDEN of positive integers (e.g. 1024x4096)`);
    return [Number(match[1]), Number(match[2])] as [number, number];
  }), items, "widths");
}

export const FFN_CLI = {
  usage: "tsx src/ffn.ts [flags]",
  summary: "The training step a user writes (FFN, TransformerBlock or output head; forward, backward, AdamW), dense and block-sparse.",
  flags: {
    backend: BACKEND_FLAG,
    models: { type: "string", default: "ffn,block", description: "comma-separated models: ffn, block, head" },
    widths: { type: "string", default: "1024x4096,4096x4096", description: "comma-separated DMODELxHIDDEN pairs" },
    tokens: { type: "string", default: "2048,8192,16384", description: "comma-separated tokens per step" },
    blocks: { type: "string", default: "32,64,128", description: "comma-separated block shapes (32, or RxC such as 32x64)" },
    densities: { type: "string", default: "0.5,0.25,0.1", description: "comma-separated densities in (0, 1]" },
    dtype: DTYPE_FLAG,
    context: { type: "string", default: "512", description: "sequence length of the block model's attention" },
    heads: { type: "string", default: "16", description: "attention heads of the block model" },
    torch: { type: "boolean", default: false, description: "also time PyTorch's dense step (python/ffn_torch.py)" },
    profile: { type: "boolean", default: false, description: "print where each case's step time goes, kernel by kernel" },
    quick: { type: "boolean", default: false, description: "fewer timed steps" },
    "dense-sampled": { type: "string", default: "auto", description: "the weight gradient's route on cuda: auto, never or always cuBLAS's dense product" },
    "dense-products": { type: "string", default: "auto", description: "bsrLinear and bsrMatmul's route on cuda: auto, never or always cuBLAS over a dense scratch" },
    autotune: { type: "boolean", default: false, description: "turn on the cuda backend's first-use autotuning of the block-sparse products" },
    only: { type: "string", default: "both", description: "both, dense or sparse: which models to run" },
    graph: { type: "boolean", default: false, description: "capture each whole step once and time its replays" },
    "graph-eager-optimizer": { type: "boolean", default: false, description: "with --graph, capture forward and backward only; AdamW runs eagerly" },
    out: { type: "string", description: "directory for ffn.md, ffn.json and charts", defaultText: "benchmarks/results/tmp/ffn" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one), before a backend starts; makes the output directory. */
export function parseFfnFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(FFN_CLI, args);
  if (values["graph-eager-optimizer"] && !values.graph) throw new FlagError("--graph-eager-optimizer: only with --graph (it chooses what the captured step holds)");
  if (values.graph && values.profile) throw new FlagError("--graph and --profile: a replay runs no kernel through the host, so there is nothing to profile per kernel");
  const dtype = values.dtype as BenchDType;
  if (!Object.hasOwn(TOLERANCE, dtype)) throw new FlagError(`--dtype: expected float32, float16 or bfloat16, got "${values.dtype}"`);
  const models = flagItems(values.models, "models") as ModelKind[];
  for (const m of models) if (m !== "ffn" && m !== "block" && m !== "head") throw new FlagError(`--models: unknown "${m}" (ffn, block, head)`);
  const context = positiveInteger(values.context, "context");
  const heads = positiveInteger(values.heads, "heads");
  // Every list checked before the backend starts, not when the loop first reaches it.
  const widthPairs = widths(values.widths);
  const tokenCounts = positiveIntegers(values.tokens, "tokens");
  const shapes = blockShapes(values.blocks);
  const densities = densityList(values.densities, "densities");
  const only = values.only;
  if (only !== "both" && only !== "dense" && only !== "sparse") throw new FlagError(`--only: expected both, dense or sparse, got "${only}"`);
  // The routes' names are checked here; whether the backend has the routes, once it has started.
  const [denseSampled, denseProducts] = (["dense-sampled", "dense-products"] as const).map((flag) => {
    const route = values[flag];
    if (route !== "auto" && route !== "never" && route !== "always") throw new FlagError(`--${flag}: expected auto, never or always, got "${route}"`);
    return route;
  });
  if (models.includes("block")) {
    for (const tokens of tokenCounts) if (tokens % context !== 0) throw new FlagError(`--tokens ${tokens} is not a multiple of --context ${context}`);
    for (const [dModel] of widthPairs) if (dModel % heads !== 0) throw new FlagError(`--heads ${heads} does not divide the block model's dModel ${dModel} (--widths)`);
  }
  // A block shape that does not tile a layer would otherwise fail only after the dense step before it was timed.
  if (only !== "dense") {
    for (const model of models) {
      for (const [dModel, hidden] of widthPairs) {
        // [outFeatures, inFeatures] of each block-sparse weight: the head's one, the FFN's (and the block's MLP's) two.
        const weights = model === "head" ? [[hidden, dModel]] : [[hidden, dModel], [dModel, hidden]];
        for (const [rows, cols] of shapes) {
          const misfit = weights.find(([out, inFeatures]) => out % rows !== 0 || inFeatures % cols !== 0);
          if (misfit !== undefined) {
            throw new FlagError(`--blocks: ${rows}x${cols} blocks do not tile the ${model} model's ${misfit[0]}x${misfit[1]} weight (--widths ${dModel}x${hidden}); its rows must be a multiple of ${rows} and its columns of ${cols}`);
          }
          for (const [out, inFeatures] of weights) {
            for (const density of densities) checkKeepsABlock(density, out / rows, inFeatures / cols, `${rows}x${cols}`, `the ${model} model's ${out}x${inFeatures} weight (--widths ${dModel}x${hidden})`);
          }
        }
      }
    }
  }
  // Each case's input and hidden activations at the dtype's size, and its weights (at the least density when only the
  // sparse model runs) in float32, as the layers draw them on the host before the cast (counted at the dtype's size,
  // bfloat16 widths that fitted failed inside randn with an out-of-memory stack): a lower bound of what the step holds
  // on the host, where every backend's inputs are drawn.
  const bytes = dtype === "float32" ? 4 : 2;
  const kept = only === "sparse" ? Math.min(...densities) : 1;
  for (const model of models) {
    for (const [dModel, hidden] of widthPairs) {
      for (const tokens of tokenCounts) {
        const total = bytes * tokens * (dModel + hidden) + 4 * Math.ceil((model === "head" ? 1 : 2) * kept * dModel * hidden);
        const what = dtype === "float32" ? "input, activations and weights in float32" : `input and activations in ${dtype} and weights in float32`;
        checkHostMemory(`--widths ${dModel}x${hidden} and --tokens ${tokens}`, `the ${model} model's ${what}`, total, 1, "use smaller --widths or --tokens");
      }
    }
  }
  if (values.torch) checkPythonImports("torch", ["torch"]);
  const outDir = outputDirectory(values.out ?? join(repoRoot, "benchmarks", "results", "tmp", "ffn"));
  return { values, dtype, models, context, heads, widthPairs, tokenCounts, shapes, densities, only, denseSampled, denseProducts, outDir };
}
