import { type FloatDType, type Tensor, abs, multiTensorAdamUpdate, tidy } from "@blocksparse/core";
import { beforeAll, describe, expect, test } from "vitest";
import type { CudaBackend } from "../src/index";
import { cudaMissing, expectClose, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("optimizer.test.ts");

describe.skipIf(cudaMissing)("cuda multi-tensor Adam", () => {
  let backend: CudaBackend;
  beforeAll(() => {
    backend = useCuda();
  });

  // More tensors than one launch carries (the kernel's parameters hold 24), empty ones among them,
  // sizes from 1 to over a CTA's share, each checked against the js backend on the same inputs.
  test("updates 61 tensors of mixed sizes and dtypes across several launches, as the js backend does", () => {
    const next = random(7);
    const gradDTypes: FloatDType[] = ["bfloat16", "float16", "float32"];
    const shapes = Array.from({ length: 61 }, (_, i) => (i % 10 === 3 ? [0] : [1 + Math.floor(next() * (i % 20 === 0 ? 40000 : 900))]));
    const inputs = shapes.map((shape, i) => ({
      param: randomTensor(next, shape, "float32").t,
      grad: randomTensor(next, shape, gradDTypes[i % 3]).t,
      m: randomTensor(next, shape, "float32", 0.1).t,
      v: randomTensor(next, shape, "float32", 0.01).t,
    }));
    for (const x of inputs) {
      // v must be non-negative.
      const v = tidy(() => abs(x.v));
      x.v.dispose();
      x.v = v;
    }
    const steps = shapes.map((_, i) => 1 + (i % 5) * 3);
    const options = { lr: 3e-3, weightDecay: 0.02, decoupledWeightDecay: true, steps, copyDType: "bfloat16" as const };
    const lists = (key: keyof (typeof inputs)[number], on: string) => inputs.map((x) => (on === "cuda" ? x[key] : x[key].to(on)));
    const onCuda = multiTensorAdamUpdate(lists("param", "cuda"), lists("grad", "cuda"), lists("m", "cuda"), lists("v", "cuda"), options);
    const js = { params: lists("param", "js"), grads: lists("grad", "js"), m: lists("m", "js"), v: lists("v", "js") };
    const onJs = multiTensorAdamUpdate(js.params, js.grads, js.m, js.v, options);
    for (const key of ["params", "m", "v", "copies"] as const) {
      const got = onCuda[key] as Tensor[];
      const want = onJs[key] as Tensor[];
      expect(got).toHaveLength(61);
      got.forEach((t, i) => {
        expect(t.backend.name).toBe("cuda");
        expect(t.dtype).toBe(want[i].dtype);
        expectClose(t.dataSync(), want[i].dataSync(), t.dtype === "float32" ? "float32" : "bfloat16", `${key}[${i}] ${shapes[i]}`);
      });
    }
    for (const t of [...Object.values(js).flat(), ...inputs.flatMap((x) => Object.values(x)), ...Object.values(onCuda).flat(), ...Object.values(onJs).flat()]) {
      if (t !== null) (t as Tensor).dispose();
    }
  }, 60_000);

  test("a disposed tensor in the list is refused by name, and nothing is allocated", () => {
    const next = random(8);
    const make = () => randomTensor(next, [16], "float32").t;
    const [p0, g0, m0, v0, p1, g1, m1, v1] = Array.from({ length: 8 }, make);
    g1.dispose();
    const buffersBefore = backend.memory().buffers;
    expect(() => multiTensorAdamUpdate([p0, p1], [g0, g1], [m0, m1], [v0, v1], { lr: 0.1, steps: [1, 1] })).toThrow(/grads\[1\].*disposed/);
    expect(backend.memory().buffers).toBe(buffersBefore);
    for (const t of [p0, g0, m0, v0, p1, m1, v1]) t.dispose();
  });
});
