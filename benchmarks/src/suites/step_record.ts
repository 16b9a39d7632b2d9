import { type Measurement, timingRecord } from "../measure";
import type { BenchRecord } from "../record";

/** Memory of one training step: what it keeps (weights, optimizer state) and what is alive when it ends. */
export interface StepBytes {
  weightBytes: number;
  optimizerBytes: number;
  stateBytes: number;
  stepEndBytes: number;
}

/**
 * Records of one group of training steps: the dense step is measured first, and every sparse
 * step after it gets its speed-up and state size relative to that dense step.
 */
export class StepRecords {
  private denseMs: number | undefined;
  private denseStateBytes: number | undefined;

  record(name: string, params: BenchRecord["params"], measured: Measurement, isDense: boolean, bytes: StepBytes): BenchRecord {
    const median = measured.summary.median;
    const metrics: Record<string, number> = { ...bytes };
    if (isDense) {
      this.denseMs = median;
      this.denseStateBytes = bytes.stateBytes;
    } else {
      if (this.denseMs !== undefined) metrics.speedupVsDense = this.denseMs / median;
      if (this.denseStateBytes !== undefined) metrics.stateVsDense = bytes.stateBytes / this.denseStateBytes;
    }
    return { suite: "train", name, params, checks: measured.checks, timing: timingRecord(measured), metrics };
  }
}
