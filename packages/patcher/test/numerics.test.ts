import { backward } from "@blocksparse/autograd";
import { getBackendInstance, tensor, tidy } from "@blocksparse/core";
import { BlockSparseLinear, Linear, type Module, ReLU, SGD, Sequential, TransformerBlock, mseLoss, parameterCount } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { beforeAll, describe, expect, it } from "vitest";
import { TinyNet, asBlockSparse, maskedLinearReference, maxAbsDiff, projectedLoss, seededTensor, seededValues, strongestBlockMask } from "./helpers";

// Unwritten output elements of the js backend read as NaN, so they fail every comparison.
beforeAll(() => {
  getBackendInstance("js").poisonAllocations = true;
});

function linearAt(model: Module, name: string): Linear | BlockSparseLinear {
  const found = model.namedModules().find(([n]) => n === name);
  if (!found || !(found[1] instanceof Linear || found[1] instanceof BlockSparseLinear)) throw new Error(`no layer ${name}`);
  return found[1];
}

const patcher = () =>
  new BlockSparseModelPatcher()
    .addPattern(/^blocks\.\d+\.fc1$/, { density: 0.25, blockShape: [8, 4] })
    .addPattern(/^blocks\.1\.fc2$/, { density: 0.5, blockShape: [4, 8] })
    .addPattern("head", { density: 0.6, blockShape: [2, 8] });

describe("a patched model", () => {
  it("has exactly the expected number of parameters, as the dry run said", () => {
    const model = new TinyNet(5);
    // Dense: fc1 16->32 with bias (544), fc2 32->16 without (512), twice; head 16->8 with bias (136).
    expect(parameterCount(model)).toBe(2 * (544 + 512) + 136);
    const dry = patcher().patchModel(model, { dryRun: true });
    expect(model.namedModules().some(([, m]) => m instanceof BlockSparseLinear)).toBe(false);
    const report = patcher().patchModel(model);
    // fc1: 16 blocks of 8x4, 4 kept -> 128 + bias 32; blocks.1.fc2: 16 blocks of 4x8, 8 kept -> 256;
    // head: 8 blocks of 2x8, round(4.8) = 5 kept -> 80 + bias 8; blocks.0.fc2 stays dense (512).
    const expected = 2 * (128 + 32) + 512 + 256 + (80 + 8);
    expect(parameterCount(model)).toBe(expected);
    expect(report.totals.modelParamsAfter).toBe(expected);
    expect(dry.totals).toEqual(report.totals);
    expect(dry.layers).toEqual(report.layers);
    for (const layer of report.layers) {
      const patched = asBlockSparse(linearAt(model, layer.name), layer.name);
      expect(patched.nnzBlocks, layer.name).toBe(layer.keptBlocks);
      expect(patched.blockShape, layer.name).toEqual(layer.blockShape);
    }
  });

  it("computes, per layer, x (mask * W)^T + b with the mask keeping W's strongest blocks (float64 reference)", () => {
    const model = new TinyNet(7);
    const originals = new Map(
      model.namedModules().flatMap(([name, m]) => (m instanceof Linear ? [[name, { weight: Float32Array.from(m.weight.value.dataSync()), bias: m.bias ? Float32Array.from(m.bias.value.dataSync()) : null }]] : [])),
    );
    const report = patcher().patchModel(model);
    expect(report.layers).toHaveLength(4);
    for (const [k, layer] of report.layers.entries()) {
      const original = originals.get(layer.name)!;
      const mask = strongestBlockMask(original.weight, layer.shape, layer.blockShape, layer.keptBlocks);
      const rows = 5;
      const x = seededValues(rows * layer.shape[1], 100 + k);
      const expected = maskedLinearReference(x, original.weight, mask, original.bias, rows, layer.shape);
      const got = tidy(() => linearAt(model, layer.name).forward(tensor(x, [rows, layer.shape[1]])).dataSync());
      expect(got.length, layer.name).toBe(rows * layer.shape[0]);
      expect(maxAbsDiff(got, expected), layer.name).toBeLessThan(1e-5);
    }
  });

  it("gives the same output as the dense model with each patched weight masked", () => {
    const model = new TinyNet(9);
    const twin = new TinyNet(9);
    const report = patcher().patchModel(model);
    for (const layer of report.layers) {
      const dense = linearAt(twin, layer.name) as Linear;
      const mask = strongestBlockMask(Float32Array.from(dense.weight.value.dataSync()), layer.shape, layer.blockShape, layer.keptBlocks);
      const masked = Float32Array.from(dense.weight.value.dataSync(), (w, i) => w * mask[i]);
      tidy(() => dense.weight.assign(tensor(masked, layer.shape)));
    }
    const x = seededTensor([3, 4, 16], 11);
    const [got, expected] = tidy(() => [model.forward(x).dataSync(), twin.forward(x).dataSync()]);
    expect(got.length).toBe(3 * 4 * 8);
    expect(maxAbsDiff(got, expected)).toBeLessThan(1e-5);
    x.dispose();
  });

  it("trains: backward reaches the block values with dW = dY^T X on the kept blocks (float64 reference)", () => {
    const model = new TinyNet(13);
    new BlockSparseModelPatcher().addPattern("head", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    const head = asBlockSparse(model.head, "head");
    const rows = 6;
    const xValues = seededValues(rows * 16, 21);
    const rValues = seededValues(rows * 8, 22);
    tidy(() => backward(projectedLoss(head.forward(tensor(xValues, [rows, 16])), tensor(rValues, [rows, 8]))));
    const grad = head.weight.grad;
    expect(grad).not.toBeNull();
    expect(grad!.shape).toEqual([head.nnzBlocks, 4, 4]);
    const gradValues = grad!.dataSync();
    // d sum(Y * R) / dW = R^T X, read at each stored block's place.
    const expected = new Float64Array(head.nnzBlocks * 16);
    const { blockRow, blockCol } = head.pattern.coordinates;
    for (let k = 0; k < head.nnzBlocks; k++) {
      for (let i = 0; i < 4; i++) {
        for (let j = 0; j < 4; j++) {
          let acc = 0;
          for (let t = 0; t < rows; t++) acc += rValues[t * 8 + blockRow[k] * 4 + i] * xValues[t * 16 + blockCol[k] * 4 + j];
          expected[k * 16 + i * 4 + j] = acc;
        }
      }
    }
    expect(maxAbsDiff(gradValues, expected)).toBeLessThan(1e-5);
    const biasGrad = head.bias!.grad!.dataSync();
    const expectedBias = Array.from({ length: 8 }, (_, o) => Array.from({ length: rows }, (_, t) => rValues[t * 8 + o]).reduce((a, b) => a + b, 0));
    expect(maxAbsDiff(biasGrad, expectedBias)).toBeLessThan(1e-5);
  });

  it("fits a fixed batch with SGD after patching (the loss falls, the block values move)", () => {
    const model = new Sequential(new Linear(16, 32, { seed: 1 }), new ReLU(), new Linear(32, 8, { seed: 2 }));
    new BlockSparseModelPatcher().addPattern("0|2", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    const first = asBlockSparse(model.at(0), "0");
    const initialValues = Float32Array.from(first.weight.value.dataSync());
    const x = seededTensor([16, 16], 31);
    const target = seededTensor([16, 8], 32);
    const optimizer = new SGD(model.parameters(), { lr: 1 });
    const losses: number[] = [];
    for (let step = 0; step < 40; step++) {
      optimizer.zeroGrad();
      losses.push(
        tidy(() => {
          const loss = mseLoss(model.forward(x), target);
          backward(loss);
          return loss.dataSync()[0];
        }),
      );
      optimizer.step();
    }
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses[losses.length - 1]).toBeLessThan(0.5 * losses[0]);
    expect(maxAbsDiff(first.weight.value.dataSync(), initialValues)).toBeGreaterThan(1e-3);
    x.dispose();
    target.dispose();
  });

  it("patches a transformer's feed-forward layers by regex: same output as the masked dense model, gradients on every block", () => {
    const build = () => new Sequential(new TransformerBlock({ dModel: 32, nHeads: 4, mlpRatio: 2, seed: 41 }), new TransformerBlock({ dModel: 32, nHeads: 4, mlpRatio: 2, seed: 42 }));
    const model = build();
    const twin = build();
    const report = new BlockSparseModelPatcher().addPattern(/\.mlp\.fc[12]$/, { density: 0.5, blockShape: [16, 16] }).patchModel(model);
    expect(report.layers.map((l) => l.name)).toEqual(["0.mlp.fc1", "0.mlp.fc2", "1.mlp.fc1", "1.mlp.fc2"]);
    expect(new BlockSparseModelPatcher().getPatchableLayers(model).map((l) => l.name)).toEqual(["0.attn.qkv", "0.attn.proj", "1.attn.qkv", "1.attn.proj"]);
    for (const layer of report.layers) {
      const dense = linearAt(twin, layer.name) as Linear;
      const weight = Float32Array.from(dense.weight.value.dataSync());
      const mask = strongestBlockMask(weight, layer.shape, layer.blockShape, layer.keptBlocks);
      tidy(() => dense.weight.assign(tensor(Float32Array.from(weight, (w, i) => w * mask[i]), layer.shape)));
    }
    const x = seededTensor([2, 5, 32], 43);
    const [got, expected] = tidy(() => [model.forward(x).dataSync(), twin.forward(x).dataSync()]);
    expect(got.length).toBe(2 * 5 * 32);
    expect(maxAbsDiff(got, expected)).toBeLessThan(1e-4);
    tidy(() => backward(projectedLoss(model.forward(x), seededTensor([2, 5, 32], 44))));
    for (const layer of report.layers) {
      const grad = asBlockSparse(linearAt(model, layer.name), layer.name).weight.grad;
      expect(grad?.shape, layer.name).toEqual([layer.keptBlocks, 16, 16]);
      expect(maxAbsDiff(grad!.dataSync(), new Float32Array(grad!.size)), layer.name).toBeGreaterThan(0);
    }
    x.dispose();
  });
});

describe("a replacement keeps what the dense layer had", () => {
  it("its kept blocks bit for bit, its dtype (float32, bfloat16, float16 after .to()), backend, and frozen parameters frozen", () => {
    for (const dtype of ["float32", "bfloat16", "float16"] as const) {
      const model = new TinyNet();
      model.to(dtype);
      linearAt(model, "blocks.0.fc1").weight.requiresGrad = false;
      linearAt(model, "head").bias!.requiresGrad = false;
      const dense = new Map(model.namedModules().flatMap(([name, m]) => (m instanceof Linear ? [[name, { weight: m.weight.value.dataSync().slice(), bias: m.bias!, module: m }]] : [])));
      const report = patcher().patchModel(model);
      for (const layer of report.layers) {
        const patched = asBlockSparse(linearAt(model, layer.name), layer.name);
        const before = dense.get(layer.name)!;
        expect([patched.weight.dtype, patched.weight.value.backend]).toEqual([dtype, before.module.weight.value.backend]);
        expect(patched.weight.requiresGrad).toBe(before.module.weight.requiresGrad);
        expect(patched.bias?.requiresGrad).toBe(before.bias?.requiresGrad);
        expect(patched.bias?.dtype).toBe(before.bias === null ? undefined : dtype);
        // Each stored value is the dense weight's at its place, compared as bits (Object.is tells -0 from 0).
        const [r, c] = layer.blockShape;
        const values = patched.weight.value.dataSync();
        const { blockRow, blockCol } = patched.pattern.coordinates;
        for (let k = 0; k < patched.nnzBlocks; k++) {
          for (let i = 0; i < r * c; i++) {
            const at = (blockRow[k] * r + Math.floor(i / c)) * layer.shape[1] + blockCol[k] * c + (i % c);
            if (!Object.is(values[k * r * c + i], before.weight[at])) throw new Error(`${dtype} ${layer.name}: block ${k} element ${i} is ${values[k * r * c + i]}, dense ${before.weight[at]}`);
          }
        }
      }
      expect(asBlockSparse(linearAt(model, "blocks.0.fc1"), "fc1").weight.requiresGrad).toBe(false);
      expect(asBlockSparse(linearAt(model, "head"), "head").bias!.requiresGrad).toBe(false);
    }
  });
});
