import { gradcheck } from "@blocksparse/autograd";
import { BsrPattern, cast, DTypeError, randint, randn, ShapeError, tensor, ValueError } from "@blocksparse/core";
import { BlockSparseLinear, functionalCall, GELU, Linear, ReLU, Sequential } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff } from "./helpers";

/** y[n, o] = sum_i x[n, i] w[o, i] + b[o] in float64. */
function linearReference(x: Float64Array, w: Float64Array, b: Float64Array | null, n: number, inF: number, outF: number): Float64Array {
  const y = new Float64Array(n * outF);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < outF; o++) {
      let acc = b ? b[o] : 0;
      for (let i = 0; i < inF; i++) acc += x[r * inF + i] * w[o * inF + i];
      y[r * outF + o] = acc;
    }
  }
  return y;
}

/** The dense [rows, cols] weight of a pattern and its blocks, from the pattern's coordinates. */
function densify(pattern: BsrPattern, values: Float64Array): Float64Array {
  const [rows, cols] = pattern.shape;
  const [bh, bw] = pattern.blockShape;
  const dense = new Float64Array(rows * cols);
  const { blockRow, blockCol } = pattern.coordinates;
  for (let k = 0; k < pattern.nnzBlocks; k++) {
    for (let r = 0; r < bh; r++) {
      for (let c = 0; c < bw; c++) dense[(blockRow[k] * bh + r) * cols + blockCol[k] * bw + c] = values[(k * bh + r) * bw + c];
    }
  }
  return dense;
}

describe("Linear", () => {
  it("computes x W^T + b on inputs of any leading shape, weight [out, in]", () => {
    const layer = new Linear(6, 5, { seed: 1 });
    expect(layer.weight.shape).toEqual([5, 6]);
    expect(layer.bias?.shape).toEqual([5]);
    const x = randn([2, 3, 6], { seed: 2 });
    const y = layer.forward(x);
    expect(y.shape).toEqual([2, 3, 5]);
    const expected = linearReference(host(x), host(layer.weight.value), host(layer.bias!.value), 6, 6, 5);
    expect(maxAbsDiff(host(y), expected)).toBeLessThan(1e-5);
  });

  it("initialises like PyTorch: weight and bias in +-1/sqrt(in), spread over the range", () => {
    const layer = new Linear(64, 128, { seed: 3 });
    const bound = 1 / 8;
    for (const values of [host(layer.weight.value), host(layer.bias!.value)]) {
      expect(Math.max(...values)).toBeLessThanOrEqual(bound);
      expect(Math.min(...values)).toBeGreaterThanOrEqual(-bound);
      expect(Math.max(...values)).toBeGreaterThan(bound * 0.9);
    }
    const w = host(layer.weight.value);
    const variance = w.reduce((a, v) => a + v * v, 0) / w.length;
    expect(variance).toBeCloseTo(bound ** 2 / 3, 3);
    expect(new Linear(4, 2, { bias: false }).bias).toBeNull();
    expect(host(new Linear(4, 2, { seed: 7 }).weight.value)).toEqual(host(new Linear(4, 2, { seed: 7 }).weight.value));
  });

  it("names the layer and the features in a wrong-input error", () => {
    const model = new Sequential(new Linear(8, 4));
    model.namedModules();
    expect(() => model.forward(randn([2, 7]))).toThrow(ShapeError);
    expect(() => model.forward(randn([2, 7]))).toThrow("Linear(0): input has 7 features, expected 8");
    expect(() => new Linear(0, 3)).toThrow(ValueError);
  });
});

describe("an input of another dtype than the layer's weight", () => {
  it("is a DTypeError naming the layer and the cast, in every forward of Linear and BlockSparseLinear", () => {
    const model = new Sequential(
      new Linear(8, 16),
      new Sequential(new BlockSparseLinear(16, 16, { density: 0.5, blockShape: [8, 8] }), new ReLU()),
      new Linear(16, 4),
    ).to("bfloat16");
    model.namedModules();
    const x = randn([2, 8], { seed: 1 });
    // Core named only its kernel ("linear: weight has dtype bfloat16 but x has float32"), not which layer of a model.
    expect(() => model.forward(x)).toThrow(DTypeError);
    expect(() => model.forward(x)).toThrow(`Linear(0): input has dtype float32 but the layer's weight has bfloat16: cast the input (cast(x, "bfloat16")), or the layer (module.to("float32"))`);
    const hidden = randn([2, 16], { seed: 2 });
    const sparse = model.getSubmodule("1.0") as BlockSparseLinear;
    const expected = `BlockSparseLinear(1.0): input has dtype float32 but the layer's weight has bfloat16`;
    expect(() => sparse.forward(hidden)).toThrow(expected);
    expect(() => sparse.forwardActivation(hidden, "relu")).toThrow(expected);
    expect(() => sparse.forwardResidual(hidden, cast(hidden, "bfloat16"))).toThrow(expected);
    const head = model.getSubmodule("2") as Linear;
    expect(() => head.forwardResidual(hidden, randn([2, 4]))).toThrow("Linear(2): input has dtype float32");
    expect(() => head.forwardActivation(hidden, "gelu")).toThrow("Linear(2): input has dtype float32");
    // Token ids fed to a Linear: no layer dtype to suggest.
    expect(() => model.forward(randint(0, 4, [2, 8], { seed: 3 }))).toThrow(/^Linear\(0\): input has dtype int32 but the layer's weight has bfloat16: cast the input \(cast\(x, "bfloat16"\)\)$/);
    // Cast, it runs.
    expect(model.forward(cast(x, "bfloat16")).dtype).toBe("bfloat16");
    for (const t of [x, hidden]) t.dispose();
  });
});

describe("BlockSparseLinear", () => {
  it("computes x W^T + b with W zero outside its blocks, on any leading shape", () => {
    const layer = new BlockSparseLinear(16, 12, { density: 0.5, blockShape: [4, 8], seed: 4 });
    expect(layer.nnzBlocks).toBe(3);
    expect(layer.weight.shape).toEqual([3, 4, 8]);
    expect(layer.density).toBe(0.5);
    const x = randn([3, 2, 16], { seed: 5 });
    const y = layer.forward(x);
    expect(y.shape).toEqual([3, 2, 12]);
    const dense = densify(layer.pattern, host(layer.weight.value));
    expect(maxAbsDiff(host(layer.toDense()), dense)).toBe(0);
    expect(maxAbsDiff(host(y), linearReference(host(x), dense, host(layer.bias!.value), 6, 16, 12))).toBeLessThan(1e-5);
  });

  it("rejects bad density, block shapes that do not divide, and wrong inputs, saying what would work", () => {
    expect(() => new BlockSparseLinear(64, 64, { density: 0 })).toThrow("density must be in (0, 1], got 0");
    expect(() => new BlockSparseLinear(64, 64, { density: 1.5 })).toThrow(ValueError);
    expect(() => new BlockSparseLinear(64, 48, { density: 0.5, blockShape: [32, 32] })).toThrow(
      "outFeatures=48 is not divisible by the block height R=32; block heights that divide it: 1, 2, 3, 4, 6, 8, 12, 16, 24, 48",
    );
    expect(() => new BlockSparseLinear(20, 64, { density: 0.5, blockShape: [32, 8] })).toThrow(
      "inFeatures=20 is not divisible by the block width C=8; block widths that divide it: 1, 2, 4, 5, 10, 20",
    );
    const model = new Sequential(new Sequential(new BlockSparseLinear(32, 32, { density: 0.5, blockShape: [8, 8] })));
    model.namedModules();
    expect(() => model.forward(randn([1, 30]))).toThrow("BlockSparseLinear(0.0): input has 30 features, expected 32");
  });

  it("fromLinear keeps the strongest blocks (L2) with their values and the bias", () => {
    const linear = new Linear(16, 8, { seed: 6 });
    const layer = BlockSparseLinear.fromLinear(linear, { density: 0.25, blockShape: [4, 4] });
    expect(layer.nnzBlocks).toBe(2);
    const w = host(linear.weight.value);
    const norms: [number, number][] = [];
    for (let br = 0; br < 2; br++) {
      for (let bc = 0; bc < 4; bc++) {
        let s = 0;
        for (let r = 0; r < 4; r++) for (let c = 0; c < 4; c++) s += w[(br * 4 + r) * 16 + bc * 4 + c] ** 2;
        norms.push([s, br * 4 + bc]);
      }
    }
    const strongest = norms
      .sort((a, b) => b[0] - a[0])
      .slice(0, 2)
      .map(([, flat]) => flat)
      .sort((a, b) => a - b);
    const mask = layer.pattern.blockMask();
    expect([...mask.keys()].filter((i) => mask[i])).toEqual(strongest);
    const kept = host(layer.toDense());
    for (let i = 0; i < w.length; i++) {
      const flat = Math.floor(Math.floor(i / 16) / 4) * 4 + Math.floor((i % 16) / 4);
      expect(kept[i]).toBe(mask[flat] ? w[i] : 0);
    }
    expect(host(layer.bias!.value)).toEqual(host(linear.bias!.value));
    expect(() => BlockSparseLinear.fromLinear(new Sequential() as unknown as Linear, { density: 0.5 })).toThrow("expected a Linear, got Sequential");
  });

  it("fromLinear draws the pattern of a weight whose blocks all tie (zero-initialised), seeded, instead of the first blocks", () => {
    const zero = new Linear(64, 32, { seed: 2 });
    zero.weight.value = tensor(new Float32Array(32 * 64), [32, 64]);
    const first = BlockSparseLinear.fromLinear(zero, { density: 0.25, blockShape: [4, 4], seed: 7 });
    // Row-major ties would have kept the 32 blocks of the first two block rows and no block of the other six.
    expect(first.nnzBlocks).toBe(32);
    const rows = new Set(first.pattern.coordinates.blockRow);
    expect(rows.size).toBeGreaterThan(2);
    expect(first.pattern.equals(BlockSparseLinear.fromLinear(zero, { density: 0.25, blockShape: [4, 4], seed: 7 }).pattern)).toBe(true);
    expect(first.pattern.equals(BlockSparseLinear.fromLinear(zero, { density: 0.25, blockShape: [4, 4], seed: 8 }).pattern)).toBe(false);
    expect(host(first.weight.value).every((v) => v === 0)).toBe(true);
    expect(host(first.bias!.value)).toEqual(host(zero.bias!.value));
    // A constant weight ties too; one stronger block is kept as the strongest.
    zero.weight.value = tensor(new Float32Array(32 * 64).fill(0.5), [32, 64]);
    const constant = BlockSparseLinear.fromLinear(zero, { density: 0.25, blockShape: [4, 4], seed: 7 });
    expect(constant.pattern.equals(first.pattern)).toBe(true);
    expect(host(constant.weight.value).every((v) => v === 0.5)).toBe(true);
    const values = new Float32Array(32 * 64).fill(0.5);
    values[31 * 64 + 63] = 2;
    zero.weight.value = tensor(values, [32, 64]);
    const one = BlockSparseLinear.fromLinear(zero, { density: 1 / 128, blockShape: [4, 4] });
    expect([...one.pattern.coordinates.blockRow, ...one.pattern.coordinates.blockCol]).toEqual([7, 15]);
    expect(() => BlockSparseLinear.fromLinear(zero, { density: 0.5, seed: 1.5 })).toThrow(/seed/);
  });

  it("fromLinear draws the pattern of a weight whose blocks all tie in norm without being constant (+-c signs), keeping its values", () => {
    const signs = new Linear(64, 32, { seed: 2, bias: false });
    const values = Float32Array.from({ length: 32 * 64 }, (_, i) => ((i * 7 + (i >> 6)) % 3 === 0 ? -0.5 : 0.5));
    signs.weight.value = tensor(values, [32, 64]);
    const layer = BlockSparseLinear.fromLinear(signs, { density: 0.25, blockShape: [4, 4], seed: 7 });
    // Row-major ties would have kept the first two block rows only (outputs 8-31 without weights).
    expect(new Set(layer.pattern.coordinates.blockRow).size).toBeGreaterThan(2);
    expect(layer.pattern.equals(BlockSparseLinear.fromLinear(signs, { density: 0.25, blockShape: [4, 4], seed: 7 }).pattern)).toBe(true);
    const dense = host(layer.toDense());
    const mask = layer.pattern.blockMask();
    for (let i = 0; i < values.length; i++) expect(dense[i]).toBe(mask[Math.floor(i / 64 / 4) * 16 + Math.floor((i % 64) / 4)] ? values[i] : 0);
  });

  it("setPattern keeps the surviving blocks' values and zeroes the new ones", () => {
    const layer = new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 8 });
    const before = host(layer.toDense());
    const held = layer.pattern.blockMask();
    const keptFlat = [...held.keys()].find((i) => held[i]) as number;
    const addedFlat = [...held.keys()].find((i) => !held[i]) as number;
    const next = BsrPattern.fromFlatBlocks([8, 8], [4, 4], [keptFlat, addedFlat].sort((a, b) => a - b));
    const sources = layer.setPattern(next);
    expect(Array.from(sources).filter((s) => s === -1)).toHaveLength(1);
    const after = host(layer.toDense());
    for (let i = 0; i < 64; i++) {
      const flat = Math.floor(Math.floor(i / 8) / 4) * 2 + Math.floor((i % 8) / 4);
      expect(after[i]).toBe(flat === keptFlat ? before[i] : 0);
    }
    expect(() => layer.setPattern(BsrPattern.dense([8, 8], [2, 2]))).toThrow("with 4x4 blocks");
  });

  it("gradients of a small model with a BlockSparseLinear match finite differences", () => {
    for (const blockShape of [
      [2, 3],
      [4, 2],
    ] as const) {
      const sparse = new BlockSparseLinear(6, 8, { density: 0.5, blockShape, seed: 9 });
      const model = new Sequential(sparse, new GELU(), new Linear(8, 3, { seed: 10 }));
      const x = randn([4, 6], { seed: 11 });
      const byName = new Map(model.namedParameters());
      const names = ["0.weight", "0.bias", "2.weight", "2.bias"];
      // Fresh copies: gradcheck perturbs its inputs, the model's own tensors stay as they are.
      const copies = names.map((name) => tensor(host(byName.get(name)!.value), byName.get(name)!.shape));
      const result = gradcheck((input, ...params) => functionalCall(model, Object.fromEntries(names.map((n, i) => [n, params[i]])), () => model.forward(input)), [
        x,
        ...copies,
      ]);
      expect(result.ok, JSON.stringify({ blockShape, abs: result.maxAbsError, rel: result.maxRelError })).toBe(true);
    }
  });
});
