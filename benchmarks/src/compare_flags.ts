/** compare.ts's flags, parsed and checked before a backend starts or a case runs. */
import { checkHostMemory, checkKeepsABlock, type CliSpec, densities as densityList, FlagError, flagItems, parseFlags, positiveIntegers } from "./flags";
import { type BenchDType, TOLERANCE } from "./validate";

/** The backends compare.ts runs on: CUDA, the native cpu backend (backend-cpu's addon) or the js reference. */
export const COMPARE_BACKENDS = ["cuda", "cpu", "js"] as const;
export type CompareBackend = (typeof COMPARE_BACKENDS)[number];

export const COMPARE_CLI = {
  usage: "tsx src/compare.ts --out DIR [flags]",
  summary: "Our side of the PyTorch comparison: times our kernels and writes inputs, outputs and timings for torch_compare.py.",
  flags: {
    out: { type: "string", description: "directory for the cases' safetensors and ours.json", defaultText: "none, required" },
    backend: { type: "string", default: "cuda", description: "cuda, cpu (the native cpu backend) or js" },
    small: { type: "boolean", default: false, description: "small shapes and fewer cases (64x256x256, float32, blocks 32,64, density 0.25)" },
    shape: { type: "string", description: "the product's MxKxN", defaultText: "8192x4096x4096, 64x256x256 with --small" },
    dtypes: { type: "string", description: "comma-separated float32, float16, bfloat16", defaultText: "bfloat16,float16; float32 with --small" },
    blocks: { type: "string", description: "comma-separated block sizes", defaultText: "32,64,128; 32,64 with --small" },
    densities: { type: "string", description: "comma-separated densities in (0, 1]", defaultText: "0.5,0.25,0.1; 0.25 with --small" },
  },
} as const satisfies CliSpec;

export interface CompareOptions {
  out: string;
  backend: CompareBackend;
  small: boolean;
  shape: [number, number, number];
  dtypes: BenchDType[];
  blockSizes: number[];
  densities: number[];
}

/** "MxKxN" (tokens x in x out) -> [M, K, N]. */
function parseShape(text: string): [number, number, number] {
  const match = /^(\d+)x(\d+)x(\d+)$/.exec(text);
  if (!match) throw new FlagError(`--shape: expected MxKxN (tokens x in x out), e.g. 2048x1024x4096, got "${text}"`);
  const dims = [Number(match[1]), Number(match[2]), Number(match[3])] as [number, number, number];
  if (dims.some((d) => d < 1)) throw new FlagError(`--shape: every dim must be positive, got "${text}"`);
  // x [M, K], dy [M, N] and the dense weight [N, K] are held on the host in float32 whatever the backend: a shape past
  // the machine's memory, or past 2^53 elements, failed inside randn with a stack trace that named no flag.
  const [M, K, N] = dims;
  checkHostMemory(`--shape: ${text}`, "x, dy and the dense weight in float32", M * K + M * N + N * K, 4, "use a smaller --shape");
  return dims;
}

function parseDtypes(text: string): BenchDType[] {
  const items = flagItems(text, "dtypes");
  for (const item of items) {
    if (!Object.hasOwn(TOLERANCE, item)) throw new FlagError(`--dtypes: unknown "${item}", expected float32, float16 or bfloat16`);
  }
  return items as BenchDType[];
}

/** The checked options of `args` (FlagError naming the flag for a bad one). */
export function parseCompareFlags(args: string[] = process.argv.slice(2)): CompareOptions {
  const { values } = parseFlags(COMPARE_CLI, args);
  if (!values.out) throw new FlagError("--out DIR is required");
  const backend = values.backend as CompareBackend;
  if (!COMPARE_BACKENDS.includes(backend)) throw new FlagError(`--backend: expected ${COMPARE_BACKENDS.join(", ")}, got "${values.backend}"`);
  const shape = values.shape !== undefined ? parseShape(values.shape) : values.small ? ([64, 256, 256] as [number, number, number]) : ([8192, 4096, 4096] as [number, number, number]);
  const [, K, N] = shape;
  const dtypes = values.dtypes !== undefined ? parseDtypes(values.dtypes) : values.small ? ["float32" as const] : (["bfloat16", "float16"] as BenchDType[]);
  const blockSizes = values.blocks !== undefined ? positiveIntegers(values.blocks, "blocks") : values.small ? [32, 64] : [32, 64, 128];
  const densities = values.densities !== undefined ? densityList(values.densities, "densities") : values.small ? [0.25] : [0.5, 0.25, 0.1];
  for (const block of blockSizes) {
    if (K % block !== 0 || N % block !== 0) throw new FlagError(`--blocks: ${block} does not divide K=${K} and N=${N}`);
    for (const density of densities) checkKeepsABlock(density, N / block, K / block, `${block}x${block}`, `the ${N}x${K} weight`);
  }
  return { out: values.out, backend, small: values.small, shape, dtypes, blockSizes, densities };
}
