/** The optimizer family: AdamUpdate, MultiTensorAdamUpdate. */
import { FLOAT_DTYPES, type FloatDType, adamUpdate, cast, formatShape, multiTensorAdamUpdate } from "@blocksparse/core";
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
              inCase(`${label}: param`, () => expectValues(out.param, pRef, dtype, "elementwise", 2));
              inCase(`${label}: m`, () => expectValues(out.m, mRef, stateDType, "elementwise", 2));
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
            inCase(`${label}: param`, () => expectValues(out.params[i], ref.p, c.param, "elementwise", 2));
            inCase(`${label}: m`, () => expectValues(out.m[i], ref.m, c.state, "elementwise", 2));
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
}
