import { backward } from "@blocksparse/autograd";
import { captureGraph, cast, type DType, GraphError, getBackend, memory, randn, setBackend, type Tensor, tensor, tidy } from "@blocksparse/core";
import { registerGraphRecordingBackend } from "@blocksparse/core/testing";
import {
  Adam,
  AdamW,
  CosineAnnealingLR,
  disposeStateDict,
  LinearLR,
  Linear,
  loadOptimizerState,
  type Optimizer,
  Parameter,
  ReduceLROnPlateau,
  SequentialLR,
  SGD,
  StepLR,
  saveOptimizerState,
  StateDictError,
  ValueError,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

const bits = (t: Tensor | Parameter) => Array.from((t instanceof Parameter ? t.value : t).dataSync());

/** Parameters of `sizes`, from fixed seeds (the same values for every call with the same seed), in `dtype`. */
function makeParams(sizes: number[], seed: number, dtype: DType = "float32"): Parameter[] {
  return sizes.map((n, i) => new Parameter(tidy(() => cast(randn([n], { seed: seed + i }), dtype))));
}

/** Gives every parameter of `lists` the gradient of step `step` (the same for a parameter's twin in another list), then steps each optimizer. */
function stepAll(step: number, lists: Parameter[][], optimizers: Optimizer[]): void {
  for (const params of lists) {
    params.forEach((p, i) => {
      p.grad = tidy(() => cast(randn(p.shape, { seed: 1000 * step + i }), p.dtype));
    });
  }
  for (const o of optimizers) o.step();
  for (const params of lists) for (const p of params) p.zeroGrad();
}

describe("parameter groups train each group as its own optimizer would, exactly", () => {
  // Three parameters in two groups: [a, b] with the constructor's options, [c] with its own.
  const sizes = [6, 3, 4];
  const cases: { name: string; dtype: DType; make: (params: Parameter[] | object[], options: object) => Optimizer; options: object; second: object }[] = [
    { name: "SGD", dtype: "float32", make: (p, o) => new SGD(p as Parameter[], o as { lr: number }), options: { lr: 0.1, momentum: 0.9 }, second: { lr: 0.02, momentum: 0.5, weightDecay: 0.1, nesterov: true } },
    { name: "Adam", dtype: "float32", make: (p, o) => new Adam(p as Parameter[], o), options: { lr: 0.01 }, second: { lr: 0.003, betas: [0.8, 0.9], eps: 1e-6, weightDecay: 0.05 } },
    { name: "AdamW, bfloat16 with master weights", dtype: "bfloat16", make: (p, o) => new AdamW(p as Parameter[], o), options: { lr: 0.01, weightDecay: 0.1 }, second: { lr: 0.05, weightDecay: 0 } },
    { name: "AdamW capturable (each group's lr on the device)", dtype: "float32", make: (p, o) => new AdamW(p as Parameter[], o), options: { lr: 0.01, capturable: true }, second: { lr: 0.1, weightDecay: 0 } },
  ];
  for (const { name, dtype, make, options, second } of cases) {
    it(`${name}: the same weights as one optimizer per group, through an lr changed between steps`, () => {
      const grouped = makeParams(sizes, 1, dtype);
      const apart = makeParams(sizes, 1, dtype);
      const optimizer = make([{ params: grouped.slice(0, 2) }, { params: grouped[2], ...second }], options);
      const first = make(apart.slice(0, 2), options);
      const other = make([apart[2]], { ...options, ...second });
      for (let step = 0; step < 4; step++) {
        if (step === 2) {
          optimizer.paramGroups[1].lr /= 4;
          other.lr /= 4;
        }
        stepAll(step, [grouped, apart], [optimizer, first, other]);
      }
      expect(grouped.map(bits)).toEqual(apart.map(bits));
      // Differently: the second group did not train as the first (a check that the groups' options reached the update).
      const same = makeParams(sizes, 1, dtype);
      const single = make(same, options);
      for (let step = 0; step < 4; step++) stepAll(step, [same], [single]);
      expect(bits(same[2])).not.toEqual(bits(grouped[2]));
      expect(bits(same[0])).toEqual(bits(grouped[0]));
      for (const o of [optimizer, first, other, single]) o.dispose();
    });
  }
});

describe("parameter groups: options, defaults and checks", () => {
  it("a group's left-out options are the constructor's (PyTorch's defaults), and paramGroups / defaults show them", () => {
    const [a, b, c] = makeParams([2, 2, 2], 1);
    const optimizer = new AdamW([{ params: [a, b, a] }, { params: [c], lr: 0.1, weightDecay: 0 }], { lr: 1e-3, betas: [0.8, 0.9] });
    expect(optimizer.params).toEqual([a, b, c]);
    const [first, second] = optimizer.paramGroups;
    expect(first.params).toEqual([a, b]);
    expect({ lr: first.lr, betas: first.betas, eps: first.eps, weightDecay: first.weightDecay }).toEqual({ lr: 1e-3, betas: [0.8, 0.9], eps: 1e-8, weightDecay: 0.01 });
    expect({ lr: second.lr, betas: second.betas, eps: second.eps, weightDecay: second.weightDecay }).toEqual({ lr: 0.1, betas: [0.8, 0.9], eps: 1e-8, weightDecay: 0 });
    expect(optimizer.defaults).toEqual({ lr: 1e-3, betas: [0.8, 0.9], eps: 1e-8, weightDecay: 0.01 });
    expect(optimizer.lrOf(c)).toBe(0.1);
    optimizer.dispose();
  });

  it("model.parameters() as before: one group with the constructor's options, lr read and set as before", () => {
    const params = makeParams([2, 3], 1);
    const optimizer = new SGD(params, { lr: 0.1, momentum: 0.9 });
    expect(optimizer.paramGroups.length).toBe(1);
    expect(optimizer.paramGroups[0].params).toEqual(params);
    expect([optimizer.lr, optimizer.momentum, optimizer.nesterov]).toEqual([0.1, 0.9, false]);
    optimizer.lr = 0.05;
    expect(optimizer.paramGroups[0].lr).toBe(0.05);
    const dict = optimizer.stateDict();
    expect(dict.hyperparameters).toEqual({ lr: 0.05, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false });
    expect(dict.paramGroups).toEqual([{ hyperparameters: dict.hyperparameters, params: [0, 1] }]);
    optimizer.dispose();
  });

  it("optimizer.lr and the kind's options: one value for every group, set in every group, a ValueError to read when they differ", () => {
    const [a, b] = makeParams([2, 2], 1);
    const optimizer = new SGD([{ params: [a] }, { params: [b], lr: 0.5, momentum: 0.9 }], { lr: 0.1 });
    expect(() => optimizer.lr).toThrow(ValueError);
    expect(() => optimizer.lr).toThrow(/SGD.lr: the parameter groups have different values \(0.1, 0.5\); read optimizer.paramGroups\[i\].lr/);
    expect(() => optimizer.momentum).toThrow(/paramGroups\[i\].momentum/);
    expect(optimizer.weightDecay).toBe(0);
    optimizer.lr = 0.2;
    expect(optimizer.paramGroups.map((g) => g.lr)).toEqual([0.2, 0.2]);
    expect(optimizer.lr).toBe(0.2);
    expect(() => {
      optimizer.paramGroups[1].lr = Number.NaN;
    }).toThrow(/SGD: paramGroups\[1\].lr must be a finite number >= 0, got NaN/);
    expect(() => {
      optimizer.lr = -1;
    }).toThrow(ValueError);
    expect(optimizer.paramGroups.map((g) => g.lr)).toEqual([0.2, 0.2]);
    // A group's option set between steps is checked at the step, naming the group.
    optimizer.paramGroups[1].weightDecay = -1;
    a.grad = tensor([1, 1], [2]);
    expect(() => optimizer.step()).toThrow(/SGD.step: paramGroups\[1\]: weightDecay must be a finite number >= 0, got -1/);
    optimizer.dispose();
  });

  it("refuses a parameter in two groups, Parameters mixed with groups, unknown or bad group options, with ValueErrors naming them", () => {
    const [a, b] = makeParams([2, 2], 1);
    expect(() => new AdamW([{ params: [a] }, { params: [b, a] }])).toThrow(/AdamW: paramGroups\[1\]: params\[1\] \(shape \[2\]\) is already in paramGroups\[0\]; a parameter can be in one group only/);
    expect(() => new AdamW([a, { params: [b] }] as never)).toThrow(/AdamW: params\[0\] is not a parameter group/);
    expect(() => new AdamW([{ params: [a], weight_decay: 0 }] as never)).toThrow(/AdamW: paramGroups\[0\]: unknown option 'weight_decay'; the options are params, lr, betas, eps, weightDecay/);
    expect(() => new AdamW([{ params: [a], capturable: true }] as never)).toThrow(/unknown option 'capturable'/);
    expect(() => new SGD([{ params: [a] }, { params: [b], momentum: -1 }], { lr: 0.1 })).toThrow(/SGD: paramGroups\[1\]: momentum must be a finite number >= 0, got -1/);
    expect(() => new SGD([{ params: [a], lr: Number.POSITIVE_INFINITY }], { lr: 0.1 })).toThrow(/SGD: paramGroups\[0\]: lr must be/);
    expect(() => new Adam([{ params: [a, tensor([1], [1])] }] as never)).toThrow(/Adam: paramGroups\[0\]: params\[1\] is not a Parameter/);
    expect(() => new Adam([{ params: 3 }] as never)).toThrow(/Adam: paramGroups\[0\]: params must be a Parameter or an array of Parameters, got 3/);
    expect(() => new Adam([{ params: [] }])).toThrow(/Adam: params is empty/);
  });

  it("addParamGroup: a group with the constructor's options for those it leaves out, trained from the next step; a parameter already held is refused and nothing changes", () => {
    const [a, b, c] = makeParams([2, 2, 2], 1);
    const [a2, b2, c2] = makeParams([2, 2, 2], 1);
    const optimizer = new AdamW([a], { lr: 0.01, weightDecay: 0.2 });
    const twin = new AdamW([{ params: [a2] }, { params: [b2, c2], lr: 0.1 }], { lr: 0.01, weightDecay: 0.2 });
    const tensors = memory().numTensors;
    expect(() => optimizer.addParamGroup({ params: [b, a] })).toThrow(/AdamW.addParamGroup: params\[1\] \(shape \[2\]\) is already in paramGroups\[0\]/);
    expect(() => optimizer.addParamGroup({ params: [b], eps: -1 })).toThrow(/AdamW.addParamGroup: eps must be a finite number >= 0, got -1/);
    expect(() => optimizer.addParamGroup([b] as never)).toThrow(/AdamW.addParamGroup: expected a parameter group \{ params, ...options \}, got an array/);
    expect([optimizer.paramGroups.length, optimizer.params.length, memory().numTensors]).toEqual([1, 1, tensors]);
    optimizer.addParamGroup({ params: [b, c], lr: 0.1 });
    expect(optimizer.params).toEqual([a, b, c]);
    expect(optimizer.paramGroups[1].weightDecay).toBe(0.2);
    for (let step = 0; step < 3; step++) stepAll(step, [[a, b, c], [a2, b2, c2]], [optimizer, twin]);
    expect([a, b, c].map(bits)).toEqual([a2, b2, c2].map(bits));
    optimizer.dispose();
    twin.dispose();
  });
});

describe("learning-rate schedulers scale each group's lr from its own initial lr", () => {
  const groups = () => {
    const [a, b] = makeParams([2, 2], 1);
    return new SGD([{ params: [a] }, { params: [b], lr: 0.01 }], { lr: 0.1 });
  };
  const lrs = (optimizer: Optimizer) => optimizer.paramGroups.map((g) => g.lr);

  it("StepLR, a warm-up then a cosine (SequentialLR), as torch's per-group base_lrs", () => {
    const optimizer = groups();
    const scheduler = new StepLR(optimizer, { stepSize: 2, gamma: 0.5 });
    expect(scheduler.baseLrs).toEqual([0.1, 0.01]);
    for (let k = 0; k < 4; k++) scheduler.step();
    expect(lrs(optimizer)).toEqual([0.1 * 0.25, 0.01 * 0.25]);
    expect(scheduler.lastLrs).toEqual(lrs(optimizer));
    expect(() => scheduler.lastLr).toThrow(/StepLR.lastLr: the parameter groups have different learning rates \(0.025, 0.0025\); read lastLrs/);
    expect(() => scheduler.getLastLr()).toThrow(ValueError);

    const other = groups();
    const warmup = new LinearLR(other, { startFactor: 0.5, totalIters: 2 });
    const decay = new CosineAnnealingLR(other, { tMax: 4, etaMin: 0.001 });
    const sequence = new SequentialLR(other, { schedulers: [warmup, decay], milestones: [2] });
    expect(lrs(other)).toEqual([0.05, 0.005]);
    for (let k = 0; k < 4; k++) sequence.step();
    // Step 4 is the cosine's step 2 of 4: halfway from each group's initial lr to etaMin.
    const halfway = (high: number) => 0.001 + ((high - 0.001) * (1 + Math.cos(Math.PI / 2))) / 2;
    expect(lrs(other)[0]).toBeCloseTo(halfway(0.1), 12);
    expect(lrs(other)[1]).toBeCloseTo(halfway(0.01), 12);
  });

  it("ReduceLROnPlateau reduces every group's lr from its own, down to minLr", () => {
    const optimizer = groups();
    const scheduler = new ReduceLROnPlateau(optimizer, { patience: 0, factor: 0.5, minLr: 0.004 });
    scheduler.step(1);
    scheduler.step(2);
    expect(lrs(optimizer)).toEqual([0.05, 0.005]);
    scheduler.step(3);
    expect(lrs(optimizer)).toEqual([0.025, 0.004]);
  });

  it("a state dict carries each group's lrs; another number of groups, or a group added since, is refused", () => {
    const optimizer = groups();
    const scheduler = new StepLR(optimizer, { stepSize: 1, gamma: 0.5 });
    scheduler.step();
    const state = JSON.parse(JSON.stringify(scheduler.stateDict()));
    expect([state.baseLrs, state.lastLrs]).toEqual([
      [0.1, 0.01],
      [0.05, 0.005],
    ]);
    const resumed = groups();
    const again = new StepLR(resumed, { stepSize: 1, gamma: 0.5 });
    again.loadStateDict(state);
    expect(lrs(resumed)).toEqual([0.05, 0.005]);
    again.step();
    scheduler.step();
    expect(lrs(resumed)).toEqual(lrs(optimizer));
    // One group's state (no baseLrs / lastLrs) into two groups: missing keys.
    const [p] = makeParams([2], 5);
    const one = new StepLR(new SGD([p], { lr: 0.1 }), { stepSize: 1 });
    expect(() => again.loadStateDict(one.stateDict())).toThrow(StateDictError);
    expect(() => again.loadStateDict({ ...state, baseLrs: [0.1] })).toThrow(/StepLR.loadStateDict: baseLrs must be an array of 2 learning rates/);
    const [q] = makeParams([2], 7);
    resumed.addParamGroup({ params: [q] });
    expect(() => again.step()).toThrow(/StepLR: the optimizer has 3 parameter groups, 2 when this scheduler was made/);
  });
});

describe("SGD's lr: optional, as torch's (default 1e-3), so that groups can each set their own", () => {
  it("groups with their own lrs and no constructor lr: each group trains at its lr, defaults.lr is 1e-3", () => {
    const [a, b] = makeParams([3, 2], 1);
    const [a1, b1] = makeParams([3, 2], 1);
    const optimizer = new SGD([{ params: a, lr: 0.1 }, { params: b, lr: 0.01 }], { momentum: 0.9 });
    expect(optimizer.paramGroups.map((g) => [g.lr, g.momentum])).toEqual([
      [0.1, 0.9],
      [0.01, 0.9],
    ]);
    expect(optimizer.defaults).toEqual({ lr: 1e-3, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false });
    const first = new SGD([a1], { lr: 0.1, momentum: 0.9 });
    const second = new SGD([b1], { lr: 0.01, momentum: 0.9 });
    for (let step = 0; step < 3; step++) stepAll(step, [[a, b], [a1, b1]], [optimizer, first, second]);
    expect([a, b].map(bits)).toEqual([a1, b1].map(bits));
    for (const o of [optimizer, first, second]) o.dispose();
  });

  it("without options (or with null, or lr left out) it takes lr 1e-3, as Adam and AdamW do; a group leaving lr out takes it too", () => {
    const params = makeParams([2], 1);
    const [a, b] = makeParams([2, 2], 3);
    for (const optimizer of [new SGD(params), new SGD(params, null), new SGD(params, { momentum: 0.5 }), new Adam(params), new AdamW(params)]) {
      expect([optimizer.lr, optimizer.defaults.lr]).toEqual([1e-3, 1e-3]);
      optimizer.dispose();
    }
    const grouped = new SGD([{ params: a }, { params: b, lr: 0.5 }]);
    expect(grouped.paramGroups.map((g) => g.lr)).toEqual([1e-3, 0.5]);
    // Stepping at the default lr: p -= 1e-3 * grad.
    const before = bits(a);
    a.grad = tensor([1, 2], [2]);
    grouped.step();
    expect(bits(a)).toEqual(before.map((v, i) => Math.fround(v - Math.fround(1e-3 * (i + 1)))));
    grouped.dispose();
    expect(() => new SGD(params, { lr: -1 })).toThrow(/SGD: lr must be a finite number >= 0, got -1/);
  });

  it("state dict round trip: each group's lr comes back into an SGD made without one, and training resumes bit for bit", () => {
    const params = makeParams([3, 2], 1);
    const twin = makeParams([3, 2], 1);
    const make = (p: Parameter[]) => new SGD([{ params: p[0], lr: 0.1 }, { params: p[1], lr: 0.01, nesterov: true }], { momentum: 0.9 });
    const optimizer = make(params);
    const uninterrupted = make(twin);
    for (let step = 0; step < 2; step++) stepAll(step, [params, twin], [optimizer, uninterrupted]);
    const dict = optimizer.stateDict();
    expect(dict.paramGroups?.map((g) => g.hyperparameters)).toEqual([
      { lr: 0.1, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false },
      { lr: 0.01, momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: true },
    ]);
    const loaded = loadOptimizerState(saveOptimizerState(dict));
    optimizer.dispose();
    const resumed = new SGD([{ params: params[0] }, { params: params[1] }]);
    resumed.loadStateDict(loaded);
    disposeStateDict(loaded.tensors);
    expect(resumed.paramGroups.map((g) => [g.lr, g.momentum, g.nesterov])).toEqual([
      [0.1, 0.9, false],
      [0.01, 0.9, true],
    ]);
    expect(resumed.defaults.lr).toBe(1e-3);
    for (let step = 2; step < 4; step++) stepAll(step, [params, twin], [resumed, uninterrupted]);
    expect(params.map(bits)).toEqual(twin.map(bits));
    resumed.dispose();
    uninterrupted.dispose();
  });
});

describe("optimizer state dicts with parameter groups", () => {
  const make = (params: Parameter[], lr = 0.01) =>
    new AdamW([{ params: params.slice(0, 2), weightDecay: 0 }, { params: params.slice(2), lr: 0.05, betas: [0.5, 0.6] }], { lr });

  it("round trip through safetensors: each group's hyperparameters come back, and training resumes bit for bit", () => {
    const params = makeParams([3, 2, 4], 1);
    const twin = makeParams([3, 2, 4], 1);
    const optimizer = make(params);
    const uninterrupted = make(twin);
    for (let step = 0; step < 2; step++) stepAll(step, [params, twin], [optimizer, uninterrupted]);
    optimizer.paramGroups[1].lr = 0.02;
    uninterrupted.paramGroups[1].lr = 0.02;
    const dict = optimizer.stateDict();
    expect(dict.paramGroups).toEqual([
      { hyperparameters: { lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 }, params: [0, 1] },
      { hyperparameters: { lr: 0.02, betas: [0.5, 0.6], eps: 1e-8, weightDecay: 0.01 }, params: [2] },
    ]);
    const loaded = loadOptimizerState(saveOptimizerState(dict));
    optimizer.dispose();
    // Made with other hyperparameters: the load replaces each group's.
    const resumed = new AdamW([{ params: params.slice(0, 2) }, { params: params.slice(2) }], { lr: 0.5 });
    resumed.loadStateDict(loaded);
    disposeStateDict(loaded.tensors);
    expect(resumed.paramGroups.map((g) => [g.lr, g.betas, g.weightDecay])).toEqual([
      [0.01, [0.9, 0.999], 0],
      [0.02, [0.5, 0.6], 0.01],
    ]);
    for (let step = 2; step < 4; step++) stepAll(step, [params, twin], [resumed, uninterrupted]);
    expect(params.map(bits)).toEqual(twin.map(bits));
    resumed.dispose();
    uninterrupted.dispose();
  });

  it("another number of groups or groups of other sizes is a ValueError naming them; a state dict without groups loads into one group only", () => {
    const params = makeParams([3, 2, 4], 1);
    const optimizer = make(params);
    stepAll(0, [params], [optimizer]);
    const dict = optimizer.stateDict();
    const single = new AdamW(params, { lr: 0.01 });
    expect(() => single.loadStateDict(dict)).toThrow(/AdamW.loadStateDict: the state dict has 2 parameter groups, this optimizer has 1/);
    const regrouped = new AdamW([{ params: params.slice(0, 1) }, { params: params.slice(1) }]);
    expect(() => regrouped.loadStateDict(dict)).toThrow(/AdamW.loadStateDict: paramGroups\[0\] holds parameters \[0, 1\], this optimizer's holds \[0..0\] \(1 parameter\)/);
    const { paramGroups: _, ...old } = dict;
    expect(() => optimizer.loadStateDict(old)).toThrow(/the state dict has 1 parameter group, this optimizer has 2/);
    expect(() => optimizer.loadStateDict({ ...dict, paramGroups: [dict.paramGroups![0], { ...dict.paramGroups![1], hyperparameters: { momentum: 1 } }] })).toThrow(
      /unknown hyperparameter 'momentum' in paramGroups\[1\].hyperparameters/,
    );
    // Saved from one list of parameters, without paramGroups (as before groups): loads, its hyperparameters the group's.
    const oldSingle = single.stateDict();
    delete oldSingle.paramGroups;
    const target = new AdamW(params, { lr: 0.3 });
    target.loadStateDict({ ...oldSingle, hyperparameters: { ...oldSingle.hyperparameters, lr: 0.02 } });
    expect(target.lr).toBe(0.02);
    disposeStateDict(dict.tensors);
    for (const o of [optimizer, single, regrouped, target]) o.dispose();
  });
});

describe("a captured step with a capturable optimizer's groups", () => {
  registerGraphRecordingBackend();

  it("replays update each group with its own device lr, set between replays, as eager separate optimizers", () => {
    const previous = getBackend();
    setBackend("js-graphs");
    try {
      const captured = new Linear(4, 3, { seed: 1 });
      const eager = new Linear(4, 3, { seed: 1 });
      const x = randn([5, 4], { seed: 2 });
      const dy = randn([5, 3], { seed: 3 });
      const optimizer = new AdamW([{ params: [captured.weight] }, { params: [captured.bias as Parameter], lr: 0.1, weightDecay: 0 }], { lr: 0.01, capturable: true });
      const weights = new AdamW([eager.weight], { lr: 0.01, capturable: true });
      const biases = new AdamW([eager.bias as Parameter], { lr: 0.1, weightDecay: 0, capturable: true });
      const step = (model: Linear, optimizers: Optimizer[]) => () => {
        for (const o of optimizers) o.zeroGrad();
        const out = model.forward(x);
        backward(out, dy);
        for (const o of optimizers) o.step();
        return out;
      };
      step(captured, [optimizer])().dispose();
      const graph = captureGraph(step(captured, [optimizer]));
      step(eager, [weights, biases])().dispose();
      for (let k = 0; k < 3; k++) {
        if (k === 1) {
          optimizer.paramGroups[1].lr = 0.02;
          biases.lr = 0.02;
        }
        graph.replay();
        step(eager, [weights, biases])().dispose();
        expect(bits(captured.weight.value)).toEqual(bits(eager.weight.value));
        expect(bits((captured.bias as Parameter).value)).toEqual(bits((eager.bias as Parameter).value));
      }
      graph.dispose();
      graph.result.dispose();
      for (const o of [optimizer, weights, biases]) o.dispose();
      x.dispose();
      dy.dispose();
    } finally {
      setBackend(previous);
    }
  });

  it("a group added after the step was captured: its replay refuses with a GraphError (it would never update the group) before running anything; captured again, replays train every group", () => {
    const previous = getBackend();
    setBackend("js-graphs");
    try {
      const captured = new Linear(4, 3, { seed: 1 });
      const eager = new Linear(4, 3, { seed: 1 });
      const x = randn([5, 4], { seed: 2 });
      const dy = randn([5, 3], { seed: 3 });
      const optimizer = new AdamW([captured.weight], { lr: 0.01, capturable: true });
      const twin = new AdamW([eager.weight], { lr: 0.01, capturable: true });
      const step = (model: Linear, o: Optimizer) => () => {
        o.zeroGrad();
        const out = model.forward(x);
        backward(out, dy);
        o.step();
        return out;
      };
      const expectSame = () => {
        expect(bits(captured.weight.value)).toEqual(bits(eager.weight.value));
        expect(bits((captured.bias as Parameter).value)).toEqual(bits((eager.bias as Parameter).value));
      };
      step(captured, optimizer)().dispose();
      step(eager, twin)().dispose();
      let graph = captureGraph(step(captured, optimizer));
      graph.replay();
      step(eager, twin)().dispose();
      // The bias unfrozen later, at its own lr (torch's add_param_group).
      optimizer.addParamGroup({ params: captured.bias as Parameter, lr: 0.1 });
      twin.addParamGroup({ params: eager.bias as Parameter, lr: 0.1 });
      expect(() => graph.replay()).toThrow(GraphError);
      expect(() => graph.replay()).toThrow(/^AdamW: paramGroups\[1\] was added after the step was captured, so replays would not update it: capture the step again after one eager step$/);
      // Refused before anything ran: no update, no step counted.
      expectSame();
      expect(optimizer.stepsOf(captured.weight)).toBe(2);
      graph.dispose();
      graph.result.dispose();
      // As the message says: one eager step (it makes the new group's state), then the step captured again.
      step(captured, optimizer)().dispose();
      step(eager, twin)().dispose();
      graph = captureGraph(step(captured, optimizer));
      for (let k = 0; k < 2; k++) {
        graph.replay();
        step(eager, twin)().dispose();
        expectSame();
      }
      expect([optimizer.stepsOf(captured.weight), optimizer.stepsOf(captured.bias as Parameter)]).toEqual([5, 3]);
      // An option of one group set since: the replay names the group.
      optimizer.paramGroups[1].weightDecay = 0;
      expect(() => graph.replay()).toThrow(/^AdamW: paramGroups\[1\]\.weightDecay is 0, the captured step holds 0\.01 /);
      graph.dispose();
      graph.result.dispose();
      for (const o of [optimizer, twin]) o.dispose();
      x.dispose();
      dy.dispose();
    } finally {
      setBackend(previous);
    }
  });
});
