/** The optimizer family: AdamUpdate, MultiTensorAdamUpdate. */
import { FLOAT_DTYPES, type FloatDType, type Tensor, adamUpdate, cast, formatShape, multiTensorAdamUpdate, multiTensorAdamUpdateInPlace, tensor } from "@blocksparse/core";
import { describe } from "vitest";
import { type Conformance, expectValues, inCase, makeInput } from "./harness";
import * as R from "./reference";

interface AdamSetting {
  lr: number;
  weightDecay: number;
  decoupledWeightDecay: boolean;
  step: number;
}
const beta1 = 0.9;
const beta2 = 0.999;
const epsilon = 1e-8;
// The new param (p - lr m / (sqrt(v) + eps)) and m (beta1 m + (1 - beta1) g) are sums whose terms can cancel: their
// rounding error scales with the terms, about the tensor's magnitude, not with the result (a param that lands near 0
// carries the error of its operands). v's terms are all positive: elementwise.
const DIFFERENCE = "scaled";

/** torch.optim.Adam / AdamW's step in float64: the new param, m and v. */
function adamReference(param: R.Ref, grad: R.Ref, m: R.Ref, v: R.Ref, s: AdamSetting): { p: R.Ref; m: R.Ref; v: R.Ref } {
  const mRef = R.ref(param.shape);
  const vRef = R.ref(param.shape);
  const pRef = R.ref(param.shape, (i) => {
    const p = param.data[i];
    const g = grad.data[i] + (s.decoupledWeightDecay ? 0 : s.weightDecay * p);
    const mi = beta1 * m.data[i] + (1 - beta1) * g;
    const vi = beta2 * v.data[i] + (1 - beta2) * g * g;
    mRef.data[i] = mi;
    vRef.data[i] = vi;
    const decayed = s.decoupledWeightDecay ? p * (1 - s.lr * s.weightDecay) : p;
    return decayed - (s.lr * (mi / (1 - beta1 ** s.step))) / (Math.sqrt(vi / (1 - beta2 ** s.step)) + epsilon);
  });
  return { p: pRef, m: mRef, v: vRef };
}

export function declareOptimizerTests(suite: Conformance): void {
  const { check, rng } = suite;

  describe("adamUpdate", () => {
    const settings = [
      { lr: 1e-2, weightDecay: 0, decoupledWeightDecay: false, step: 1 },
      { lr: 3e-3, weightDecay: 0.1, decoupledWeightDecay: false, step: 7 },
      { lr: 1e-3, weightDecay: 0.01, decoupledWeightDecay: true, step: 1000 },
    ];
    for (const dtype of FLOAT_DTYPES) {
      for (const stateDType of dtype === "float32" ? (["float32"] as const) : ([dtype, "float32"] as const)) {
        check(`AdamUpdate param ${dtype}, state ${stateDType}`, () => {
          for (const s of settings) {
            for (const shape of [[5, 7], [0], [1]]) {
              const label = `AdamUpdate param ${dtype}, state ${stateDType}, ${formatShape(shape)}, lr ${s.lr}, weightDecay ${s.weightDecay}${s.decoupledWeightDecay ? " decoupled" : ""}, step ${s.step}`;
              const param = makeInput(rng(), shape, dtype);
              const grad = makeInput(rng(), shape, dtype);
              const m = makeInput(rng(), shape, stateDType, "uniform");
              const v = makeInput(rng(), shape, stateDType, "positive");
              const { p: pRef, m: mRef, v: vRef } = adamReference(param.ref, grad.ref, m.ref, v.ref, s);
              const out = adamUpdate(param.t, grad.t, m.t, v.t, { ...s, beta1, beta2, epsilon });
              inCase(`${label}: param`, () => expectValues(out.param, pRef, dtype, DIFFERENCE, 2));
              inCase(`${label}: m`, () => expectValues(out.m, mRef, stateDType, DIFFERENCE, 2));
              inCase(`${label}: v`, () => expectValues(out.v, vRef, stateDType, "elementwise", 2));
            }
          }
        });
      }
    }
  });

  describe("multiTensorAdamUpdate", () => {
    // Each list mixes shapes (an empty one too), settings and steps; the gradients' dtype may differ
    // from the params' (a float32 master with a half gradient), and copies come back in copyDType.
    const cases: { param: FloatDType; grad: FloatDType; state: FloatDType; copy: FloatDType | null }[] = [
      { param: "float32", grad: "float32", state: "float32", copy: null },
      { param: "float32", grad: "bfloat16", state: "float32", copy: "bfloat16" },
      { param: "float32", grad: "float16", state: "float32", copy: "float16" },
      { param: "bfloat16", grad: "bfloat16", state: "float32", copy: null },
      { param: "float16", grad: "float32", state: "float16", copy: "float32" },
    ];
    const shapes = [[33, 65], [0], [1], [4, 32, 32], [1000]];
    const settings: AdamSetting[] = [
      { lr: 1e-2, weightDecay: 0, decoupledWeightDecay: false, step: 1 },
      { lr: 3e-3, weightDecay: 0.1, decoupledWeightDecay: false, step: 7 },
      { lr: 1e-3, weightDecay: 0.01, decoupledWeightDecay: true, step: 1000 },
    ];
    for (const c of cases) {
      const name = `MultiTensorAdamUpdate param ${c.param}, grad ${c.grad}, state ${c.state}, copy ${c.copy ?? "none"}`;
      check(name, () => {
        for (const s of settings) {
          const steps = shapes.map((_, i) => s.step + i);
          const inputs = shapes.map((shape) => ({
            param: makeInput(rng(), shape, c.param),
            grad: makeInput(rng(), shape, c.grad),
            m: makeInput(rng(), shape, c.state, "uniform"),
            v: makeInput(rng(), shape, c.state, "positive"),
          }));
          const out = multiTensorAdamUpdate(
            inputs.map((x) => x.param.t),
            inputs.map((x) => x.grad.t),
            inputs.map((x) => x.m.t),
            inputs.map((x) => x.v.t),
            { lr: s.lr, beta1, beta2, epsilon, weightDecay: s.weightDecay, decoupledWeightDecay: s.decoupledWeightDecay, steps, copyDType: c.copy },
          );
          inCase(`${name}: ${shapes.length} of each output`, () => {
            for (const list of [out.params, out.m, out.v, ...(c.copy === null ? [] : [out.copies ?? []])]) {
              if (list.length !== shapes.length) throw new Error(`expected ${shapes.length} outputs, got ${list.length}`);
            }
            if (c.copy === null && out.copies !== null) throw new Error("copies returned without copyDType");
          });
          inputs.forEach((x, i) => {
            const label = `${name}, tensor ${i} ${formatShape(shapes[i])}, lr ${s.lr}, weightDecay ${s.weightDecay}${s.decoupledWeightDecay ? " decoupled" : ""}, step ${steps[i]}`;
            const ref = adamReference(x.param.ref, x.grad.ref, x.m.ref, x.v.ref, { ...s, step: steps[i] });
            inCase(`${label}: param`, () => expectValues(out.params[i], ref.p, c.param, DIFFERENCE, 2));
            inCase(`${label}: m`, () => expectValues(out.m[i], ref.m, c.state, DIFFERENCE, 2));
            inCase(`${label}: v`, () => expectValues(out.v[i], ref.v, c.state, "elementwise", 2));
            if (c.copy !== null) {
              const copies = out.copies ?? [];
              inCase(`${label}: copy`, () => {
                if (copies[i].dtype !== c.copy) throw new Error(`copy has dtype ${copies[i].dtype}, expected ${c.copy}`);
                // The copy is the stored param rounded again: exactly a cast of it.
                const stored = cast(out.params[i], c.copy as FloatDType);
                const want = stored.dataSync();
                const same = copies[i].dataSync().every((value, k) => Object.is(value, want[k]));
                stored.dispose();
                if (!same) throw new Error("the copy differs from a cast of the new param");
              });
            }
          });
        }
      });
    }
  });

  describe("multiTensorAdamUpdateInPlace", () => {
    // The in-place update gives exactly the out-of-place results: written into the tensors' own buffers when
    // nothing shares them, assigned (sharers keep the old values) when something does.
    const cases: { param: FloatDType; grad: FloatDType; copy: FloatDType | null }[] = [
      { param: "float32", grad: "float32", copy: null },
      { param: "float32", grad: "bfloat16", copy: "bfloat16" },
      { param: "float32", grad: "float16", copy: "float16" },
      { param: "bfloat16", grad: "bfloat16", copy: null },
    ];
    const shapes = [[33, 65], [0], [4, 32, 32], [1000]];
    const fresh = (t: Tensor): Tensor => tensor(t.dataSync(), t.shape, t.dtype);
    const bits = (t: Tensor): number[] => Array.from(t.dataSync());
    for (const c of cases) {
      for (const shared of [false, true]) {
        const name = `MultiTensorAdamUpdateInPlace param ${c.param}, grad ${c.grad}, copy ${c.copy ?? "none"}${shared ? ", a clone of each param kept" : ""}`;
        check(name, () => {
          const steps = shapes.map((_, i) => 3 + i);
          const options = { lr: 3e-3, beta1, beta2, epsilon, weightDecay: 0.01, decoupledWeightDecay: true, steps, copyDType: c.copy };
          const inputs = shapes.map((shape) => ({
            param: makeInput(rng(), shape, c.param).t,
            grad: makeInput(rng(), shape, c.grad).t,
            m: makeInput(rng(), shape, "float32", "uniform").t,
            v: makeInput(rng(), shape, "float32", "positive").t,
            copy: c.copy === null ? null : makeInput(rng(), shape, c.copy).t,
          }));
          const want = multiTensorAdamUpdate(
            inputs.map((x) => x.param),
            inputs.map((x) => x.grad),
            inputs.map((x) => x.m),
            inputs.map((x) => x.v),
            options,
          );
          const targets = inputs.map((x) => ({ param: fresh(x.param), m: fresh(x.m), v: fresh(x.v), copy: x.copy === null ? null : fresh(x.copy) }));
          const kept = shared ? targets.map((t) => ({ clone: t.param.clone(), before: bits(t.param) })) : [];
          const buffers = targets.map((t) => [t.param.dataId, t.m.dataId, t.v.dataId, t.copy?.dataId]);
          multiTensorAdamUpdateInPlace(
            targets.map((t) => t.param),
            inputs.map((x) => x.grad),
            targets.map((t) => t.m),
            targets.map((t) => t.v),
            { ...options, copies: c.copy === null ? null : targets.map((t) => t.copy as Tensor) },
          );
          targets.forEach((t, i) => {
            const label = `${name}, tensor ${i} ${formatShape(shapes[i])}`;
            const pairs: [string, Tensor, Tensor][] = [
              ["param", t.param, want.params[i]],
              ["m", t.m, want.m[i]],
              ["v", t.v, want.v[i]],
            ];
            if (t.copy !== null) pairs.push(["copy", t.copy, (want.copies as Tensor[])[i]]);
            for (const [what, got, expected] of pairs) {
              inCase(`${label}: ${what}`, () => {
                const a = bits(got);
                const b = bits(expected);
                if (got.dtype !== expected.dtype || a.length !== b.length || a.some((x, k) => !Object.is(x, b[k]))) {
                  throw new Error(`${what} differs from multiTensorAdamUpdate's result`);
                }
              });
            }
            inCase(`${label}: buffers`, () => {
              const [param, m, v, copy] = buffers[i];
              // Nothing shared: every tensor keeps its buffer. A kept clone: the param moved to a new buffer.
              if (t.m.dataId !== m || t.v.dataId !== v || (t.copy !== null && t.copy.dataId !== copy)) {
                if (!shared) throw new Error("a state tensor was given a new buffer although nothing shares it");
              }
              if (shared ? t.param.dataId === param : t.param.dataId !== param) {
                throw new Error(shared ? "the shared param was written in place" : "the param was given a new buffer although nothing shares it");
              }
              if (shared) {
                const after = bits(kept[i].clone);
                if (after.some((x, k) => !Object.is(x, kept[i].before[k]))) throw new Error("the clone of the param changed");
              }
            });
          });
        });
      }
    }
  });

  describe("multiTensorAdamUpdate with the step counts and learning rate on the device", () => {
    // Step counts as float32 scalars (the steps taken so far: the update uses count + 1 and returns or writes
    // the new counts) and the learning rate as lr x a float32 scalar, read when the kernel runs: what a
    // captured training step needs. Checked against the float64 reference at the same steps and learning rate.
    const shapes = [[33, 65], [0], [4, 32, 32], [1000]];
    const scale = 2.5;
    const base = 3e-3;
    const lr = scale * Math.fround(base);
    for (const c of [
      { param: "float32", grad: "bfloat16", copy: "bfloat16" },
      { param: "float32", grad: "float32", copy: null },
      { param: "float16", grad: "float16", copy: null },
    ] as { param: FloatDType; grad: FloatDType; copy: FloatDType | null }[]) {
      for (const inPlace of [false, true]) {
        const name = `MultiTensorAdamUpdate${inPlace ? "InPlace" : ""} with device step counts and lr, param ${c.param}, grad ${c.grad}, copy ${c.copy ?? "none"}`;
        check(name, () => {
          const done = shapes.map((_, i) => 6 * i);
          const inputs = shapes.map((shape) => ({
            param: makeInput(rng(), shape, c.param),
            grad: makeInput(rng(), shape, c.grad),
            m: makeInput(rng(), shape, "float32", "uniform"),
            v: makeInput(rng(), shape, "float32", "positive"),
          }));
          const counts = done.map((k) => tensor([k], [1], "float32"));
          const lrValue = tensor([base], [], "float32");
          const options = { lr: scale, lrValue, beta1, beta2, epsilon, weightDecay: 0.01, decoupledWeightDecay: true, steps: counts, copyDType: c.copy };
          let got: { params: Tensor[]; m: Tensor[]; v: Tensor[]; copies: Tensor[] | null; steps: Tensor[] };
          if (inPlace) {
            const params = inputs.map((x) => x.param.t);
            const m = inputs.map((x) => x.m.t);
            const v = inputs.map((x) => x.v.t);
            const copies = c.copy === null ? null : shapes.map((shape) => makeInput(rng(), shape, c.copy as FloatDType).t);
            multiTensorAdamUpdateInPlace(params, inputs.map((x) => x.grad.t), m, v, { ...options, copies });
            got = { params, m, v, copies, steps: counts };
          } else {
            const out = multiTensorAdamUpdate(inputs.map((x) => x.param.t), inputs.map((x) => x.grad.t), inputs.map((x) => x.m.t), inputs.map((x) => x.v.t), options);
            inCase(`${name}: the input counts are unchanged`, () => {
              counts.forEach((t, i) => {
                if (t.dataSync()[0] !== done[i]) throw new Error(`count ${i} became ${t.dataSync()[0]}, expected ${done[i]} (out of place)`);
              });
            });
            got = { ...out, steps: out.steps ?? [] };
          }
          inCase(`${name}: the new counts`, () => {
            if (got.steps.length !== shapes.length) throw new Error(`expected ${shapes.length} new counts, got ${got.steps.length}`);
            got.steps.forEach((t, i) => {
              if (t.dtype !== "float32" || t.dataSync()[0] !== done[i] + 1) throw new Error(`count ${i} is ${t.dtype} ${t.dataSync()[0]}, expected float32 ${done[i] + 1}`);
            });
          });
          inputs.forEach((x, i) => {
            const label = `${name}, tensor ${i} ${formatShape(shapes[i])}, step ${done[i] + 1}`;
            const ref = adamReference(x.param.ref, x.grad.ref, x.m.ref, x.v.ref, { lr, weightDecay: 0.01, decoupledWeightDecay: true, step: done[i] + 1 });
            inCase(`${label}: param`, () => expectValues(got.params[i], ref.p, c.param, DIFFERENCE, 2));
            inCase(`${label}: m`, () => expectValues(got.m[i], ref.m, "float32", DIFFERENCE, 2));
            inCase(`${label}: v`, () => expectValues(got.v[i], ref.v, "float32", "elementwise", 2));
            if (c.copy !== null) inCase(`${label}: copy`, () => expectValues((got.copies as Tensor[])[i], ref.p, c.copy as FloatDType, "elementwise", 2));
          });
        });
      }
    }
  });
}
