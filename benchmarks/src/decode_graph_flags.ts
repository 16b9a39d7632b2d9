/** decode_graph.ts's flags, parsed and checked before a backend starts or a case runs. */
import { join } from "node:path";
import type { FloatDType } from "@blocksparse/core";
import { BACKEND_FLAG, checkKeepsABlock, type CliSpec, densities as densityList, DTYPE_FLAG, FlagError, outputDirectory, parseFlags, positiveInteger, positiveIntegers } from "./flags";
import { repoRoot } from "./machine";

export const DECODE_GRAPH_CLI = {
  usage: "tsx src/decode_graph.ts [flags]",
  summary: "Decoding through a stack of layers, eager and as one captured replay: microseconds per layer.",
  flags: {
    backend: BACKEND_FLAG,
    model: { type: "string", default: "linear", description: "linear (width x width layers) or ffn (pre-norm feed-forward blocks)" },
    width: { type: "string", default: "4096", description: "the layers' width" },
    hidden: { type: "string", default: "16384", description: "the ffn blocks' hidden width (--model ffn)" },
    layers: { type: "string", default: "16", description: "layers (or ffn blocks) in the stack" },
    tokens: { type: "string", default: "1,8", description: "comma-separated tokens per step" },
    blocks: { type: "string", default: "32,64", description: "comma-separated block sizes" },
    densities: { type: "string", default: "0.25,0.1", description: "comma-separated densities in (0, 1]" },
    dtype: DTYPE_FLAG,
    iterations: { type: "string", default: "200", description: "timed calls per case" },
    torch: { type: "boolean", default: false, description: "also time PyTorch's dense stack (python/decode_torch.py)" },
    out: { type: "string", description: "directory for decode-graph.md and .json", defaultText: "benchmarks/results/tmp/decode-graph" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one), before a backend starts; makes the output directory. */
export function parseDecodeGraphFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(DECODE_GRAPH_CLI, args);
  const dtype = values.dtype as FloatDType;
  if (!["float32", "float16", "bfloat16"].includes(dtype)) throw new FlagError(`--dtype: expected float32, float16 or bfloat16, got "${values.dtype}"`);
  const model = values.model;
  if (model !== "linear" && model !== "ffn") throw new FlagError(`--model: expected linear or ffn, got "${model}"`);
  const width = positiveInteger(values.width, "width");
  const hidden = positiveInteger(values.hidden, "hidden");
  const layerCount = positiveInteger(values.layers, "layers");
  const iterations = positiveInteger(values.iterations, "iterations");
  // Checked here, not when the loop reaches them after the backend started: a block that does not tile the layers
  // failed in BlockSparseLinear's constructor with its stack, after the dense case was timed.
  const tokenCounts = positiveIntegers(values.tokens, "tokens");
  const blocks = positiveIntegers(values.blocks, "blocks");
  const densities = densityList(values.densities, "densities");
  // [outFeatures, inFeatures] of each block-sparse weight: width x width, or the ffn block's two.
  const weights = model === "linear" ? [[width, width]] : [[hidden, width], [width, hidden]];
  for (const block of blocks) {
    const misfit = weights.find((dims) => dims.some((d) => d % block !== 0));
    if (misfit !== undefined) {
      throw new FlagError(`--blocks: ${block} does not divide the ${model} layers' ${misfit[0]}x${misfit[1]} weight (--width ${width}${model === "ffn" ? `, --hidden ${hidden}` : ""})`);
    }
    for (const [rows, cols] of weights) {
      for (const density of densities) checkKeepsABlock(density, rows / block, cols / block, `${block}x${block}`, `the ${model} layers' ${rows}x${cols} weight`);
    }
  }
  const outDir = outputDirectory(values.out ?? join(repoRoot, "benchmarks", "results", "tmp", "decode-graph"));
  return { values, dtype, model, width, hidden, layerCount, iterations, tokenCounts, blocks, densities, outDir };
}
