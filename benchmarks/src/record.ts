import type { Check } from "./validate";

/** Timing of one benchmark, milliseconds per call. */
export interface TimingRecord {
  medianMs: number;
  q1Ms: number;
  q3Ms: number;
  minMs: number;
  maxMs: number;
  samples: number;
  callsPerSample: number;
}

/** One validated, timed benchmark. */
export interface BenchRecord {
  suite: string;
  /** What was timed, e.g. "bsrLinear" or "dense matmul x·Wᵀ". */
  name: string;
  /** Sizes and settings: M, K, N, blockSize, density, dtype... */
  params: Record<string, number | string>;
  checks: Check[];
  timing: TimingRecord;
  /** Derived figures: gflops, speedupVsDense, mbPerSecond, bytes... */
  metrics: Record<string, number>;
}

/** A benchmark that could not be measured (its result was wrong, or it threw). */
export interface FailureRecord {
  suite: string;
  name: string;
  params: Record<string, number | string>;
  error: string;
}

export interface GpuInfo {
  name: string;
  computeCapability?: string;
  totalMemoryBytes?: number;
  /** Device memory's peak rate, bytes per second (as CUDA reports the memory clock and bus width). */
  memoryBandwidth?: number;
  cudaVersion?: string;
  cublas?: boolean;
}

export interface MachineInfo {
  /** Folder name under results/, e.g. "cpu-amd-epyc-2c" or "gpu-nvidia-h100-80gb-hbm3". */
  name: string;
  cpuModel: string;
  cpuCores: number;
  memoryBytes: number;
  platform: string;
  arch: string;
  node: string;
  gpu?: GpuInfo;
}

/** Everything one run of the pipeline produced: what the JSON file holds. */
export interface RunRecord {
  schemaVersion: 1;
  date: string;
  commit: string;
  /** Uncommitted changes in the working tree when it ran. */
  dirty: boolean;
  mode: "quick" | "default";
  backend: string;
  machine: MachineInfo;
  /** Package name -> version. */
  versions: Record<string, string>;
  /** The sizes and timing plan used, for reproducing the run. */
  settings: Record<string, unknown>;
  results: BenchRecord[];
  failures: FailureRecord[];
  durationSeconds: number;
}
