import { engine } from "./engine";
import { ValueError } from "./errors";
import { formatArg, optionsArg } from "./ops/validate";
import type { Tensor } from "./tensor";

/**
 * The leak guard: a debug mode that remembers where each live tensor was created and
 * warns once when the number of live tensors keeps growing from step to step, naming the
 * creation sites that hold the most. A step is an explicit `leakGuard.step()`, or, for code
 * that never calls it, each exit of an outermost `tidy` scope (every optimizer step runs
 * some). Turn it on with `enableLeakGuard()` or the environment variable
 * `BLOCKSPARSE_DEBUG_LEAKS=1`. Recording a stack per tensor is slow: it is for debugging.
 */

export interface LeakGuardOptions {
  /** Steps per window: the live count's minimum is taken over each window (default 20). */
  windowSteps?: number;
  /** Consecutive windows whose minimum must grow before the warning (default 5). */
  growingWindows?: number;
  /** Tensors the live count must have grown by over those windows (default 20). */
  minGrowth?: number;
  /** Creation sites named in the warning (default 5). */
  topSites?: number;
  /** Receives the report instead of console.warn. */
  onLeak?: (report: LeakReport) => void;
}

export interface LeakSite {
  /** "at file:line:column (function)" of the first frame outside core, plus the caller outside blocksparse when that differs. */
  site: string;
  /** Live tensors created there. */
  count: number;
}

export interface LeakReport {
  /** Live tensors created since the guard was enabled. */
  liveTensors: number;
  /** Growth of the windows' minimum over the growing windows. */
  growth: number;
  /** Steps seen so far. */
  steps: number;
  sites: LeakSite[];
  message: string;
}

interface GuardState {
  options: Required<Omit<LeakGuardOptions, "onLeak">> & Pick<LeakGuardOptions, "onLeak">;
  /** Creation site by tensor id (ids, not tensors: the guard must not keep leaked tensors alive). */
  sites: Map<number, string>;
  explicitSteps: boolean;
  steps: number;
  windowMin: number;
  windowSteps: number;
  /** Minimum live count of each finished window, the latest last. */
  minima: number[];
  warned: boolean;
  removeDisposeObserver: () => void;
}

let state: GuardState | null = null;

/** Frames of core itself (and of the guard) are skipped: the site is where user or layer code asked. */
const CORE_FRAME = /[\\/](?:packages[\\/]core[\\/](?:src|dist)|@blocksparse[\\/]core)[\\/]/;
const BLOCKSPARSE_FRAME = /[\\/](?:packages[\\/](?:core|autograd|nn|patcher|format)[\\/](?:src|dist)|@blocksparse[\\/][a-z-]+)[\\/]/;

/** V8's Error.stackTraceLimit (absent from the standard lib; other engines ignore it). */
const V8Error = Error as ErrorConstructor & { stackTraceLimit?: number };

function creationSite(): string {
  const previousLimit = V8Error.stackTraceLimit;
  V8Error.stackTraceLimit = 40;
  const stack = new Error().stack ?? "";
  V8Error.stackTraceLimit = previousLimit;
  const frames = stack
    .split("\n")
    .slice(1)
    .map((line) => line.trim())
    // Frames with a source location only: "at Array.map (<anonymous>)" says nothing.
    .filter((line) => line.startsWith("at ") && !line.includes("node:internal") && /:\d+:\d+\)?$/.test(line));
  const first = frames.find((frame) => !CORE_FRAME.test(frame));
  if (first === undefined) return frames[0] ?? "at <unknown>";
  if (!BLOCKSPARSE_FRAME.test(first)) return first;
  const caller = frames.find((frame) => !BLOCKSPARSE_FRAME.test(frame));
  return caller === undefined ? first : `${first}, called ${caller}`;
}

/** The creation sites holding the most live tensors (tracked since the guard was enabled). */
function topSites(sites: Map<number, string>, count: number): LeakSite[] {
  const counts = new Map<string, number>();
  for (const site of sites.values()) counts.set(site, (counts.get(site) ?? 0) + 1);
  return [...counts]
    .map(([site, n]) => ({ site, count: n }))
    .sort((a, b) => b.count - a.count)
    .slice(0, count);
}

function tick(guard: GuardState): void {
  guard.steps++;
  guard.windowMin = Math.min(guard.windowMin, guard.sites.size);
  if (++guard.windowSteps < guard.options.windowSteps) return;
  guard.minima.push(guard.windowMin);
  guard.windowMin = Number.POSITIVE_INFINITY;
  guard.windowSteps = 0;
  const needed = guard.options.growingWindows + 1;
  if (guard.minima.length > needed) guard.minima.shift();
  if (guard.warned || guard.minima.length < needed) return;
  const growing = guard.minima.every((value, i) => i === 0 || value > guard.minima[i - 1]);
  const growth = guard.minima[guard.minima.length - 1] - guard.minima[0];
  if (!growing || growth < guard.options.minGrowth) return;
  guard.warned = true;
  const sites = topSites(guard.sites, guard.options.topSites);
  const lines = sites.map(({ site, count }) => `  ${count} live tensors created ${site}`);
  const message =
    `blocksparse leak guard: live tensors grew by ${growth} over ${guard.options.growingWindows * guard.options.windowSteps} steps ` +
    `(${guard.sites.size} now live); wrap each step in tidy() or dispose() what you do not keep. Top creation sites:\n${lines.join("\n")}`;
  const report: LeakReport = { liveTensors: guard.sites.size, growth, steps: guard.steps, sites, message };
  if (guard.options.onLeak) guard.options.onLeak(report);
  else console.warn(message);
}

function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new RangeError(`enableLeakGuard: ${name} must be a positive integer, got ${value}`);
  return value;
}

/** Turns the leak guard on (again: a second call restarts it with the new options). */
export function enableLeakGuard(leakGuardOptions?: LeakGuardOptions | null): void {
  const options = optionsArg("enableLeakGuard", leakGuardOptions, ["windowSteps", "growingWindows", "minGrowth", "topSites", "onLeak"]);
  // Checked before the guard is replaced: a bad option leaves the one enabled as it was.
  const checked = {
    windowSteps: positiveInteger(options.windowSteps, 20, "windowSteps"),
    growingWindows: positiveInteger(options.growingWindows, 5, "growingWindows"),
    minGrowth: positiveInteger(options.minGrowth, 20, "minGrowth"),
    topSites: positiveInteger(options.topSites, 5, "topSites"),
    onLeak: options.onLeak,
  };
  // Called only once a leak is seen, a non-function threw "onLeak is not a function" from some tidy's exit, steps later.
  if (checked.onLeak !== undefined && typeof checked.onLeak !== "function") {
    throw new ValueError(`enableLeakGuard: onLeak must be a function, got ${formatArg(checked.onLeak)}`);
  }
  disableLeakGuard();
  const guard: GuardState = {
    options: checked,
    sites: new Map(),
    explicitSteps: false,
    steps: 0,
    windowMin: Number.POSITIVE_INFINITY,
    windowSteps: 0,
    minima: [],
    warned: false,
    // Explicit disposals and the finalizer's both report the id.
    removeDisposeObserver: engine.addDisposeObserver(({ id }) => {
      guard.sites.delete(id);
    }),
  };
  engine.debugHooks = {
    tensorCreated: (tensor: Tensor) => guard.sites.set(tensor.id, creationSite()),
    outermostScopeExited: () => {
      if (!guard.explicitSteps) tick(guard);
    },
  };
  state = guard;
}

/** Turns the leak guard off and forgets what it recorded. */
export function disableLeakGuard(): void {
  if (state === null) return;
  state.removeDisposeObserver();
  engine.debugHooks = null;
  state = null;
}

/** The leak guard's controls; all are no-ops while it is off. */
export const leakGuard = {
  /** Marks the end of a training step; once called, outermost tidy exits no longer count as steps. */
  step(): void {
    if (state === null) return;
    state.explicitSteps = true;
    tick(state);
  },
  /** Whether the guard is on. */
  get enabled(): boolean {
    return state !== null;
  },
  /** Live tensors created since the guard was enabled, by creation site, the most first. */
  sites(count = 10): LeakSite[] {
    return state === null ? [] : topSites(state.sites, count);
  },
};

const environment = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
if (environment?.BLOCKSPARSE_DEBUG_LEAKS === "1") enableLeakGuard();
