/** attention.ts's flags, parsed and checked before a backend starts or a case runs. */
import { join } from "node:path";
import type { FloatDType } from "@blocksparse/core";
import { BACKEND_FLAG, checkHostMemory, type CliSpec, DTYPE_FLAG, FlagError, flagItems, outputDirectory, parseFlags, positiveInteger } from "./flags";
import { repoRoot } from "./machine";

export interface Shape {
  batch: number;
  heads: number;
  length: number;
  headDim: number;
}

export const ATTENTION_CLI = {
  usage: "tsx src/attention.ts [flags]",
  summary: "Attention alone, forward and forward + backward: the fused kernels beside the unfused composition.",
  flags: {
    backend: BACKEND_FLAG,
    shapes: { type: "string", default: "16x16x512x64,4x16x2048x64,4x8x1024x128", description: "comma-separated batch x heads x length x headDim" },
    causal: { type: "string", default: "true", description: "causal masking: true or false" },
    dtype: DTYPE_FLAG,
    iterations: { type: "string", default: "50", description: "timed calls per case" },
    paths: { type: "string", default: "fused,unfused", description: "which of fused, unfused to time" },
    torch: { type: "boolean", default: false, description: "also time PyTorch's F.scaled_dot_product_attention (python/attention_torch.py)" },
    out: { type: "string", description: "directory for attention.md and attention.json", defaultText: "benchmarks/results/tmp/attention" },
  },
} as const satisfies CliSpec;

function parseShapes(value: string): Shape[] {
  // flagItems: a shape or path listed twice was timed twice and printed as two rows.
  const seen = new Map<string, string>();
  return flagItems(value, "shapes").map((item) => {
    // Decimal digits only: Number() read "1e1" as 10 and " 16" as 16.
    const dims = /^\d+x\d+x\d+x\d+$/.test(item) ? item.split("x").map(Number) : [];
    if (dims.length !== 4 || dims.some((d) => !Number.isSafeInteger(d) || d <= 0)) {
      throw new FlagError(`--shapes: "${item}" is not batch x heads x length x headDim (positive integers)`);
    }
    // "1x1x16x16" and "01x1x16x16" name one case, which was timed twice.
    const key = dims.join("x");
    const earlier = seen.get(key);
    if (earlier !== undefined) throw new FlagError(`--shapes: "${item}" repeats "${earlier}" (both are ${key}) in "${value}"; give each once`);
    seen.set(key, item);
    const [batch, heads, length, headDim] = dims;
    return { batch, heads, length, headDim };
  });
}

/** The checked settings of `args` (FlagError naming the flag for a bad one); makes the --out directory. */
export function parseAttentionFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(ATTENTION_CLI, args);
  if (values.causal !== "true" && values.causal !== "false") throw new FlagError(`--causal: expected true or false, got "${values.causal}"`);
  const causal = values.causal === "true";
  const dtype = values.dtype as FloatDType;
  if (!["float32", "float16", "bfloat16"].includes(dtype)) throw new FlagError(`--dtype: expected float32, float16 or bfloat16, got "${values.dtype}"`);
  const iterations = positiveInteger(values.iterations, "iterations");
  const shapes = parseShapes(values.shapes);
  const paths = flagItems(values.paths, "paths").map((p) => {
    if (p !== "fused" && p !== "unfused") throw new FlagError(`--paths: "${p}" is not fused or unfused`);
    return p;
  });
  // q, k, v and the output, and the unfused path's scores [batch, heads, length, length], at the dtype's size.
  for (const { batch, heads, length, headDim } of shapes) {
    const scores = paths.includes("unfused") ? batch * heads * length * length : 0;
    checkHostMemory(`--shapes ${batch}x${heads}x${length}x${headDim}`, `q, k, v and the output${scores > 0 ? " and the unfused scores" : ""} in ${dtype}`, 4 * batch * heads * length * headDim + scores, dtype === "float32" ? 4 : 2, "use smaller --shapes");
  }
  const outDir = outputDirectory(values.out ?? join(repoRoot, "benchmarks", "results", "tmp", "attention"));
  return { backend: values.backend, causal, dtype, iterations, shapes, paths, torch: values.torch, outDir };
}
