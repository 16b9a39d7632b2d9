import { tensor } from "@blocksparse/core";
import { LambdaLR, type LRSchedulerState, OneCycleLR, Parameter, ReduceLROnPlateau, SGD } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { thrown } from "./helpers";

/** An SGD with one parameter group per lr. */
function groups(...lrs: number[]): SGD {
  return new SGD(
    lrs.map((lr) => ({ params: [new Parameter(tensor([0], [1]))], lr })),
    { lr: 1 },
  );
}

/** Each group's lr at steps 0..steps-1. */
function lrsPerGroup(scheduler: LambdaLR | OneCycleLR, steps: number): number[][] {
  const out = [scheduler.optimizer.paramGroups.map((g) => g.lr)];
  for (let i = 1; i < steps; i++) {
    scheduler.step();
    out.push(scheduler.optimizer.paramGroups.map((g) => g.lr));
  }
  return out;
}

function expectClose(got: number[][], want: number[][]): void {
  expect(got).toHaveLength(want.length);
  for (const [i, row] of got.entries()) {
    for (const [j, value] of row.entries()) expect(value, `step ${i}, group ${j}`).toBeCloseTo(want[i][j], 12);
  }
}

describe("LambdaLR with one function per parameter group (torch's list of lr_lambda)", () => {
  it("group i's lr is its base lr times lrLambda[i](step); one function still applies to every group", () => {
    const scheduler = new LambdaLR(groups(1, 0.5), { lrLambda: [(e) => 0.5 ** e, (e) => e + 1] });
    expectClose(lrsPerGroup(scheduler, 3), [
      [1, 0.5],
      [0.5, 1],
      [0.25, 1.5],
    ]);
    expectClose(lrsPerGroup(new LambdaLR(groups(1, 0.5), { lrLambda: (e) => e + 1 }), 2), [
      [1, 0.5],
      [2, 1],
    ]);
  });

  it("a list of the wrong length, or an entry that is not a function, is a ValueError naming it", () => {
    expect(thrown(() => new LambdaLR(groups(1, 0.5), { lrLambda: [() => 1] }))).toEqual([
      "ValueError",
      "LambdaLR: lrLambda has 1 entry, but the optimizer has 2 parameter groups (give one, or one per group)",
    ]);
    expect(thrown(() => new LambdaLR(groups(1, 0.5), { lrLambda: [() => 1, 3 as never] }))).toEqual(["ValueError", "LambdaLR: lrLambda[1] must be a function of the step, got 3"]);
    expect(thrown(() => new LambdaLR(groups(1, 0.5), { lrLambda: [() => 1, () => Number.NaN] }))).toEqual(["ValueError", "LambdaLR: lrLambda[1](0) gave NaN, expected a finite number"]);
  });

  it("its state dict round-trips through JSON, each scheduler keeping its own functions", () => {
    const lrLambda = [(e: number) => 0.9 ** e, (e: number) => 1 / (e + 1)];
    const first = new LambdaLR(groups(1, 0.5), { lrLambda });
    for (let i = 0; i < 3; i++) first.step();
    const state = JSON.parse(JSON.stringify(first.stateDict())) as LRSchedulerState;
    expect(state.options).toEqual({});
    const resumed = new LambdaLR(groups(1, 0.5), { lrLambda });
    resumed.loadStateDict(state);
    expect(resumed.lastLrs).toEqual(first.lastLrs);
    first.step();
    resumed.step();
    expect(resumed.optimizer.paramGroups.map((g) => g.lr)).toEqual(first.optimizer.paramGroups.map((g) => g.lr));
  });
});

describe("OneCycleLR with one maxLr per parameter group (torch's list of max_lr)", () => {
  it("each group cycles from its own maxLr / divFactor up to its own maxLr", () => {
    const scheduler = new OneCycleLR(groups(0.3, 0.3), { maxLr: [1, 2], totalSteps: 10 });
    expect(scheduler.baseLrs).toEqual([1 / 25, 2 / 25]);
    const got = lrsPerGroup(scheduler, 10);
    expectClose(got.slice(0, 3), [
      [0.04, 0.08],
      [0.52, 1.04],
      [1, 2],
    ]);
    expect(got[9][0]).toBeCloseTo(4e-6, 15);
    expect(got[9][1]).toBeCloseTo(8e-6, 15);
    expect(scheduler.options.maxLr).toEqual([1, 2]);
  });

  it("a list of the wrong length, or a bad entry, is a ValueError naming it (at construction and at load)", () => {
    expect(thrown(() => new OneCycleLR(groups(1, 1), { maxLr: [1, 2, 3], totalSteps: 10 }))).toEqual([
      "ValueError",
      "OneCycleLR: maxLr has 3 entries, but the optimizer has 2 parameter groups (give one, or one per group)",
    ]);
    expect(thrown(() => new OneCycleLR(groups(1, 1), { maxLr: [1, -1], totalSteps: 10 }))).toEqual(["ValueError", "OneCycleLR: maxLr[1] must be a finite number >= 0, got -1"]);
    const scheduler = new OneCycleLR(groups(1, 1), { maxLr: [1, 2], totalSteps: 10 });
    const state = scheduler.stateDict();
    expect(thrown(() => scheduler.loadStateDict({ ...state, options: { ...state.options, maxLr: [1] } }))).toEqual([
      "ValueError",
      "OneCycleLR.loadStateDict: options.maxLr has 1 entry, but the optimizer has 2 parameter groups (give one, or one per group)",
    ]);
    expect(scheduler.options.maxLr).toEqual([1, 2]);
  });

  it("its state dict round-trips through JSON: the per-group maxLr is restored and the next steps match", () => {
    const first = new OneCycleLR(groups(1, 1), { maxLr: [1, 2], totalSteps: 10 });
    for (let i = 0; i < 4; i++) first.step();
    const state = JSON.parse(JSON.stringify(first.stateDict())) as LRSchedulerState;
    expect(state.options.maxLr).toEqual([1, 2]);
    const resumed = new OneCycleLR(groups(1, 1), { maxLr: 5, totalSteps: 10 });
    resumed.loadStateDict(state);
    expect(resumed.options.maxLr).toEqual([1, 2]);
    for (let i = 0; i < 3; i++) {
      first.step();
      resumed.step();
      expect(resumed.lastLrs).toEqual(first.lastLrs);
    }
  });
});

describe("ReduceLROnPlateau with one minLr per parameter group (torch's list of min_lr)", () => {
  /** Each group's lr after each step(metric). */
  function plateau(scheduler: ReduceLROnPlateau, metrics: number[]): number[][] {
    return metrics.map((metric) => {
      scheduler.step(metric);
      return scheduler.optimizer.paramGroups.map((g) => g.lr);
    });
  }

  it("each group's lr stops at its own minLr; one minLr still applies to every group", () => {
    const scheduler = new ReduceLROnPlateau(groups(1, 0.5), { patience: 0, factor: 0.5, minLr: [0.05, 0.2] });
    expect(plateau(scheduler, [1, 1, 1, 1, 1, 1, 1])).toEqual([
      [1, 0.5],
      [0.5, 0.25],
      [0.25, 0.2],
      [0.125, 0.2],
      [0.0625, 0.2],
      [0.05, 0.2],
      [0.05, 0.2],
    ]);
    expect(scheduler.options.minLr).toEqual([0.05, 0.2]);
    expect(plateau(new ReduceLROnPlateau(groups(1, 0.5), { patience: 0, factor: 0.5, minLr: 0.2 }), [1, 1, 1, 1])).toEqual([
      [1, 0.5],
      [0.5, 0.25],
      [0.25, 0.2],
      [0.2, 0.2],
    ]);
  });

  it("a list of the wrong length, or a bad entry, is a ValueError naming it (at construction and at load)", () => {
    expect(thrown(() => new ReduceLROnPlateau(groups(1, 1), { minLr: [0.1] }))).toEqual([
      "ValueError",
      "ReduceLROnPlateau: minLr has 1 entry, but the optimizer has 2 parameter groups (give one, or one per group)",
    ]);
    expect(thrown(() => new ReduceLROnPlateau(groups(1, 1), { minLr: [0.1, -1] }))).toEqual(["ValueError", "ReduceLROnPlateau: minLr[1] must be a finite number >= 0, got -1"]);
    const scheduler = new ReduceLROnPlateau(groups(1, 1), { minLr: [0.1, 0.2] });
    const state = scheduler.stateDict();
    expect(thrown(() => scheduler.loadStateDict({ ...state, options: { ...state.options, minLr: [0.1, 0.2, 0.3] } }))).toEqual([
      "ValueError",
      "ReduceLROnPlateau.loadStateDict: options.minLr has 3 entries, but the optimizer has 2 parameter groups (give one, or one per group)",
    ]);
    expect(scheduler.options.minLr).toEqual([0.1, 0.2]);
  });

  it("its state dict round-trips through JSON: the per-group minLr is restored and the next steps match", () => {
    const first = new ReduceLROnPlateau(groups(1, 0.5), { patience: 0, factor: 0.5, minLr: [0.05, 0.2] });
    plateau(first, [1, 1]);
    const state = JSON.parse(JSON.stringify(first.stateDict())) as LRSchedulerState;
    expect(state.options.minLr).toEqual([0.05, 0.2]);
    const resumed = new ReduceLROnPlateau(groups(1, 0.5), { patience: 0, factor: 0.5 });
    resumed.loadStateDict(state);
    expect(resumed.options.minLr).toEqual([0.05, 0.2]);
    expect(plateau(resumed, [1, 1, 1, 1])).toEqual(plateau(first, [1, 1, 1, 1]));
    expect(resumed.lastLrs).toEqual([0.05, 0.2]);
  });
});
