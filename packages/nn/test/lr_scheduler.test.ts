import { type DType, tensor } from "@blocksparse/core";
import {
  ConstantLR,
  CosineAnnealingLR,
  CosineAnnealingWarmRestarts,
  ExponentialLR,
  LambdaLR,
  LinearLR,
  type LRScheduler,
  type LRSchedulerState,
  MultiStepLR,
  OneCycleLR,
  Parameter,
  PolynomialLR,
  ReduceLROnPlateau,
  SequentialLR,
  SGD,
  StepLR,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, thrown } from "./helpers";

function sgd(lr = 1): SGD {
  return new SGD([new Parameter(tensor([0], [1]))], { lr });
}

/** The lr at steps 0..steps-1: the constructor's, then one per step(). */
function lrs(scheduler: LRScheduler, steps: number): number[] {
  const out = [scheduler.optimizer.lr];
  for (let i = 1; i < steps; i++) {
    scheduler.step();
    out.push(scheduler.optimizer.lr);
    expect(scheduler.getLastLr()).toBe(scheduler.optimizer.lr);
    expect(scheduler.lastEpoch).toBe(i);
  }
  return out;
}

function expectClose(got: number[], want: number[], digits = 12): void {
  expect(got).toHaveLength(want.length);
  for (const [i, g] of got.entries()) expect(g, `step ${i}`).toBeCloseTo(want[i], digits);
}

describe("schedules match torch's values", () => {
  it("StepLR decays by gamma every stepSize steps, and sets step 0's lr on construction", () => {
    const optimizer = sgd(0.5);
    const scheduler = new StepLR(optimizer, { stepSize: 3, gamma: 0.1 });
    expect(scheduler.lastEpoch).toBe(0);
    expect(scheduler.baseLr).toBe(0.5);
    expectClose(lrs(scheduler, 8), [0.5, 0.5, 0.5, 0.05, 0.05, 0.05, 0.005, 0.005]);
  });

  it("MultiStepLR sorts its milestones and decays twice at one given twice (torch's Counter)", () => {
    expectClose(lrs(new MultiStepLR(sgd(), { milestones: [5, 2, 5] }), 7), [1, 1, 0.1, 0.1, 0.1, 0.001, 0.001]);
  });

  it("ExponentialLR, ConstantLR and LinearLR (torch's defaults: factor 1/3, 5 steps)", () => {
    expectClose(lrs(new ExponentialLR(sgd(), { gamma: 0.5 }), 4), [1, 0.5, 0.25, 0.125]);
    expectClose(lrs(new ConstantLR(sgd(0.3)), 7), [0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3]);
    expectClose(lrs(new LinearLR(sgd(0.3)), 7), [0.1, 0.14, 0.18, 0.22, 0.26, 0.3, 0.3]);
    expectClose(lrs(new LinearLR(sgd(1), { startFactor: 1, endFactor: 0, totalIters: 4 }), 6), [1, 0.75, 0.5, 0.25, 0, 0]);
  });

  it("PolynomialLR", () => {
    expectClose(lrs(new PolynomialLR(sgd(), { totalIters: 4, power: 2 }), 6), [1, 0.5625, 0.25, 0.0625, 0, 0]);
  });

  it("LambdaLR multiplies the base lr by lrLambda(step)", () => {
    expectClose(lrs(new LambdaLR(sgd(2), { lrLambda: (e) => 1 / (e + 1) }), 4), [2, 1, 2 / 3, 0.5]);
  });

  it("CosineAnnealingLR: endpoints, monotone descent, then torch's rise with period 2 * tMax", () => {
    const got = lrs(new CosineAnnealingLR(sgd(), { tMax: 10, etaMin: 0.1 }), 61);
    expect(got[0]).toBe(1);
    expect(got[5]).toBeCloseTo(0.55, 14);
    expect(got[10]).toBeCloseTo(0.1, 14);
    expect(got[15]).toBeCloseTo(0.55, 14);
    for (let i = 1; i <= 10; i++) expect(got[i]).toBeLessThan(got[i - 1]);
    for (let i = 0; i + 20 < got.length; i++) expect(got[i + 20]).toBeCloseTo(got[i], 14);
  });

  it("closed forms agree with torch's chained (recursive) updates over 1000 steps", () => {
    // torch's get_lr() formulas, each from the lr the step before set.
    const base = 0.7;
    const [tMax, etaMin] = [37, 0.01];
    const cos = [base];
    const linear = [base / 3];
    const poly = [base];
    for (let e = 1; e < 1000; e++) {
      const lr = cos[e - 1];
      if ((e - 1 - tMax) % (2 * tMax) === 0) cos.push(lr + ((base - etaMin) * (1 - Math.cos(Math.PI / tMax))) / 2);
      else cos.push(((1 + Math.cos((Math.PI * e) / tMax)) / (1 + Math.cos((Math.PI * (e - 1)) / tMax))) * (lr - etaMin) + etaMin);
      linear.push(e > 50 ? linear[e - 1] : linear[e - 1] * (1 + (1 - 1 / 3) / (50 * (1 / 3) + (e - 1) * (1 - 1 / 3))));
      poly.push(e > 90 ? poly[e - 1] : poly[e - 1] * ((1 - e / 90) / (1 - (e - 1) / 90)) ** 1.5);
    }
    expectClose(lrs(new CosineAnnealingLR(sgd(base), { tMax, etaMin }), 1000), cos, 9);
    expectClose(lrs(new LinearLR(sgd(base), { totalIters: 50 }), 1000), linear, 12);
    expectClose(lrs(new PolynomialLR(sgd(base), { totalIters: 90, power: 1.5 }), 1000), poly, 12);
  });

  it("CosineAnnealingWarmRestarts restarts after t0, t0 * tMult, ... steps, as torch's incremental T_cur", () => {
    const c = (t: number, period: number) => (1 + Math.cos((Math.PI * t) / period)) / 2;
    const got = lrs(new CosineAnnealingWarmRestarts(sgd(), { t0: 2, tMult: 2 }), 15);
    expectClose(got.slice(0, 7), [1, 0.5, 1, c(1, 4), 0.5, c(3, 4), 1]);
    expect(got[14]).toBe(1);
    for (const [t0, tMult] of [
      [3, 1],
      [1, 3],
      [5, 2],
    ]) {
      const want = [];
      let [tCur, tI] = [0, t0];
      for (let e = 0; e < 400; e++) {
        if (e > 0 && ++tCur >= tI) [tCur, tI] = [tCur - tI, tI * tMult];
        want.push(0.05 + (0.5 - 0.05) * c(tCur, tI));
      }
      expectClose(lrs(new CosineAnnealingWarmRestarts(sgd(0.5), { t0, tMult, etaMin: 0.05 }), 400), want, 14);
    }
  });

  it("OneCycleLR: torch's defaults, phases, cos and linear anneal, and a step past totalSteps refused", () => {
    const optimizer = sgd(123);
    const cycle = new OneCycleLR(optimizer, { maxLr: 1, totalSteps: 10 });
    expect(cycle.baseLr).toBe(1 / 25);
    const got = lrs(cycle, 11);
    const fall = (pct: number) => 4e-6 + ((1 - 4e-6) / 2) * (Math.cos(Math.PI * pct) + 1);
    expectClose(got, [0.04, 0.52, 1, fall(1 / 7), fall(2 / 7), fall(3 / 7), fall(4 / 7), fall(5 / 7), fall(6 / 7), 4e-6, fall(8 / 7)]);
    // torch computes step totalSteps too and raises past it; the refused step changes nothing.
    expect(thrown(() => cycle.step())).toEqual(["ValueError", "OneCycleLR.step: tried to step 11 times; totalSteps is 10"]);
    expect(cycle.lastEpoch).toBe(10);
    expect(optimizer.lr).toBe(got[10]);

    const linear = lrs(new OneCycleLR(sgd(), { maxLr: 1, epochs: 2, stepsPerEpoch: 5, annealStrategy: "linear" }), 11);
    // Step totalSteps (a loop's last scheduler.step()) stays at the final lr: torch's linear formula passes it there
    // (below 0 where it is small), which was refused as a negative lr at the loop's last step.
    expectClose(linear, [0.04, 0.52, 1, ...[1, 2, 3, 4, 5, 6, 7].map((k) => 1 + ((4e-6 - 1) * k) / 7), 4e-6]);
    const small = new OneCycleLR(sgd(), { maxLr: 0.01, totalSteps: 100, annealStrategy: "linear", threePhase: true });
    for (let i = 0; i < 100; i++) small.step();
    expect(small.lastLr).toBeCloseTo(0.01 / 25 / 1e4, 15);
    const three = lrs(new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 10, threePhase: true }), 10);
    expectClose(three.slice(0, 5), [0.04, 0.52, 1, 0.52, 0.04]);
    expect(three[9]).toBeCloseTo(4e-6, 15);
    for (let i = 5; i < 10; i++) expect(three[i]).toBeLessThan(three[i - 1]);
  });

  it("SequentialLR: warm-up then cosine, each part multiplying the optimizer's first lr (torch's initial_lr)", () => {
    const optimizer = sgd(1);
    const warmup = new LinearLR(optimizer, { startFactor: 0.1, totalIters: 3 });
    const decay = new CosineAnnealingLR(optimizer, { tMax: 4 });
    expect(decay.baseLr).toBe(1);
    const scheduler = new SequentialLR(optimizer, { schedulers: [warmup, decay], milestones: [3] });
    expectClose(lrs(scheduler, 9), [0.1, 0.4, 0.7, 1, (1 + Math.SQRT1_2) / 2, 0.5, (1 - Math.SQRT1_2) / 2, 0, (1 - Math.SQRT1_2) / 2]);
    expect(decay.lastEpoch).toBe(5);
    expect(warmup.lastEpoch).toBe(2);
  });
});

describe("ReduceLROnPlateau", () => {
  function run(scheduler: ReduceLROnPlateau, metrics: number[]): number[] {
    return metrics.map((m) => {
      scheduler.step(m);
      return scheduler.optimizer.lr;
    });
  }

  it("reduces after patience steps without improvement, then waits out the cooldown", () => {
    const optimizer = sgd(1);
    const scheduler = new ReduceLROnPlateau(optimizer, { factor: 0.5, patience: 2, cooldown: 2 });
    expect(optimizer.lr).toBe(1);
    expect(run(scheduler, [10, 9, 9, 9, 9, 9, 9, 9, 9, 9])).toEqual([1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25]);
    expect(scheduler.lastEpoch).toBe(10);
    expect(scheduler.best).toBe(9);
  });

  it("counts an improvement by threshold (rel and abs), in modes min and max; NaN is no improvement", () => {
    const rel = new ReduceLROnPlateau(sgd(), { patience: 0, threshold: 0.1 });
    // 9.5 is not below 10 * 0.9: reduced; 8.5 is below 9: kept.
    expect(run(rel, [10, 9.5, 8.5, Number.NaN])).toEqual([1, 0.1, 0.1, 0.010000000000000002]);
    const abs = new ReduceLROnPlateau(sgd(), { mode: "max", patience: 0, threshold: 1, thresholdMode: "abs" });
    expect(run(abs, [1, 2.5, 3, 4])).toEqual([1, 1, 0.1, 0.1]);
  });

  it("stops at minLr and skips a reduction smaller than eps", () => {
    expect(run(new ReduceLROnPlateau(sgd(), { patience: 0, minLr: 0.05 }), [1, 1, 1, 1])).toEqual([1, 0.1, 0.05, 0.05]);
    expect(run(new ReduceLROnPlateau(sgd(1e-8), { patience: 0, eps: 1e-8 }), [1, 1])).toEqual([1e-8, 1e-8]);
  });

  it("takes the metric as a one-element tensor of any shape and dtype (torch's float(metric)), as the same number", () => {
    const metrics = [10, 9, 9.5, 9.25, 9, 9, 8];
    const want = run(new ReduceLROnPlateau(sgd(), { patience: 1, factor: 0.5 }), metrics);
    expect(want).toEqual([1, 1, 1, 0.5, 0.5, 0.25, 0.25]);
    const forms: [number[], DType][] = [
      [[1], "float32"],
      [[], "float32"],
      [[1, 1], "float16"],
      [[1, 1, 1], "bfloat16"],
      [[1], "int32"],
    ];
    for (const [shape, dtype] of forms) {
      const scheduler = new ReduceLROnPlateau(sgd(), { patience: 1, factor: 0.5 });
      // Each metric is exact in every dtype used (int32 takes the rounded values, which plateau the same way here).
      const values = dtype === "int32" ? [10, 9, 10, 10, 9, 9, 8] : metrics;
      const got = values.map((m) => {
        const metric = tensor([m], shape, dtype);
        scheduler.step(metric);
        expect(metric.isDisposed).toBe(false);
        metric.dispose();
        return scheduler.optimizer.lr;
      });
      expect(got, `[${shape}] ${dtype}`).toEqual(want);
      expect(scheduler.best).toBe(8);
    }
  });

  it("refuses a tensor of more or fewer than one element, naming its shape, and changes nothing", () => {
    const scheduler = new ReduceLROnPlateau(sgd(), { patience: 0 });
    scheduler.step(1);
    const twoValues = tensor([0.5, 0.25], [2]);
    expect(thrown(() => scheduler.step(twoValues))).toEqual([
      "ValueError",
      "ReduceLROnPlateau.step: metric must be a number or a one-element Tensor, got a Tensor [2] float32 (2 elements)",
    ]);
    expect(thrown(() => scheduler.step(tensor([], [0, 1])))[1]).toBe("ReduceLROnPlateau.step: metric must be a number or a one-element Tensor, got a Tensor [0, 1] float32 (0 elements)");
    const disposed = tensor([0.5], [1]);
    disposed.dispose();
    expect(thrown(() => scheduler.step(disposed))[0]).toBe("DisposedTensorError");
    expect([scheduler.lastEpoch, scheduler.best, scheduler.optimizer.lr]).toEqual([1, 1, 1]);
  });

  it("refuses a metric that is not a number, and an infinitely good one", () => {
    const scheduler = new ReduceLROnPlateau(sgd());
    expect(thrown(() => scheduler.step("0.5" as unknown as number))).toEqual(["ValueError", 'ReduceLROnPlateau.step: metric must be a number or a one-element Tensor, got "0.5"']);
    expect(thrown(() => scheduler.step([0.5] as unknown as number))).toEqual(["ValueError", "ReduceLROnPlateau.step: metric must be a number or a one-element Tensor, got an array"]);
    expect(thrown(() => scheduler.step(Number.NEGATIVE_INFINITY))[1]).toMatch(/metric must be finite in mode "min"/);
    expect(scheduler.lastEpoch).toBe(0);
  });
});

describe("state dicts", () => {
  const makers: [string, (o: SGD) => LRScheduler][] = [
    ["StepLR", (o) => new StepLR(o, { stepSize: 4, gamma: 0.5 })],
    ["MultiStepLR", (o) => new MultiStepLR(o, { milestones: [3, 9] })],
    ["CosineAnnealingWarmRestarts", (o) => new CosineAnnealingWarmRestarts(o, { t0: 3, tMult: 2, etaMin: 0.01 })],
    ["OneCycleLR", (o) => new OneCycleLR(o, { maxLr: 2, totalSteps: 30, threePhase: true })],
    ["LambdaLR", (o) => new LambdaLR(o, { lrLambda: (e) => 0.9 ** e })],
    [
      "SequentialLR",
      (o) => new SequentialLR(o, { schedulers: [new LinearLR(o, { totalIters: 4 }), new ExponentialLR(o, { gamma: 0.9 })], milestones: [4] }),
    ],
    ["ReduceLROnPlateau", (o) => new ReduceLROnPlateau(o, { patience: 1, cooldown: 1 })],
  ];
  const advance = (s: LRScheduler, i: number) => (s instanceof ReduceLROnPlateau ? s.step([5, 4, 4, 4, 3, 3, 3, 3][i % 8]) : s.step());

  for (const [name, make] of makers) {
    it(`${name}: a scheduler loaded from JSON continues as the saved one`, () => {
      const first = make(sgd(0.3));
      for (let i = 0; i < 7; i++) advance(first, i);
      const saved = JSON.parse(JSON.stringify(first.stateDict())) as LRSchedulerState;
      expect(saved.scheduler).toBe(name);
      const resumed = make(sgd(0.3));
      resumed.loadStateDict(saved);
      expect(resumed.optimizer.lr).toBe(first.optimizer.lr);
      expect(resumed.lastEpoch).toBe(7);
      for (let i = 7; i < 20; i++) {
        advance(first, i);
        advance(resumed, i);
        expect(resumed.optimizer.lr, `step ${i + 1}`).toBe(first.optimizer.lr);
      }
      expect(resumed.stateDict()).toEqual(first.stateDict());
    });
  }

  it("loaded options replace the scheduler's, as torch's", () => {
    const scheduler = new StepLR(sgd(), { stepSize: 2 });
    scheduler.loadStateDict({ ...new StepLR(sgd(), { stepSize: 5, gamma: 0.5 }).stateDict(), lastEpoch: 5 });
    expect(scheduler.options).toEqual({ stepSize: 5, gamma: 0.5 });
    scheduler.step();
    expect(scheduler.optimizer.lr).toBe(0.5);
  });

  it("refuses another kind's state, missing and unknown fields and bad values, naming them, and changes nothing", () => {
    const scheduler = new StepLR(sgd(), { stepSize: 2 });
    const own = scheduler.stateDict();
    const other = new ExponentialLR(sgd(), { gamma: 0.5 }).stateDict();
    expect(thrown(() => scheduler.loadStateDict(other))).toEqual([
      "StateDictError",
      'StepLR.loadStateDict: type mismatch for scheduler: the checkpoint has "ExponentialLR", the model has "StepLR"',
    ]);
    const { lastLr: _, ...noLastLr } = own;
    expect(thrown(() => scheduler.loadStateDict(noLastLr as LRSchedulerState))).toEqual(["StateDictError", "StepLR.loadStateDict: missing keys: lastLr"]);
    expect(thrown(() => scheduler.loadStateDict({ ...own, options: { ...own.options, step_size: 3 } }))[1]).toBe(
      "StepLR.loadStateDict: unexpected keys: options.step_size",
    );
    expect(thrown(() => scheduler.loadStateDict({ ...own, lastEpoch: 1.5 }))).toEqual(["ValueError", "StepLR.loadStateDict: lastEpoch must be an integer >= 0, got 1.5"]);
    expect(thrown(() => scheduler.loadStateDict({ ...own, options: { ...own.options, gamma: -1 } }))).toEqual([
      "ValueError",
      "StepLR.loadStateDict: options.gamma must be a finite number >= 0, got -1",
    ]);
    expect(thrown(() => scheduler.loadStateDict(null as unknown as LRSchedulerState))[0]).toBe("ValueError");
    expect(scheduler.stateDict()).toEqual(own);
  });

  it("SequentialLR refuses a part's bad state and leaves every part as it was", () => {
    const optimizer = sgd();
    const parts = [new ConstantLR(optimizer), new StepLR(optimizer, { stepSize: 2 })];
    const scheduler = new SequentialLR(optimizer, { schedulers: parts, milestones: [5] });
    scheduler.step();
    const before = scheduler.stateDict();
    const bad = JSON.parse(JSON.stringify(before)) as LRSchedulerState;
    bad.lastEpoch = 3;
    (bad.schedulers as LRSchedulerState[])[0].lastEpoch = 3;
    (bad.schedulers as LRSchedulerState[])[1].options.stepSize = 0;
    expect(thrown(() => scheduler.loadStateDict(bad))[1]).toBe("StepLR.loadStateDict: options.stepSize must be an integer >= 1, got 0");
    expect(scheduler.stateDict()).toEqual(before);
    // The optimizer's lr too: putting the first part back set it to that part's, though the schedule had moved on.
    const o = sgd(1);
    const sequence = new SequentialLR(o, { schedulers: [new LinearLR(o, { startFactor: 0.1, totalIters: 4 }), new ExponentialLR(o, { gamma: 0.5 })], milestones: [4] });
    for (let i = 0; i < 6; i++) sequence.step();
    expect(o.lr).toBe(0.25);
    const later = JSON.parse(JSON.stringify(sequence.stateDict())) as LRSchedulerState;
    (later.schedulers as LRSchedulerState[])[1].lastEpoch = -1;
    expect(thrown(() => sequence.loadStateDict(later))[0]).toBe("ValueError");
    expect([o.lr, sequence.lastLr]).toEqual([0.25, 0.25]);
  });
});

describe("with an optimizer", () => {
  it("each SGD step moves the weight by the lr the schedule set before it", () => {
    const parameter = new Parameter(tensor([0], [1]));
    const optimizer = new SGD([parameter], { lr: 0.8 });
    const scheduler = new StepLR(optimizer, { stepSize: 2, gamma: 0.5 });
    const used: number[] = [];
    for (let i = 0; i < 6; i++) {
      parameter.grad = tensor([1], [1]);
      used.push(optimizer.lr);
      optimizer.step();
      scheduler.step();
    }
    expect(used).toEqual([0.8, 0.8, 0.4, 0.4, 0.2, 0.2]);
    expect(host(parameter.value)[0]).toBeCloseTo(-2.8, 6);
  });

  it("the base lr is the optimizer's before its first scheduler changed it (torch's initial_lr)", () => {
    const optimizer = sgd(1);
    new LinearLR(optimizer, { startFactor: 0.5 });
    expect(optimizer.lr).toBe(0.5);
    expect(new StepLR(optimizer, { stepSize: 1 }).baseLr).toBe(1);
  });
});

describe("options are checked, naming the bad one", () => {
  const cases: [string, () => unknown, string][] = [
    ["stepSize 0", () => new StepLR(sgd(), { stepSize: 0 }), "StepLR: stepSize must be an integer >= 1, got 0"],
    ["stepSize 1.5", () => new StepLR(sgd(), { stepSize: 1.5 }), "StepLR: stepSize must be an integer >= 1, got 1.5"],
    ["gamma NaN", () => new ExponentialLR(sgd(), { gamma: Number.NaN }), "ExponentialLR: gamma must be a finite number >= 0, got NaN"],
    ["torch's name", () => new StepLR(sgd(), { step_size: 3 } as never), "StepLR: unknown option 'step_size'; the options are stepSize, gamma"],
    ["not an optimizer", () => new StepLR({ lr: 1 } as never, { stepSize: 1 }), "StepLR: expected an Optimizer (SGD, Adam, AdamW), got object"],
    ["milestones", () => new MultiStepLR(sgd(), { milestones: [2, -1] }), "MultiStepLR: milestones[1] must be an integer >= 0, got -1"],
    ["factor 2", () => new ConstantLR(sgd(), { factor: 2 }), "ConstantLR: factor must be a finite number in [0, 1], got 2"],
    ["startFactor 0", () => new LinearLR(sgd(), { startFactor: 0 }), "LinearLR: startFactor must be a finite number in (0, 1], got 0"],
    ["tMax", () => new CosineAnnealingLR(sgd(), { tMax: 0 }), "CosineAnnealingLR: tMax must be an integer >= 1, got 0"],
    ["tMult", () => new CosineAnnealingWarmRestarts(sgd(), { t0: 1, tMult: 1.5 }), "CosineAnnealingWarmRestarts: tMult must be an integer >= 1, got 1.5"],
    ["power", () => new PolynomialLR(sgd(), { power: Number.POSITIVE_INFINITY }), "PolynomialLR: power must be a finite number >= 0, got Infinity"],
    ["lambda", () => new LambdaLR(sgd(), { lrLambda: () => Number.NaN }), "LambdaLR: lrLambda(0) gave NaN, expected a finite number"],
    ["no totalSteps", () => new OneCycleLR(sgd(), { maxLr: 1 }), "OneCycleLR: totalSteps (or epochs and stepsPerEpoch) is needed"],
    ["both", () => new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 5, epochs: 1 }), "OneCycleLR: give totalSteps, or epochs and stepsPerEpoch, not both"],
    ["pctStart", () => new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 5, pctStart: 1.5 }), "OneCycleLR: pctStart must be a finite number in [0, 1], got 1.5"],
    ["anneal", () => new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 5, annealStrategy: "cosine" as never }), 'OneCycleLR: annealStrategy must be "cos" or "linear", got "cosine"'],
    ["empty phase", () => new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 10, pctStart: 0.1 }), "OneCycleLR: pctStart 0.1 with totalSteps 10 leaves phase 1 without steps"],
    ["momentum", () => new OneCycleLR(sgd(), { maxLr: 1, totalSteps: 5, cycleMomentum: true } as never), "OneCycleLR: unknown option 'cycleMomentum'"],
    ["patience", () => new ReduceLROnPlateau(sgd(), { patience: -1 }), "ReduceLROnPlateau: patience must be an integer >= 0, got -1"],
    ["plateau factor", () => new ReduceLROnPlateau(sgd(), { factor: 1 }), "ReduceLROnPlateau: factor must be a finite number in [0, 1), got 1"],
    ["mode", () => new ReduceLROnPlateau(sgd(), { mode: "minimum" as never }), 'ReduceLROnPlateau: mode must be "min" or "max", got "minimum"'],
    ["step argument", () => new StepLR(sgd(), { stepSize: 1 }).step(3), "StepLR.step takes no argument, got 3"],
  ];
  for (const [name, make, message] of cases) {
    it(name, () => {
      const [kind, text] = thrown(make);
      expect(kind).toBe("ValueError");
      expect(text.startsWith(message), text).toBe(true);
    });
  }

  it("SequentialLR: parts on another optimizer, a ReduceLROnPlateau, a wrong number of milestones", () => {
    const optimizer = sgd();
    const part = new ConstantLR(optimizer);
    expect(thrown(() => new SequentialLR(optimizer, { schedulers: [part, new ConstantLR(sgd())], milestones: [2] }))[1]).toBe(
      "SequentialLR: schedulers[1] was made on another optimizer",
    );
    expect(thrown(() => new SequentialLR(optimizer, { schedulers: [part, new ReduceLROnPlateau(optimizer) as never], milestones: [2] }))[1]).toMatch(
      /schedulers\[1\] must be an LRScheduler other than ReduceLROnPlateau/,
    );
    expect(thrown(() => new SequentialLR(optimizer, { schedulers: [part, part], milestones: [] }))[1]).toBe(
      "SequentialLR: milestones must have 1 entries (one fewer than schedulers), got []",
    );
  });
});
