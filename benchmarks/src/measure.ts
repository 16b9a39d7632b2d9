import type { TimingRecord } from "./record";
import { type Summary, summarize } from "./stats";
import type { Check } from "./validate";

/** How long and how often to time one benchmark. */
export interface TimingPlan {
  /** Untimed calls after validation (compilation, caches, allocator warm-up). */
  warmup: number;
  /** Samples taken at least, whatever the budget. */
  minRepeats: number;
  /** Samples taken at most. */
  maxRepeats: number;
  /** Stop adding samples past minRepeats once this much time went into them. */
  budgetMs: number;
  /** A sample repeats the call until it lasts this long, so that short calls are not clock noise. */
  minSampleMs: number;
}

export interface BenchmarkSpec<T> {
  name: string;
  /** One call of the work being timed. */
  run: () => T;
  /** Checks one result against the reference; every check must pass before anything is timed. */
  validate: (result: T) => Check[];
  /** Frees a result (tensors on a device). */
  dispose?: (result: T) => void;
  /** Waits for queued device work; called before every clock read that ends a sample. */
  synchronize?: () => void;
  /** Turns poisoned allocations on for the validated call and off after, so unwritten outputs fail. */
  setPoison?: (enabled: boolean) => void;
}

export interface Measurement {
  checks: Check[];
  /** Milliseconds per call, one entry per sample. */
  samplesMs: number[];
  /** Calls averaged into each sample. */
  callsPerSample: number;
  summary: Summary;
}

/** The timing part of a benchmark's record. */
export function timingRecord(measured: Measurement): TimingRecord {
  const s = measured.summary;
  return { medianMs: s.median, q1Ms: s.q1, q3Ms: s.q3, minMs: s.min, maxMs: s.max, samples: s.count, callsPerSample: measured.callsPerSample };
}

/** A benchmark whose result did not match its reference: it was not timed. */
export class ValidationError extends Error {
  readonly benchmark: string;
  readonly failed: Check[];
  constructor(benchmark: string, failed: Check[]) {
    super(`${benchmark}: result does not match the reference, not timed: ${failed.map((c) => `${c.what}: ${c.detail ?? "failed"}`).join("; ")}`);
    this.name = "ValidationError";
    this.benchmark = benchmark;
    this.failed = failed;
  }
}

const MAX_CALLS_PER_SAMPLE = 10_000;

/**
 * Validates one call's result, then times: warm-up, a calibration call that sets how many
 * calls make a sample, then samples until the plan's repeats and budget are met.
 * Throws ValidationError (timing nothing) when a check fails.
 */
export function measure<T>(spec: BenchmarkSpec<T>, plan: TimingPlan): Measurement {
  const { run, dispose = () => {}, synchronize = () => {} } = spec;
  spec.setPoison?.(true);
  let checks: Check[];
  try {
    const result = run();
    synchronize();
    try {
      checks = spec.validate(result);
    } finally {
      dispose(result);
    }
  } finally {
    spec.setPoison?.(false);
  }
  const failed = checks.filter((check) => !check.ok);
  if (failed.length > 0 || checks.length === 0) {
    throw new ValidationError(spec.name, failed.length > 0 ? failed : [{ what: "checks", relError: Number.NaN, tolerance: 0, ok: false, detail: "no check was made" }]);
  }

  const timeCalls = (calls: number): number => {
    const start = performance.now();
    for (let i = 0; i < calls; i++) dispose(run());
    synchronize();
    return (performance.now() - start) / calls;
  };
  for (let i = 0; i < plan.warmup; i++) timeCalls(1);
  const single = timeCalls(1);
  const callsPerSample = Math.min(MAX_CALLS_PER_SAMPLE, Math.max(1, Math.ceil(plan.minSampleMs / Math.max(single, 1e-6))));
  const samplesMs: number[] = [];
  let spentMs = 0;
  while (samplesMs.length < plan.minRepeats || (samplesMs.length < plan.maxRepeats && spentMs < plan.budgetMs)) {
    const sample = timeCalls(callsPerSample);
    samplesMs.push(sample);
    spentMs += sample * callsPerSample;
  }
  return { checks, samplesMs, callsPerSample, summary: summarize(samplesMs) };
}
