/** overhead.ts's flag table, importable without running it. */
import { BACKEND_FLAG, type CliSpec, DTYPE_FLAG } from "./flags";

/** Its flags: one table that parseFlags parses with and prints as --help. */
export const OVERHEAD_CLI = {
  usage: "tsx src/overhead.ts [flags]",
  summary: "Host time per op on tiny tensors, and the backend's start and first calls, measured in a fresh process.",
  flags: {
    backend: BACKEND_FLAG,
    dtype: DTYPE_FLAG,
    out: { type: "string", description: "directory for overhead-BACKEND.md and .json", defaultText: "benchmarks/results/tmp/overhead" },
    child: { type: "boolean", default: false, description: "internal: the fresh process that measures start-up and first calls" },
    torch: { type: "boolean", default: false, description: "also time PyTorch on the same tiny tensors (python/overhead_torch.py)" },
  },
} as const satisfies CliSpec;
