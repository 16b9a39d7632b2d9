import type { TimingPlan } from "../measure";
import type { BenchRecord } from "../record";
import type { BenchDType } from "../validate";

/** What every suite is given: where it runs, how big and how long. */
export interface SuiteConfig {
  backend: string;
  quick: boolean;
  /** Sizes for a GPU (the M=8192/512, K=N=4096) rather than for a CPU. */
  large: boolean;
  dtypes: BenchDType[];
  plan: TimingPlan;
  /** Waits for queued device work (a no-op on the js backend). */
  synchronize: () => void;
  /** Turns the backend's poisoned allocations on or off. */
  setPoison: (enabled: boolean) => void;
}

/** One benchmark, planned ahead so that progress knows the total. */
export interface BenchCase {
  suite: string;
  name: string;
  params: Record<string, number | string>;
  /** Validates, then times; returns the record (or throws, and the case is a failure). */
  execute: () => BenchRecord;
}

/** A group of cases that share inputs; `dispose` frees them after the last case ran. */
export interface CaseGroup {
  cases: BenchCase[];
  dispose?: () => void;
}

export interface Suite {
  name: string;
  description: string;
  /** The case groups for this configuration; inputs are created lazily, per group. */
  plan: (config: SuiteConfig) => CaseGroup[];
}
