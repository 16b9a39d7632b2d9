import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randn, type Tensor, tidy } from "@blocksparse/core";
import {
  Adam,
  BlockSparseLinear,
  backward,
  disposeStateDict,
  mseLoss,
  NnError,
  ReLU,
  SGD,
  Sequential,
  SparseOptimizer,
  type SparseOptimizerOptions,
  type SparseOptimizerState,
  StateDictError,
} from "@blocksparse/nn";
import { loadOptimizer, saveOptimizer } from "@blocksparse/nn/node";
import { afterAll, describe, expect, it } from "vitest";
import { checkpointBytes, resumeFromBytes } from "./helpers";

const STEPS = 12;
const SAVED_AT = 5;

function makeModel(seed: number): Sequential {
  return new Sequential(
    new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [4, 4], seed }),
    new ReLU(),
    new BlockSparseLinear(32, 8, { density: 0.5, blockShape: [4, 4], seed: seed + 1 }),
  );
}

/** A model, its Adam and a SparseOptimizer moving its patterns; `seed` is only the model's initialisation. */
function makeRun(options: SparseOptimizerOptions, seed: number): { model: Sequential; optimizer: Adam; sparse: SparseOptimizer } {
  const model = makeModel(seed);
  const optimizer = new Adam(model.parameters(), { lr: 0.01 });
  return { model, optimizer, sparse: new SparseOptimizer(model, options).attachOptimizer(optimizer) };
}

/** The loss on data fixed by `step`, the same for every run. */
function lossAt(model: Sequential, step: number): Tensor {
  return mseLoss(model.forward(randn([8, 16], { seed: 100 + step })), randn([8, 8], { seed: 200 + step }));
}

/** One training step and the SparseOptimizer's step after it; whether it moved the patterns. */
function trainStep({ model, optimizer, sparse }: ReturnType<typeof makeRun>, step: number): boolean {
  optimizer.zeroGrad();
  tidy(() => backward(lossAt(model, step)));
  optimizer.step();
  return sparse.step(() => lossAt(model, step)).size > 0;
}

/** Each layer's pattern (flat block positions) and every parameter's bits. */
function snapshot(model: Sequential): { patterns: number[][]; values: number[][] } {
  const layers = model.modules().filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear);
  return {
    patterns: layers.map((layer) => Array.from(layer.pattern.blockMask(), (held, flat) => (held ? flat : -1)).filter((flat) => flat >= 0)),
    values: model.parameters().map((p) => Array.from(p.value.dataSync())),
  };
}

function dispose(...runs: ReturnType<typeof makeRun>[]): void {
  for (const { model, optimizer } of runs) {
    optimizer.dispose();
    for (const p of model.parameters()) p.dispose();
  }
}

/** Model and optimizer through safetensors bytes, the SparseOptimizer's state through JSON text. */
function checkpoint({ model, optimizer, sparse }: ReturnType<typeof makeRun>): ReturnType<typeof checkpointBytes> & { sparseJson: string } {
  return { ...checkpointBytes(model, optimizer), sparseJson: JSON.stringify(sparse.stateDict()) };
}

function resume(run: ReturnType<typeof makeRun>, saved: ReturnType<typeof checkpoint>, withSparseState: boolean): void {
  resumeFromBytes(run.model, run.optimizer, saved);
  if (withSparseState) run.sparse.loadStateDict(JSON.parse(saved.sparseJson));
}

const CONFIGS: [string, SparseOptimizerOptions, SparseOptimizerOptions][] = [
  // The resumed one is made with another seed: the state's seed is the generator's state, and replaces it.
  [
    "random regrowth, normal new blocks, cosine schedule, seeded",
    { fraction: 0.5, every: 2, regrow: "random", newBlocks: "normal", schedule: "cosine", totalSteps: 16, seed: 3 },
    { fraction: 0.5, every: 2, regrow: "random", newBlocks: "normal", schedule: "cosine", totalSteps: 16, seed: 99 },
  ],
  // Unseeded: the seed each draws from core's global generator differs; the loaded one takes the saved run's.
  [
    "gradient regrowth, normal new blocks, constant schedule, unseeded",
    { fraction: 0.3, every: 3, regrow: "gradient", newBlocks: "normal" },
    { fraction: 0.3, every: 3, regrow: "gradient", newBlocks: "normal" },
  ],
];

describe("SparseOptimizer state dicts resume pattern moves bit for bit", () => {
  for (const [name, options, resumedOptions] of CONFIGS) {
    it(`${name}: saved at step ${SAVED_AT} through bytes and JSON, loaded into fresh objects, equal at every later step`, () => {
      const run = makeRun(options, 1);
      const expected: ReturnType<typeof snapshot>[] = [];
      const movedAfterSave: number[] = [];
      let saved: ReturnType<typeof checkpoint> | undefined;
      for (let step = 0; step < STEPS; step++) {
        if (step === SAVED_AT) saved = checkpoint(run);
        if (trainStep(run, step) && step >= SAVED_AT) movedAfterSave.push(step);
        expected.push(snapshot(run.model));
      }
      // The comparison covers steps where the patterns move, more than once.
      expect(movedAfterSave.length).toBeGreaterThanOrEqual(2);
      expect(expected[movedAfterSave[0]].patterns).not.toEqual(expected[movedAfterSave[0] - 1].patterns);

      const resumed = makeRun(resumedOptions, 2);
      resume(resumed, saved as ReturnType<typeof checkpoint>, true);
      expect(resumed.sparse.calls).toBe(SAVED_AT);
      for (let step = SAVED_AT; step < STEPS; step++) {
        trainStep(resumed, step);
        const got = snapshot(resumed.model);
        expect(got.patterns, `patterns after step ${step}`).toEqual(expected[step].patterns);
        expect(got.values, `weights after step ${step}`).toEqual(expected[step].values);
      }
      expect(resumed.sparse.stateDict()).toEqual(run.sparse.stateDict());
      dispose(run, resumed);
    });
  }

  it("a resume without the SparseOptimizer's state restarts its schedule, as before: it moves at its own `every`-th call and the run diverges", () => {
    const [, options] = CONFIGS[0];
    const run = makeRun(options, 1);
    for (let step = 0; step < SAVED_AT; step++) trainStep(run, step);
    const saved = checkpoint(run);
    const resumed = makeRun(options, 2);
    resume(resumed, saved, false);
    expect(resumed.sparse.calls).toBe(0);
    // Model and optimizer state were restored all the same.
    expect(snapshot(resumed.model)).toEqual(snapshot(run.model));
    const moved: number[] = [];
    let diverged = false;
    for (let step = SAVED_AT; step < STEPS; step++) {
      trainStep(run, step);
      if (trainStep(resumed, step)) moved.push(resumed.sparse.calls);
      diverged ||= JSON.stringify(snapshot(resumed.model).patterns) !== JSON.stringify(snapshot(run.model).patterns);
    }
    expect(moved).toEqual([2, 4, 6]);
    expect(diverged).toBe(true);
    dispose(run, resumed);
  });

  it("stateDict is plain JSON data: the call count, the seed and the options (totalSteps null when it never stops)", () => {
    const sparse = new SparseOptimizer([], { fraction: 0.2, every: 4, seed: 5 });
    for (let call = 0; call < 3; call++) sparse.step();
    sparse.skipStep();
    const state = sparse.stateDict();
    expect(JSON.parse(JSON.stringify(state))).toEqual(state);
    expect(state.kind).toBe("SparseOptimizer");
    expect(state.calls).toBe(4);
    expect(state.options).toEqual({ fraction: 0.2, every: 4, newBlocks: "zeros", scale: 0.1, regrow: "random", schedule: "constant", totalSteps: null });
    expect(Number.isInteger(state.seed) && state.seed >= 0 && state.seed < 2 ** 32).toBe(true);
    // The seed is derived from the option, so the same option gives the same state.
    expect(new SparseOptimizer([], { fraction: 0.2, every: 4, seed: 5 }).stateDict().seed).toBe(state.seed);
    expect(new SparseOptimizer([], { fraction: 0.2, every: 4, seed: 6 }).stateDict().seed).not.toBe(state.seed);
  });
});

describe("SparseOptimizer.loadStateDict refuses what does not fit, changing nothing", () => {
  const options: SparseOptimizerOptions = { fraction: 0.5, every: 2, schedule: "cosine", totalSteps: 20, seed: 1 };
  const valid = (): SparseOptimizerState => {
    const source = new SparseOptimizer([], options);
    for (let call = 0; call < 7; call++) source.skipStep();
    return source.stateDict();
  };
  type Expected = { missing?: string[]; unexpected?: string[]; mismatches?: [string, string, string, string][] };
  const cases: [string, unknown, Expected][] = [
    ["not an object", null, { missing: ["kind", "calls", "seed", "options", ...Object.keys(valid().options).map((k) => `options.${k}`)] }],
    ["another kind", { ...valid(), kind: "Adam" }, { mismatches: [["kind", '"SparseOptimizer"', '"Adam"', "type"]] }],
    ["no calls", (({ calls, ...rest }) => rest)(valid()), { missing: ["calls"] }],
    ["a field it does not know", { ...valid(), random: [1, 2, 3, 4] }, { unexpected: ["random"] }],
    ["an option it does not know", { ...valid(), options: { ...valid().options, momentum: 0.9 } }, { unexpected: ["options.momentum"] }],
    ["an option missing", { ...valid(), options: (({ every, ...rest }) => rest)(valid().options) }, { missing: ["options.every"] }],
    ["negative calls", { ...valid(), calls: -1 }, { mismatches: [["calls", "an integer in [0, 2^53)", "-1", "type"]] }],
    ["fractional calls", { ...valid(), calls: 1.5 }, { mismatches: [["calls", "an integer in [0, 2^53)", "1.5", "type"]] }],
    ["calls as a string", { ...valid(), calls: "7" }, { mismatches: [["calls", "an integer in [0, 2^53)", '"7"', "type"]] }],
    ["a seed of 33 bits", { ...valid(), seed: 2 ** 32 }, { mismatches: [["seed", "an integer in [0, 2^32)", String(2 ** 32), "type"]] }],
    ["options not an object", { ...valid(), options: 3 }, { mismatches: [["options", "an object", "3", "type"]], missing: Object.keys(valid().options).map((k) => `options.${k}`) }],
    [
      "other options",
      { ...valid(), options: { ...valid().options, every: 5, totalSteps: null, regrow: "gradient" } },
      {
        mismatches: [
          ["options.every", "2", "5", "option"],
          ["options.regrow", '"random"', '"gradient"', "option"],
          ["options.totalSteps", "20", "null", "option"],
        ],
      },
    ],
  ];
  for (const [name, state, { missing = [], unexpected = [], mismatches = [] }] of cases) {
    it(name, () => {
      const sparse = new SparseOptimizer([], { ...options, seed: 2 });
      sparse.skipStep();
      const before = sparse.stateDict();
      let error: unknown;
      try {
        sparse.loadStateDict(state as SparseOptimizerState);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(StateDictError);
      const { missingKeys, unexpectedKeys, mismatches: got } = error as StateDictError;
      expect(missingKeys).toEqual(missing);
      expect(unexpectedKeys).toEqual(unexpected);
      const sorted = got.map((m) => [m.key, m.expected, m.got, m.reason]).sort(([a], [b]) => (a as string).localeCompare(b as string));
      expect(sorted).toEqual(mismatches);
      expect((error as Error).message).toMatch(/^SparseOptimizer\.loadStateDict: /);
      expect(sparse.stateDict()).toEqual(before);
    });
  }

  it("a valid state loads: the call count and the seed are taken, the schedule goes on from them", () => {
    const sparse = new SparseOptimizer([], { ...options, seed: 2 });
    const state = valid();
    sparse.loadStateDict(state);
    expect(sparse.stateDict()).toEqual(state);
    expect(sparse.calls).toBe(7);
    expect(sparse.willUpdate()).toBe(true);
    // Asked about another count (a replica's agreed one): every 2 calls, so the call after 7 moves (the 8th), after 6 or 8 not.
    expect([6, 7, 8].map((calls) => sparse.willUpdate(calls))).toEqual([false, true, false]);
    expect(sparse.calls).toBe(7);
  });
});

describe("saveOptimizer / loadOptimizer with a SparseOptimizer (node)", () => {
  const dir = mkdtemp(join(tmpdir(), "nn-sparse-optim-"));
  afterAll(async () => rm(await dir, { recursive: true, force: true }));
  const options: SparseOptimizerOptions = { fraction: 0.5, every: 2, seed: 4 };

  it("keeps the attached optimizer's state and its own in one file; an Optimizer loads that file as before", async () => {
    const path = join(await dir, "with-sparse.safetensors");
    const run = makeRun(options, 1);
    for (let step = 0; step < 3; step++) trainStep(run, step);
    await saveOptimizer(run.sparse, path);

    const resumed = makeRun({ ...options, seed: 8 }, 1);
    const modelDict = run.model.stateDict();
    resumed.model.loadStateDict(modelDict);
    disposeStateDict(modelDict);
    await loadOptimizer(resumed.sparse, path);
    expect(resumed.sparse.stateDict()).toEqual(run.sparse.stateDict());
    const weight = (run: ReturnType<typeof makeRun>) => run.model.parameters()[0];
    expect(Array.from(resumed.optimizer.stateOf(weight(resumed))?.v.dataSync() ?? [])).toEqual(Array.from(run.optimizer.stateOf(weight(run))?.v.dataSync() ?? []));

    // An Optimizer ignores the SparseOptimizer's state in the file.
    const plain = makeRun(options, 1);
    const plainDict = run.model.stateDict();
    plain.model.loadStateDict(plainDict);
    disposeStateDict(plainDict);
    await loadOptimizer(plain.optimizer, path);
    expect(plain.optimizer.stepsOf(weight(plain))).toBe(3);
    expect(plain.sparse.calls).toBe(0);
    dispose(run, resumed, plain);
  });

  it("refuses a file without a SparseOptimizer's state, a state that does not fit and an optimizer of another kind, changing neither", async () => {
    const plainPath = join(await dir, "plain.safetensors");
    const sparsePath = join(await dir, "sparse.safetensors");
    const run = makeRun(options, 1);
    trainStep(run, 0);
    await saveOptimizer(run.optimizer, plainPath);
    await saveOptimizer(run.sparse, sparsePath);

    const target = makeRun(options, 1);
    target.sparse.skipStep();
    const before = target.sparse.stateDict();
    await expect(loadOptimizer(target.sparse, plainPath)).rejects.toThrow(/no 'sparseOptimizer' metadata/);
    // Its state is checked against its options.
    const other = new SparseOptimizer(target.model, { ...options, every: 3 }).attachOptimizer(target.optimizer);
    await expect(loadOptimizer(other, sparsePath)).rejects.toThrow(StateDictError);
    expect(other.calls).toBe(0);
    // The optimizer's load fails after the SparseOptimizer's would have succeeded: the SparseOptimizer is put back.
    const sgd = new SparseOptimizer(target.model, options).attachOptimizer(new SGD(target.model.parameters(), { lr: 0.1 }));
    sgd.skipStep();
    await expect(loadOptimizer(sgd, sparsePath)).rejects.toThrow(/of "Adam", not SGD/);
    expect(sgd.calls).toBe(1);
    for (const p of target.model.parameters()) expect(target.optimizer.stepsOf(p)).toBe(0);
    expect(target.sparse.stateDict()).toEqual(before);

    await expect(saveOptimizer(new SparseOptimizer(target.model, options), plainPath)).rejects.toThrow(/no optimizer attached/);
    await expect(saveOptimizer({} as SGD, plainPath)).rejects.toThrow(NnError);
    dispose(run, target);
  });
});
