import { backward } from "@blocksparse/autograd";
import { captureGraph, cast, GraphError, randn, sum, type Tensor, tidy } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, GELU, type Module, mseLoss, pruneAndRegrow, Sequential, SparseOptimizer, ValueError } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { onJsGraphs } from "./helpers";

const makeModel = () =>
  new Sequential(
    new BlockSparseLinear(16, 32, { density: 0.5, blockShape: [4, 4], seed: 41 }),
    new GELU("tanh"),
    new BlockSparseLinear(32, 16, { density: 0.5, blockShape: [4, 4], seed: 42 }),
  );

const valuesOf = (model: Module) => model.parameters().map((p) => Array.from(p.value.dataSync()));

describe("a captured step after a pattern move", () => {
  onJsGraphs();

  for (const dtype of ["float32", "bfloat16"] as const) {
    it(`${dtype}: the replay is refused with a GraphError naming the move before anything runs; captured again after one eager step, replays train as eager steps`, () => {
      const eager = makeModel().to(dtype);
      const captured = makeModel().to(dtype);
      const options = { lr: 1e-2, weightDecay: 0.01, capturable: true };
      const optEager = new AdamW(eager.parameters(), options);
      const optCaptured = new AdamW(captured.parameters(), options);
      const sparseEager = new SparseOptimizer(eager, { fraction: 0.5, every: 3, seed: 5 }).attachOptimizer(optEager);
      const sparseCaptured = new SparseOptimizer(captured, { fraction: 0.5, every: 3, seed: 5 }).attachOptimizer(optCaptured);
      const [x, dy] = tidy(() => [cast(randn([8, 16], { seed: 1 }), dtype), cast(randn([8, 16], { seed: 2 }), dtype)]);
      const stepOf = (model: Module, optimizer: AdamW) => () => {
        optimizer.zeroGrad();
        const out = model.forward(x);
        backward(out, dy);
        optimizer.step();
        return out;
      };
      const eagerStep = () => {
        stepOf(eager, optEager)().dispose();
        return sparseEager.step().size > 0;
      };
      stepOf(captured, optCaptured)().dispose();
      sparseCaptured.step();
      eagerStep();
      let graph = captureGraph(stepOf(captured, optCaptured));
      try {
        graph.replay();
        sparseCaptured.step();
        expect(eagerStep()).toBe(false);
        graph.replay();
        // The third call moves both layers' patterns (and the optimizer's state with them).
        expect(sparseCaptured.step().size).toBe(2);
        expect(eagerStep()).toBe(true);
        const before = valuesOf(captured);
        const steps = captured.parameters().map((p) => optCaptured.stepsOf(p));
        expect(() => graph.replay()).toThrow(GraphError);
        expect(() => graph.replay()).toThrow(/pattern moved after the step was captured.*run one step eagerly and capture the step again$/);
        expect(valuesOf(captured)).toEqual(before);
        expect(captured.parameters().map((p) => optCaptured.stepsOf(p))).toEqual(steps);
        graph.dispose();
        graph.result.dispose();
        // What the error says to do: one eager step, then a new capture, whose replays match the eager run.
        stepOf(captured, optCaptured)().dispose();
        sparseCaptured.step();
        eagerStep();
        graph = captureGraph(stepOf(captured, optCaptured));
        for (let k = 0; k < 2; k++) {
          graph.replay();
          sparseCaptured.step();
          eagerStep();
        }
        expect(valuesOf(captured)).toEqual(valuesOf(eager));
        expect(captured.parameters().map((p) => optCaptured.stepsOf(p))).toEqual(eager.parameters().map((p) => optEager.stepsOf(p)));
      } finally {
        graph.dispose();
        graph.result.dispose();
        optEager.dispose();
        optCaptured.dispose();
        x.dispose();
        dy.dispose();
      }
    });
  }

  it("a captured forward alone is refused too after its layer moved (pruneAndRegrow), and also after a move through forwardActivation", () => {
    const layer = new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [4, 4], seed: 3 });
    const x = randn([4, 16], { seed: 4 });
    for (const run of [() => layer.forward(x), () => layer.forwardActivation(x, "relu")]) {
      run().dispose();
      const graph = captureGraph(run);
      try {
        const first = Array.from(graph.replay().dataSync());
        expect(first).toEqual(Array.from(tidy(run).dataSync()));
        pruneAndRegrow(layer, { fraction: 0.5, random: 6 });
        expect(() => graph.replay()).toThrow(/BlockSparseLinear: its pattern moved after the step was captured/);
      } finally {
        graph.dispose();
        graph.result.dispose();
      }
    }
    x.dispose();
  });
});

describe("SparseOptimizer's gradient pass on updates that move nothing", () => {
  it("is skipped when the fraction rounds to no block in every layer; the closure runs once some layer moves a block", () => {
    const layer = new BlockSparseLinear(16, 16, { density: 0.25, blockShape: [4, 4], seed: 7 });
    // 4 blocks: the cosine fraction 0.4 * (1 + cos(pi t / 4)) / 2 moves round(4 f) = 1, 1, 0 blocks at calls 1, 2, 3.
    const sparse = new SparseOptimizer([layer], { regrow: "gradient", fraction: 0.4, schedule: "cosine", totalSteps: 4, seed: 1 });
    const x = randn([4, 16], { seed: 8 });
    const y = randn([4, 16], { seed: 9 });
    let runs = 0;
    const closure = () => {
      runs++;
      return mseLoss(layer.forward(x), y);
    };
    const counts = [1, 2, 3].map(() => {
      const move = sparse.step(closure).get(layer);
      return [move?.pruned.length, runs];
    });
    expect(counts).toEqual([
      [1, 1],
      [1, 2],
      [0, 2],
    ]);
    // Nothing moved at the third call: the same pattern object, and no gradient pass.
    const pattern = layer.pattern;
    const zero = new SparseOptimizer([layer], { regrow: "gradient", fraction: 0, seed: 1 });
    expect(zero.step(() => sum(layer.forward(x))).get(layer)?.regrown.length).toBe(0);
    expect(layer.pattern).toBe(pattern);
    x.dispose();
    y.dispose();
  });
});

describe("SparseOptimizer's schedule queries", () => {
  it("fractionAt and willUpdate refuse a call count that is not an integer >= 0 with a ValueError naming it (NaN gave a NaN fraction)", () => {
    const layer = new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [2, 2], seed: 1 });
    const sparse = new SparseOptimizer([layer], { fraction: 0.4, schedule: "cosine", totalSteps: 10 });
    for (const t of [Number.NaN, -1, 1.5, Number.POSITIVE_INFINITY, "3" as unknown as number]) {
      expect(() => sparse.fractionAt(t)).toThrow(ValueError);
      expect(() => sparse.fractionAt(t)).toThrow(/SparseOptimizer\.fractionAt: t must be an integer >= 0, got /);
      expect(() => sparse.willUpdate(t)).toThrow(/SparseOptimizer\.willUpdate: calls must be an integer >= 0, got /);
    }
    expect(sparse.fractionAt(0)).toBe(0.4);
    expect(sparse.fractionAt(5)).toBeCloseTo(0.2, 12);
    expect(sparse.fractionAt(10)).toBe(0);
    expect(sparse.willUpdate()).toBe(true);
    expect(sparse.willUpdate(9)).toBe(false);
  });
});

/** Each stored block's values by flat position (blockRow * blockCols + blockCol). */
function blocksByPosition(layer: BlockSparseLinear, values: Tensor): Map<number, number[]> {
  const data = Array.from(values.dataSync());
  const size = layer.blockShape[0] * layer.blockShape[1];
  const { blockRow, blockCol } = layer.pattern.coordinates;
  const out = new Map<number, number[]>();
  for (let k = 0; k < layer.nnzBlocks; k++) out.set(blockRow[k] * layer.pattern.blockCols + blockCol[k], data.slice(k * size, (k + 1) * size));
  return out;
}

describe("AdamW's state across many moves", () => {
  it("bfloat16 with master weights: kept blocks keep their weight, master, m and v bits in their new slots; new blocks start at 0 (v at the old mean); steps and density stay", () => {
    const layer = new BlockSparseLinear(16, 32, { density: 0.375, blockShape: [4, 4], seed: 11 }).to("bfloat16");
    const optimizer = new AdamW(layer.parameters(), { lr: 0.01 });
    const nnz = layer.nnzBlocks;
    for (let move = 0; move < 8; move++) {
      optimizer.zeroGrad();
      tidy(() => backward(mseLoss(cast(layer.forward(cast(randn([4, 16], { seed: move }), "bfloat16")), "float32"), randn([4, 32], { seed: 50 + move }))));
      optimizer.step();
      const state = optimizer.stateOf(layer.weight) as Readonly<Record<string, Tensor>>;
      const master = optimizer.masterOf(layer.weight) as Tensor;
      const before = [layer.weight.value, master, state.m, state.v].map((t) => blocksByPosition(layer, t));
      const vMean = Array.from(state.v.dataSync()).reduce((a, b) => a + b, 0) / state.v.size;
      const held = layer.pattern.blockMask();
      // Fractions up to 1: the kept blocks' slots shift as blocks come and go before them.
      pruneAndRegrow(layer, { fraction: [0.25, 0.5, 1, 0.75][move % 4], random: move, optimizer });
      const after = optimizer.stateOf(layer.weight) as Readonly<Record<string, Tensor>>;
      const [weight, masterAfter, m, v] = [layer.weight.value, optimizer.masterOf(layer.weight) as Tensor, after.m, after.v].map((t) => blocksByPosition(layer, t));
      expect(layer.nnzBlocks).toBe(nnz);
      expect(optimizer.stepsOf(layer.weight)).toBe(move + 1);
      expect(layer.weight.grad).toBeNull();
      for (const flat of weight.keys()) {
        if (held[flat]) {
          expect([weight, masterAfter, m, v].map((blocks) => blocks.get(flat))).toEqual(before.map((blocks) => blocks.get(flat)));
        } else {
          expect([weight, masterAfter, m].map((blocks) => blocks.get(flat))).toEqual([0, 1, 2].map(() => new Array(16).fill(0)));
          for (const value of v.get(flat) as number[]) expect(value).toBeCloseTo(vMean, 12);
        }
      }
    }
    optimizer.dispose();
  });
});
