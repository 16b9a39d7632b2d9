/**
 * Process-wide settings of the native CPU kernels: the thread count (BLOCKSPARSE_CPU_THREADS, default
 * the cores this process may use) and the micro-kernel's instruction set (BLOCKSPARSE_CPU_ISA, default
 * the fastest this CPU runs).
 */
import { availableParallelism } from "node:os";
import { BackendError, ValueError } from "@blocksparse/core";
import { loadAddon } from "./loader";
import type { NativeAddon, NativeIsa } from "./native";

const ISAS: readonly NativeIsa[] = ["avx512", "avx2", "scalar"];

/** The most threads the pool runs on. */
const MAX_THREADS = 4096;

function addon(): NativeAddon {
  const load = loadAddon();
  if (load.addon === null) throw new BackendError(`cpu: ${load.reason}`);
  return load.addon;
}

/** The thread count BLOCKSPARSE_CPU_THREADS asks for, else the cores available to this process (at most the pool's 4096). */
export function defaultCpuThreads(): number {
  const text = process.env.BLOCKSPARSE_CPU_THREADS;
  if (text === undefined || text === "") return Math.min(availableParallelism(), MAX_THREADS);
  // Decimal digits only: Number() would read "0x10" as 16, "1e3" as 1000 and "0b11" as 3.
  const n = /^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) throw new ValueError(`BLOCKSPARSE_CPU_THREADS must be an integer in [1, ${MAX_THREADS}], got '${text}'`);
  return n;
}

/**
 * Sets the threads the native kernels run on (the calling thread included); no argument restores the default. Returns
 * the count in use. When the system refuses some of the threads (a limit on processes or memory), the previous count is
 * restored and a BackendError says how many started.
 */
export function setCpuThreads(threads: number = defaultCpuThreads()): number {
  if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new ValueError(`setCpuThreads: threads must be an integer in [1, ${MAX_THREADS}], got ${threads}`);
  }
  const previous = cpuThreads();
  const started = addon().setThreads(threads);
  if (started === threads) return started;
  const restored = addon().setThreads(previous);
  throw new BackendError(
    `setCpuThreads: the system started only ${started} of the ${threads} threads asked for (a limit on processes or memory); the kernels run on ${restored} threads`,
  );
}

/** The threads the native kernels run on. */
export function cpuThreads(): number {
  return addon().buildInfo().threads;
}

/** The micro-kernel's instruction set in use. */
export function cpuIsa(): NativeIsa {
  return addon().buildInfo().isa;
}

/** Picks the micro-kernel ("avx512", "avx2", "scalar"); throws ValueError for one this CPU cannot run. */
export function setCpuIsa(isa: NativeIsa): void {
  if (!ISAS.includes(isa)) throw new ValueError(`setCpuIsa: isa must be one of ${ISAS.join(", ")}, got '${String(isa)}'`);
  if (!addon().setIsa(isa)) throw new ValueError(`setCpuIsa: this CPU cannot run '${isa}' (still using '${cpuIsa()}')`);
}

/**
 * Applies BLOCKSPARSE_CPU_THREADS (else the cores available) and BLOCKSPARSE_CPU_ISA (when set), each only where `apply`
 * says; throws a ValueError naming the variable on a bad value.
 */
export function applyEnvironmentSettings(apply: { threads: boolean; isa: boolean } = { threads: true, isa: true }): void {
  if (apply.threads) setCpuThreads(defaultCpuThreads());
  if (!apply.isa) return;
  const isa = process.env.BLOCKSPARSE_CPU_ISA;
  // Unset: the fastest this CPU runs, settled now, so a backend starting later (another worker) reads no variable again.
  if (isa === undefined || isa === "") {
    addon().setIsa(cpuIsa());
    return;
  }
  if (!ISAS.includes(isa as NativeIsa)) throw new ValueError(`BLOCKSPARSE_CPU_ISA must be one of ${ISAS.join(", ")}, got '${isa}'`);
  if (!addon().setIsa(isa as NativeIsa)) throw new ValueError(`BLOCKSPARSE_CPU_ISA is '${isa}', which this CPU cannot run (it runs '${cpuIsa()}'); unset it or pick another`);
}
