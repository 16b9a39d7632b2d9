/** The optimizer family: AdamUpdate. */
import { FLOAT_DTYPES, adamUpdate, formatShape } from "@blocksparse/core";
import { describe } from "vitest";
import { type Conformance, expectValues, inCase, makeInput } from "./harness";
import * as R from "./reference";

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
              const beta1 = 0.9;
              const beta2 = 0.999;
              const epsilon = 1e-8;
              const mRef = R.ref(shape);
              const vRef = R.ref(shape);
              const pRef = R.ref(shape, (i) => {
                const p = param.ref.data[i];
                const g = grad.ref.data[i] + (s.decoupledWeightDecay ? 0 : s.weightDecay * p);
                const mi = beta1 * m.ref.data[i] + (1 - beta1) * g;
                const vi = beta2 * v.ref.data[i] + (1 - beta2) * g * g;
                mRef.data[i] = mi;
                vRef.data[i] = vi;
                const decayed = s.decoupledWeightDecay ? p * (1 - s.lr * s.weightDecay) : p;
                return decayed - (s.lr * (mi / (1 - beta1 ** s.step))) / (Math.sqrt(vi / (1 - beta2 ** s.step)) + epsilon);
              });
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
}
