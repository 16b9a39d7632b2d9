/**
 * captureGraph on a backend with graphs: replays against eager execution of the same ops on fresh random inputs
 * (outputs poisoned), inputs refreshed by assign between replays, an input re-pointed inside the step (a running
 * sum), the memory a graph holds, and every refusal as a typed error.
 */
import {
  addReplayCheck,
  type CapturedGraph,
  type FloatDType,
  GraphError,
  type Tensor,
  adamUpdate,
  add,
  attentionBackward,
  attentionWithStats,
  BackendError,
  BsrPattern,
  bsrLinear,
  cachedAttention,
  captureGraph,
  cast,
  gelu,
  getBackend,
  getBackendInstance,
  indexCopy,
  matmul,
  memory,
  mul,
  multiTensorAdamUpdate,
  multiTensorAdamUpdateInPlace,
  randn,
  setBackend,
  sum,
  tensor,
  tidy,
  zeros,
} from "@blocksparse/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TOLERANCES } from "./harness";

/** Declares the graph tests for `backendName` (registered beforehand; it must have graphs). */
export function declareGraphTests(backendName: string, dtypes: readonly FloatDType[] = ["float32", "bfloat16"]): void {
  describe(`captureGraph on ${backendName}`, () => {
    let previous: string;
    let poisonBefore = false;
    beforeAll(() => {
      previous = getBackend();
      setBackend(backendName);
      poisonBefore = getBackendInstance().poisonAllocations;
      getBackendInstance().poisonAllocations = true;
    });
    afterAll(() => {
      getBackendInstance().poisonAllocations = poisonBefore;
      setBackend(previous);
    });

    let seed = 1000;
    const random = (shape: number[], dtype: FloatDType) => tidy(() => cast(randn(shape, { seed: seed++ }), dtype));
    const values = (t: Tensor) => Array.from(t.dataSync());

    for (const dtype of dtypes) {
      it(`${dtype}: each replay equals the same ops run eagerly on the inputs' new values`, () => {
        const pattern = BsrPattern.random([64, 96], { blockShape: [32, 32], density: 0.5, seed: 7 });
        const x = random([40, 96], dtype);
        const w = random([pattern.nnzBlocks, 32, 32], dtype);
        const bias = random([64], dtype);
        const d = random([64, 48], dtype);
        const step = () => {
          const h = gelu(bsrLinear(x, w, pattern, bias));
          const y = matmul(h, d);
          return { y, total: sum(mul(y, 0.5)) };
        };
        // Eager once (kernels load, the pattern uploads), then record.
        tidy(() => void step().total.dataSync());
        const graph = captureGraph(step);
        try {
          expect(graph.inputCount).toBe(4);
          for (let k = 0; k < 3; k++) {
            tidy(() => {
              x.assign(random([40, 96], dtype));
              if (k === 2) w.assign(random([pattern.nnzBlocks, 32, 32], dtype));
            });
            const out = graph.replay();
            const expected = tidy(() => {
              const e = step();
              return { y: values(e.y), total: values(e.total) };
            });
            expect(values(out.y)).toEqual(expected.y);
            expect(values(out.total)).toEqual(expected.total);
          }
        } finally {
          graph.dispose();
          for (const t of [x, w, bias, d]) t.dispose();
        }
      });
    }

    for (const dtype of dtypes) {
      it(`${dtype}: fused attention and its backward replay as they run eagerly on the inputs' new values`, () => {
        const shape = (rows: number) => [1, 2, rows, 64];
        const [q, k, v, dout] = [shape(65), shape(130), shape(130), shape(65)].map((s) => random(s, dtype));
        const step = () => {
          const { out, lse } = attentionWithStats(q, k, v, { causal: true });
          return { out, lse, ...attentionBackward(dout, q, k, v, out, lse, { causal: true }) };
        };
        // A backward may sum dq or dk with atomics (in another order each run): equal up to the dtype's rounding.
        const expectClose = (got: Tensor, want: number[], name: string) => {
          const rtol = got.dtype === "float32" ? TOLERANCES.float32 : TOLERANCES[dtype];
          const scale = want.reduce((most, x) => Math.max(most, Math.abs(x)), 0);
          const worst = values(got).reduce((most, x, i) => Math.max(most, Math.abs(x - want[i])), 0);
          expect(worst, name).toBeLessThanOrEqual(rtol * scale);
        };
        tidy(() => void step().out.dataSync());
        const graph = captureGraph(step);
        try {
          expect(graph.inputCount).toBe(4);
          for (let replay = 0; replay < 2; replay++) {
            tidy(() => {
              q.assign(random(shape(65), dtype));
              if (replay === 1) v.assign(random(shape(130), dtype));
            });
            const got = graph.replay();
            const want = tidy(() => {
              const eager = step();
              return Object.fromEntries(Object.entries(eager).map(([name, t]) => [name, values(t)]));
            });
            for (const [name, t] of Object.entries(got)) expectClose(t, want[name], `replay ${replay}: ${name}`);
          }
        } finally {
          graph.dispose();
          for (const t of [q, k, v, dout]) t.dispose();
        }
      });
    }

    it("an input given new storage inside the step starts each replay from its current value (a running sum)", () => {
      const acc = tensor([1, 2, 3, 4]);
      const x = tensor([10, 20, 30, 40]);
      tidy(() => void add(acc, x).dataSync());
      const graph = captureGraph(() => {
        const next = add(acc, x);
        acc.assign(next);
        next.dispose();
      });
      try {
        // Recording ran nothing: acc still reads its value.
        expect(values(acc)).toEqual([1, 2, 3, 4]);
        graph.replay();
        expect(values(acc)).toEqual([11, 22, 33, 44]);
        graph.replay();
        graph.replay();
        expect(values(acc)).toEqual([31, 62, 93, 124]);
        tidy(() => acc.assign(tensor([0, 0, 0, 1])));
        graph.replay();
        expect(values(acc)).toEqual([10, 20, 30, 41]);
      } finally {
        graph.dispose();
        acc.dispose();
        x.dispose();
      }
    });

    it("cachedAttention writing a key/value cache in place: each replay appends at the position on the device and attends; a cache re-pointed between replays is read, then holds the write", () => {
      const [heads, n, d] = [2, 5, 4];
      const [k, v] = [random([heads, n, d], "float32"), random([heads, n, d], "float32")];
      const [q, newKeys, newValues] = [random([heads, 1, d], "float32"), random([heads, 1, d], "float32"), random([heads, 1, d], "float32")];
      const position = tensor([0], [1], "int32");
      const first = tensor([0], [1], "int32");
      const owned = [k, v, q, newKeys, newValues, position, first];
      const graph = captureGraph(() => {
        const out = cachedAttention(q, k, v, position, { newKeys, newValues });
        const next = add(position, 1);
        indexCopy(position, first, next);
        next.dispose();
        return out;
      });
      // The cache as it must be after a replay at `step`: row `step` of each head from the new keys or values.
      const appended = (before: number[], rows: number[], step: number) => {
        const out = before.slice();
        for (let h = 0; h < heads; h++) out.splice((h * n + step) * d, d, ...rows.slice(h * d, (h + 1) * d));
        return out;
      };
      try {
        for (let step = 0; step < 4; step++) {
          for (const t of [q, newKeys, newValues]) tidy(() => t.assign(random([...t.shape], "float32")));
          if (step === 3) tidy(() => k.assign(zeros([heads, n, d])));
          const [keys, vals] = [values(k), values(v)];
          const out = graph.replay();
          expect(values(position)).toEqual([step + 1]);
          expect(values(k)).toEqual(appended(keys, values(newKeys), step));
          expect(values(v)).toEqual(appended(vals, values(newValues), step));
          tidy(() => expect(values(out)).toEqual(values(cachedAttention(q, k, v, tensor([step], [1], "int32")))));
        }
      } finally {
        graph.dispose();
        graph.result.dispose();
        for (const t of owned) t.dispose();
      }
    });

    it("keeps what it reads alive until disposed, and leaves no buffer behind", () => {
      const before = memory().numBuffers;
      const x = tensor([1, 2, 3]);
      tidy(() => void mul(x, x).dataSync());
      const graph = captureGraph(() => mul(x, x));
      const y = graph.replay();
      expect(values(y)).toEqual([1, 4, 9]);
      // The graph holds x's buffer: disposing the tensor keeps it, a replay then says why it cannot run.
      x.dispose();
      expect(() => graph.replay()).toThrow(GraphError);
      expect(() => graph.replay()).toThrow(/input of the captured step \(\[3\] float32\) was disposed/);
      graph.dispose();
      expect(() => graph.replay()).toThrow(/disposed/);
      y.dispose();
      expect(memory().numBuffers).toBe(before);
    });

    it("refuses host transfers, optimizer updates and nested captures, keeping nothing of the failed capture", () => {
      const before = memory().numBuffers;
      const x = tensor([1, 2, 3, 4]);
      const grad = tensor([0.1, 0.2, 0.3, 0.4]);
      const m = tensor([0, 0, 0, 0]);
      const v = tensor([0, 0, 0, 0]);
      const attempts: [() => unknown, RegExp][] = [
        [() => mul(x, x).dataSync(), /dataSync moves data between host and device/],
        [() => add(x, tensor([1, 1, 1, 1])), /upload moves data between host and device/],
        [() => adamUpdate(x, grad, m, v, { lr: 0.1, step: 1 }), /AdamUpdate \(an optimizer update\) with its step count and learning rate on the host cannot be captured/],
        [
          () => multiTensorAdamUpdateInPlace([x], [grad], [m], [v], { lr: 0.1, steps: [1] }),
          /MultiTensorAdamUpdate \(an optimizer update\) with its step count .* \{ capturable: true \}/,
        ],
        [() => captureGraph(() => mul(x, 2)), /captures do not nest/],
      ];
      for (const [fn, message] of attempts) {
        expect(() => captureGraph(fn)).toThrow(GraphError);
        // The same step once more, to check the message (and that a failed capture leaves the next one possible).
        expect(() => captureGraph(fn)).toThrow(message);
      }
      // A capture after the failures works.
      const graph: CapturedGraph<Tensor> = captureGraph(() => mul(x, 2));
      expect(values(graph.replay())).toEqual([2, 4, 6, 8]);
      graph.replay().dispose();
      graph.dispose();
      for (const t of [x, grad, m, v]) t.dispose();
      expect(memory().numBuffers).toBe(before);
    });

    it("an in-place Adam update with its step counts and learning rate on the device: each replay takes one more step where the next reads", () => {
      const before = memory().numBuffers;
      const n = 300;
      const start = randn([n], { seed: 71 });
      const grad = randn([n], { seed: 72, std: 0.1 });
      const param = add(start, 0);
      const m = mul(start, 0);
      const v = mul(start, 0);
      const count = tensor([0], [1]);
      const lrValue = tensor([0.05], [1]);
      const options = { lr: 2, beta1: 0.9, beta2: 0.99, epsilon: 1e-8, weightDecay: 0.1, decoupledWeightDecay: true };
      const buffers = [param.dataId, m.dataId, v.dataId, count.dataId];
      const graph = captureGraph(() => multiTensorAdamUpdateInPlace([param], [grad], [m], [v], { ...options, steps: [count], lrValue }));
      try {
        // Recording ran nothing: the tensors hold what they held.
        expect(values(param)).toEqual(values(start));
        expect(values(count)).toEqual([0]);
        // The same steps eagerly, out of place, with the step numbers and learning rate on the host.
        const made: Tensor[] = [mul(start, 0), mul(start, 0)];
        let want = { params: [start], m: [made[0]], v: [made[1]] };
        const eager = (step: number, lr: number) => {
          const next = multiTensorAdamUpdate(want.params, [grad], want.m, want.v, { ...options, lr, steps: [step] });
          made.push(...next.params, ...next.m, ...next.v);
          want = { params: next.params, m: next.m, v: next.v };
        };
        // Within a float32 rounding or two: a device may raise beta to the step in its own way.
        const expectClose = (got: number[], expected: number[], tolerance: number) => {
          expect(got.length).toBe(expected.length);
          for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - expected[i])).toBeLessThanOrEqual(tolerance * (1 + Math.abs(expected[i])));
        };
        for (let step = 1; step <= 3; step++) {
          graph.replay();
          eager(step, 2 * Math.fround(0.05));
          expect(values(count)).toEqual([step]);
          expectClose(values(param), values(want.params[0]), 1e-6);
          expectClose(values(v), values(want.v[0]), 1e-6);
        }
        // A new learning rate written between replays is the one the next replay uses.
        const zero = tensor([0], [1]);
        lrValue.assign(zero);
        zero.dispose();
        const held = values(param);
        graph.replay();
        expect(values(param)).toEqual(held);
        expect(values(count)).toEqual([4]);
        // Everything was written in place: the tensors kept their buffers.
        expect([param.dataId, m.dataId, v.dataId, count.dataId]).toEqual(buffers);
        // A parameter given new values between replays (loaded weights): the next replay updates those, and the
        // tensor holds the update afterwards (not the values it was given).
        const loaded = mul(start, 0.5);
        param.assign(loaded);
        loaded.dispose();
        const lr = tensor([0.05], [1]);
        lrValue.assign(lr);
        lr.dispose();
        const half = mul(start, 0.5);
        const expectedNext = multiTensorAdamUpdate([half], [grad], [m], [v], { ...options, lr: 2 * Math.fround(0.05), steps: [5] });
        made.push(half, ...expectedNext.params, ...expectedNext.m, ...expectedNext.v);
        graph.replay();
        expect(values(count)).toEqual([5]);
        expectClose(values(param), values(expectedNext.params[0]), 1e-6);
        expect(param.dataId).toBe(buffers[0]);
        for (const t of made) t.dispose();
      } finally {
        graph.dispose();
        for (const t of [start, grad, param, m, v, count, lrValue]) t.dispose();
      }
      expect(memory().numBuffers).toBe(before);
    });

    it("a check added while recording (addReplayCheck) runs before each replay: what it throws stops the replay before anything runs", () => {
      const x = tensor([1, 2, 3]);
      tidy(() => void mul(x, 2).dataSync());
      let calls = 0;
      let refuse = false;
      const graph = captureGraph(() => {
        addReplayCheck(() => {
          calls++;
          if (refuse) throw new GraphError("not now");
        });
        return mul(x, 2);
      });
      try {
        // Recording does not call it; each replay does, first.
        expect(calls).toBe(0);
        expect(values(graph.replay())).toEqual([2, 4, 6]);
        tidy(() => x.assign(tensor([5, 5, 5])));
        refuse = true;
        expect(() => graph.replay()).toThrow("not now");
        // Nothing ran: the result holds the last replay's values.
        expect(values(graph.result)).toEqual([2, 4, 6]);
        refuse = false;
        expect(values(graph.replay())).toEqual([10, 10, 10]);
        expect(calls).toBe(3);
      } finally {
        graph.dispose();
        graph.result.dispose();
        x.dispose();
      }
      expect(() => addReplayCheck(() => undefined)).toThrow(GraphError);
      expect(() => addReplayCheck(() => undefined)).toThrow("addReplayCheck: no capture in progress");
      // A check that is not a function fails the capture.
      expect(() => captureGraph(() => addReplayCheck(3 as never))).toThrow("addReplayCheck: check must be a function");
    });

    it("a returned tensor disposed after capture stops replays with a GraphError", () => {
      const x = tensor([1, 2]);
      const graph = captureGraph(() => add(x, x));
      try {
        graph.replay().dispose();
        expect(() => graph.replay()).toThrow(/the step returned \(\[2\] float32\) was disposed/);
      } finally {
        graph.dispose();
        x.dispose();
      }
    });
  });
}

/** captureGraph where the backend has no graphs: a BackendError that names it. */
export function declareNoGraphTests(backendName: string): void {
  it(`captureGraph on ${backendName} (no graphs) throws a BackendError`, () => {
    const backend = getBackendInstance(backendName);
    expect(() => captureGraph(() => undefined, { backend })).toThrow(BackendError);
    expect(() => captureGraph(() => undefined, { backend })).toThrow(`backend '${backendName}' cannot record graphs`);
  });
}
