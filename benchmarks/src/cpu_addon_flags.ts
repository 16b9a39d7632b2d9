/** cpu_addon.ts's flags, parsed and checked before the addon is called. */
import { type CliSpec, FlagError, parseFlags, positiveInteger } from "./flags";

/** The products' shapes [M, K, N] and the decoding batches cpu_addon.ts times. */
export const PRODUCT_SHAPES = [[256, 1024, 1024], [2048, 1024, 4096]] as const;
export const DECODE_BATCHES = [1, 4, 8] as const;

/** Each product's name as cpu_addon.ts prints it, the text --only is matched against. */
export function productName(product: "dense" | "bsrLinear" | "bsrMatmul" | "sampledMatmul", [M, K, N]: readonly number[]): string {
  return `${product === "dense" ? "dense" : `${product} b32 d0.25`} ${M}x${K}x${N}`;
}
export function decodeName(product: "dense" | "bsrLinear", batch: number): string {
  return product === "dense" ? `decode dense x·Wᵀ batch ${batch}` : `decode bsrLinear d0.25 batch ${batch}`;
}

/** Every name cpu_addon.ts prints, in order. */
export function productNames(): string[] {
  const products = ["dense", "bsrLinear", "bsrMatmul", "sampledMatmul"] as const;
  return [...PRODUCT_SHAPES.flatMap((shape) => products.map((p) => productName(p, shape))), ...DECODE_BATCHES.flatMap((batch) => [decodeName("dense", batch), decodeName("bsrLinear", batch)])];
}

export const CPU_ADDON_CLI = {
  usage: "tsx src/cpu_addon.ts [flags]",
  summary: "The cpu addon's products called directly on preallocated arrays: the kernels' own speed, best of N calls.",
  flags: {
    repeats: { type: "string", default: "9", description: "calls per product (the best is kept)" },
    threads: { type: "string", description: "threads of the cpu backend", defaultText: "the backend's default (defaultCpuThreads)" },
    only: { type: "string", description: "run only the products whose name contains this text", defaultText: "all" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one). */
export function parseCpuAddonFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(CPU_ADDON_CLI, args);
  // Checked here: Number("abc") made zero calls and reported Infinity ms and 0 GFLOP/s.
  const threadCount = values.threads === undefined ? undefined : positiveInteger(values.threads, "threads");
  // Matched against the names printed: one that matched none timed nothing and printed a header alone, exit 0.
  if (values.only !== undefined && !productNames().some((name) => name.includes(values.only as string))) {
    throw new FlagError(`--only: "${values.only}" is in no product's name; the names are: ${productNames().join("; ")}`);
  }
  return [values, positiveInteger(values.repeats, "repeats"), threadCount] as const;
}
