import {
  add,
  argmax,
  biasActivation,
  captureGraph,
  cast,
  concat,
  crossEntropy,
  crossEntropyBackward,
  full,
  gather,
  gelu,
  geluBackward,
  IndexError,
  indexCopy,
  linear,
  linearActivation,
  linearBackward,
  matmul,
  max,
  mean,
  min,
  mul,
  randn,
  scatterAdd,
  sum,
  type DType,
  type Tensor,
  tensor,
  tidy,
  transpose,
} from "@blocksparse/core";
import { reference } from "@blocksparse/core/testing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import type { CudaBackend } from "../src/index";
import { FLOAT_DTYPES, cudaMissing, expectClose, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("dense.test.ts");

function strides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = s;
    s *= shape[i];
  }
  return out;
}

function unravel(flat: number, shape: readonly number[]): number[] {
  const index = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    index[d] = flat % shape[d];
    flat = Math.floor(flat / shape[d]);
  }
  return index;
}

/** Float64 batched matmul with NumPy batch broadcasting and transposes. */
function matmulRef(
  a: Float64Array,
  aShape: number[],
  b: Float64Array,
  bShape: number[],
  transposeA: boolean,
  transposeB: boolean,
): { data: Float64Array; shape: number[] } {
  const ra = aShape.length;
  const rb = bShape.length;
  const m = transposeA ? aShape[ra - 1] : aShape[ra - 2];
  const k = transposeA ? aShape[ra - 2] : aShape[ra - 1];
  const n = transposeB ? bShape[rb - 2] : bShape[rb - 1];
  const aBatch = aShape.slice(0, -2);
  const bBatch = bShape.slice(0, -2);
  const rank = Math.max(aBatch.length, bBatch.length);
  const pad = (s: number[]) => [...new Array(rank - s.length).fill(1), ...s];
  const pa = pad(aBatch);
  const pb = pad(bBatch);
  const batch = pa.map((d, i) => Math.max(d, pb[i]));
  const count = batch.reduce((p, d) => p * d, 1);
  const out = new Float64Array(count * m * n);
  const sa = strides(pa);
  const sb = strides(pb);
  for (let t = 0; t < count; t++) {
    const index = unravel(t, batch);
    const ia = index.reduce((s, v, d) => s + (pa[d] === 1 ? 0 : v) * sa[d], 0) * aShape[ra - 2] * aShape[ra - 1];
    const ib = index.reduce((s, v, d) => s + (pb[d] === 1 ? 0 : v) * sb[d], 0) * bShape[rb - 2] * bShape[rb - 1];
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let p = 0; p < k; p++) {
          const av = transposeA ? a[ia + p * m + i] : a[ia + i * k + p];
          const bv = transposeB ? b[ib + j * k + p] : b[ib + p * n + j];
          acc += av * bv;
        }
        out[(t * m + i) * n + j] = acc;
      }
  }
  return { data: out, shape: [...batch, m, n] };
}

describe.skipIf(cudaMissing)("dense kernels on cuda against float64 math", () => {
  let backend: CudaBackend;
  beforeAll(() => {
    backend = useCuda();
  });
  afterAll(() => {
    backend?.setCublasEnabled(true);
  });

  const MATMUL_CASES: { a: number[]; b: number[]; tA: boolean; tB: boolean }[] = [
    { a: [3, 5], b: [5, 4], tA: false, tB: false },
    { a: [70, 33], b: [65, 33], tA: false, tB: true },
    { a: [33, 70], b: [33, 65], tA: true, tB: false },
    { a: [33, 70], b: [65, 33], tA: true, tB: true },
    { a: [2, 3, 17, 33], b: [3, 33, 65], tA: false, tB: false }, // b broadcast over a leading dim: copied
    { a: [4, 1, 8, 9], b: [1, 5, 9, 7], tA: false, tB: false }, // both broadcast: both copied
    { a: [2, 70, 130], b: [130, 66], tA: false, tB: false }, // one b for every batch: stride 0
    { a: [3, 0], b: [0, 4], tA: false, tB: false }, // empty sum: zeros
    { a: [65537, 2, 3], b: [65537, 2, 3], tA: false, tB: true }, // more matrices than a launch's grid holds (65535)
    { a: [65537, 3, 2], b: [3, 2], tA: true, tB: false }, // the same with one b for every matrix
  ];

  for (const cublas of [true, false]) {
    test(`matmul (${cublas ? "cuBLAS when it is installed" : "built-in tiled kernel"}): transposes and broadcast batches`, () => {
      backend.setCublasEnabled(cublas);
      const next = random(cublas ? 1 : 2);
      for (const dtype of FLOAT_DTYPES) {
        for (const { a: aShape, b: bShape, tA, tB } of MATMUL_CASES) {
          tidy(() => {
            const a = randomTensor(next, aShape, dtype);
            const b = randomTensor(next, bShape, dtype);
            const out = matmul(a.t, b.t, { transposeA: tA, transposeB: tB });
            const expected = matmulRef(a.values, aShape, b.values, bShape, tA, tB);
            expect(out.shape).toEqual(expected.shape);
            expectClose(out.dataSync(), expected.data, dtype, `matmul ${dtype} ${aShape}x${bShape} ${tA}/${tB}`);
          });
        }
      }
    });
  }

  // Half-type products with a pitch off 16 bytes and enough work run on zero-padded copies (launchMatmul's padded
  // route): every transpose pair with each of M, N and K odd in turn (a pitch in some of them, not in others), 600 x
  // 1001 x 600-sized. Every element of C's first and last rows and columns and 2000 others against float64.
  /** C = op(A) op(B) against float64 at every element of C's first and last rows and columns and 2000 others. */
  function expectSampledProduct(
    next: () => number,
    got: ArrayLike<number>,
    a: Float64Array,
    b: Float64Array,
    [m, n, k]: number[],
    [tA, tB]: boolean[],
    dtype: DType,
    what: string,
  ): void {
    const at = (i: number, p: number): number => (tA ? a[p * m + i] : a[i * k + p]);
    const bt = (p: number, j: number): number => (tB ? b[j * k + p] : b[p * n + j]);
    const entries: [number, number][] = [];
    for (let j = 0; j < n; j++) entries.push([0, j], [m - 1, j]);
    for (let i = 0; i < m; i++) entries.push([i, 0], [i, n - 1]);
    for (let e = 0; e < 2000; e++) entries.push([Math.floor(next() * m), Math.floor(next() * n)]);
    const expected = entries.map(([i, j]) => {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += at(i, p) * bt(p, j);
      return sum;
    });
    expectClose(
      entries.map(([i, j]) => got[i * n + j]),
      expected,
      dtype,
      what,
    );
  }

  test("matmul with a pitch off 16 bytes: padded copies, every transpose pair, each dimension odd in turn", () => {
    backend.setCublasEnabled(true);
    const next = random(18);
    for (const dtype of ["bfloat16", "float16"] as const) {
      for (const [m, n, k] of [[1001, 600, 600], [600, 1001, 600], [600, 600, 1001]]) {
        for (const [tA, tB] of [[false, false], [false, true], [true, false], [true, true]]) {
          tidy(() => {
            const a = randomTensor(next, tA ? [k, m] : [m, k], dtype);
            const b = randomTensor(next, tB ? [n, k] : [k, n], dtype);
            const out = matmul(a.t, b.t, { transposeA: tA, transposeB: tB });
            expect(out.shape).toEqual([m, n]);
            expectSampledProduct(next, out.dataSync(), a.values, b.values, [m, n, k], [tA, tB], dtype, `matmul ${dtype} [${m}, ${n}, ${k}] transposes ${tA}/${tB}`);
          });
        }
      }
    }
  }, 60_000);

  // linearBackward with dy's width off 16 bytes: dy copied once to an aligned pitch for both products (dx = dy w over
  // the padded rows of w, dw's first rows from the padded product), an odd K too (the products' own padded copies of x
  // and dx), and a width that is aligned; a captured graph replays the copies with new inputs.
  test("linearBackward with dy's width off 16 bytes: one padded copy of dy for dx and dweight", () => {
    backend.setCublasEnabled(true);
    const next = random(29);
    for (const dtype of ["bfloat16", "float16"] as const) {
      for (const [m, n, k] of [[600, 1001, 600], [700, 1001, 601], [600, 1000, 600]]) {
        tidy(() => {
          const dy = randomTensor(next, [m, n], dtype);
          const x = randomTensor(next, [m, k], dtype);
          const w = randomTensor(next, [n, k], dtype);
          const { dx, dweight } = linearBackward(dy.t, x.t, w.t);
          expect([dx.shape, dweight.shape]).toEqual([[m, k], [n, k]]);
          const what = `linearBackward ${dtype} dy [${m}, ${n}] x [${m}, ${k}]`;
          expectSampledProduct(next, dx.dataSync(), dy.values, w.values, [m, k, n], [false, false], dtype, `${what}: dx`);
          expectSampledProduct(next, dweight.dataSync(), dy.values, x.values, [n, k, m], [true, false], dtype, `${what}: dweight`);
        });
      }
    }
    tidy(() => {
      const [m, n, k] = [600, 1001, 600];
      const dy = randomTensor(next, [m, n], "bfloat16");
      const x = randomTensor(next, [m, k], "bfloat16");
      const w = randomTensor(next, [n, k], "bfloat16");
      const graph = captureGraph(() => {
        const { dx, dweight } = linearBackward(dy.t, x.t, w.t);
        return [dx, dweight];
      });
      try {
        for (let round = 0; round < 2; round++) {
          const fresh = randomTensor(next, [m, n], "bfloat16");
          dy.t.assign(fresh.t);
          const [dx, dweight] = graph.replay() as Tensor[];
          expectSampledProduct(next, dx.dataSync(), fresh.values, w.values, [m, k, n], [false, false], "bfloat16", `captured linearBackward dx, replay ${round}`);
          expectSampledProduct(next, dweight.dataSync(), fresh.values, x.values, [n, k, m], [true, false], "bfloat16", `captured linearBackward dweight, replay ${round}`);
        }
      } finally {
        graph.dispose();
      }
    });
  }, 60_000);

  test("matmul with a pitch off 16 bytes: a captured graph replays the padded copies with new inputs", () => {
    backend.setCublasEnabled(true);
    const next = random(22);
    // dW of a 600 -> 1001 layer (dY^T x): dY's copy padded, C's rows padded and copied back.
    const [m, n, k] = [1001, 600, 600];
    tidy(() => {
      const a = randomTensor(next, [k, m], "bfloat16");
      const b = randomTensor(next, [k, n], "bfloat16");
      const graph = captureGraph(() => matmul(a.t, b.t, { transposeA: true }));
      try {
        for (let round = 0; round < 2; round++) {
          const fresh = randomTensor(next, [k, m], "bfloat16");
          a.t.assign(fresh.t);
          const out = graph.replay();
          expectSampledProduct(next, out.dataSync(), fresh.values, b.values, [m, n, k], [true, false], "bfloat16", `captured matmul, replay ${round}`);
        }
      } finally {
        graph.dispose();
      }
    });
  });

  // Layer shapes past the conformance suite's: decoding (1 and 8 rows), GPT-2's projections, a vocabulary of odd width,
  // odd K (rows off 16-byte alignment), and a long one; with and without bias and residual. A width that is not a
  // multiple of 16 bytes, in a product of at least 2^25 multiply-adds over K >= 128, runs as two products, its aligned
  // head and its last 1-7 columns: into an aligned-pitch scratch copied to y (40 x 4097; one row, into y directly, in
  // the tests after this one); as one product with a residual and more rows (40 x 4097), when the product is small
  // (1 x 1001, 4 x 15, 37 x 129) or when no aligned head exists (3 x 5).
  const LINEAR_CASES: { m: number; n: number; k: number }[] = [
    { m: 1, n: 2304, k: 768 },
    { m: 1, n: 1001, k: 40 },
    { m: 4, n: 15, k: 24 },
    { m: 3, n: 5, k: 16 },
    { m: 8, n: 768, k: 3072 },
    { m: 64, n: 3072, k: 768 },
    { m: 40, n: 4097, k: 256 },
    { m: 37, n: 129, k: 33 },
    { m: 256, n: 1024, k: 512 },
  ];
  for (const cublas of [true, false]) {
    test(`linear (${cublas ? "cuBLASLt's epilogue when it is installed" : "composed: the tiled matmul and adds"}) at layer shapes`, () => {
      backend.setCublasEnabled(cublas);
      const next = random(cublas ? 11 : 12);
      for (const dtype of FLOAT_DTYPES) {
        for (const { m, n, k } of LINEAR_CASES) {
          if (!cublas && m * n * k > 2 ** 28) continue; // the tiled kernel is for correctness, not size
          tidy(() => {
            const x = randomTensor(next, [m, k], dtype);
            const w = randomTensor(next, [n, k], dtype);
            const b = randomTensor(next, [n], dtype);
            const r = randomTensor(next, [m, n], dtype);
            const product = matmulRef(x.values, [m, k], w.values, [n, k], false, true).data;
            for (const [withBias, withResidual] of [[false, false], [true, false], [true, true], [false, true]]) {
              const out = linear(x.t, w.t, withBias ? b.t : null, withResidual ? { residual: r.t } : {});
              const expected = Float64Array.from(product);
              for (let i = 0; i < m; i++)
                for (let j = 0; j < n; j++) {
                  if (withBias) expected[i * n + j] += b.values[j];
                  if (withResidual) expected[i * n + j] += r.values[i * n + j];
                }
              expect(out.shape).toEqual([m, n]);
              expectClose(out.dataSync(), expected, dtype, `linear ${dtype} [${m}, ${k}] x [${n}, ${k}]^T bias ${withBias} residual ${withResidual}`);
            }
          });
        }
      }
    }, 60_000); // the float64 references take seconds
  }

  test("linearActivation at layer shapes: GELU's tanh form in cuBLASLt's epilogue (widths a multiple of 8), the rest composed", () => {
    backend.setCublasEnabled(true);
    const next = random(14);
    for (const dtype of FLOAT_DTYPES) {
      for (const { m, n, k } of [
        { m: 1, n: 3072, k: 768 },
        { m: 8, n: 4096, k: 1024 },
        { m: 200, n: 1024, k: 256 },
        { m: 5, n: 36, k: 40 },
        { m: 3, n: 30, k: 17 },
      ]) {
        tidy(() => {
          const x = randomTensor(next, [m, k], dtype);
          const w = randomTensor(next, [n, k], dtype, 0.2);
          const b = randomTensor(next, [n], dtype);
          const product = matmulRef(x.values, [m, k], w.values, [n, k], false, true).data;
          for (const activation of ["gelu_tanh", "gelu", "relu"] as const) {
            for (const withBias of [true, false]) {
              const out = linearActivation(x.t, w.t, withBias ? b.t : null, activation);
              const expected = product.map((v, i) => {
                const pre = v + (withBias ? b.values[i % n] : 0);
                return activation === "relu" ? reference.relu(pre) : reference.gelu(pre, activation === "gelu_tanh" ? "tanh" : "none");
              });
              expectClose(out.dataSync(), expected, dtype, `linearActivation ${dtype} ${activation} [${m}, ${k}] x [${n}, ${k}]^T bias ${withBias}`);
            }
          }
        });
      }
    }
  }, 60_000);

  test("GELU in bfloat16 and float16 keeps its relative accuracy in the negative tail (no cancellation in its gate)", () => {
    // x Phi(x) for x < -4 is far below 1 but well inside bfloat16's range; a gate computed as 1 + erf(x / sqrt 2) in
    // float32 loses its digits there (all of them below x = -5.4). Each result within 2^-6 of float64's, relative: the
    // half dtypes' erfc approximation (Abramowitz and Stegun 7.1.26) is 0.36% off at x = -6 and 0.65% at -7, plus the
    // rounding to bfloat16 (up to 0.39%).
    for (const [dtype, lowest] of [
      ["bfloat16", -7],
      ["float16", -4],
    ] as const) {
      tidy(() => {
        const count = 512;
        const x = cast(tensor(Array.from({ length: count }, (_, i) => lowest + ((-3 - lowest) * i) / (count - 1)), [count]), dtype);
        const xs = Array.from(cast(x, "float32").dataSync());
        const check = (got: Tensor, want: (v: number) => number, what: string) => {
          const values = got.dataSync();
          xs.forEach((v, i) => {
            const exact = want(v);
            if (Math.abs(values[i] - exact) > 2 ** -6 * Math.abs(exact)) {
              throw new Error(`${what} ${dtype} at x = ${v}: ${values[i]}, float64 ${exact}`);
            }
          });
        };
        check(gelu(x), (v) => reference.gelu(v, "none"), "gelu");
        check(biasActivation(x, null, "gelu"), (v) => reference.gelu(v, "none"), "biasActivation");
        check(geluBackward(cast(tensor(new Array(count).fill(1), [count]), dtype), x), (v) => reference.geluGrad(v, "none"), "geluBackward");
      });
    }
  });

  test("linear: a captured graph replays the fused product with new inputs", () => {
    backend.setCublasEnabled(true);
    const next = random(13);
    tidy(() => {
      const [m, n, k] = [4, 768, 768];
      const x = randomTensor(next, [m, k], "bfloat16");
      const w = randomTensor(next, [n, k], "bfloat16");
      const b = randomTensor(next, [n], "bfloat16");
      const r = randomTensor(next, [m, n], "bfloat16");
      const graph = captureGraph(() => linear(x.t, w.t, b.t, { residual: r.t }));
      try {
        for (let round = 0; round < 2; round++) {
          const fresh = randomTensor(next, [m, k], "bfloat16");
          x.t.assign(fresh.t);
          const out = graph.replay();
          const expected = matmulRef(fresh.values, [m, k], w.values, [n, k], false, true).data;
          for (let i = 0; i < m * n; i++) expected[i] += b.values[i % n] + r.values[i];
          expectClose(out.dataSync(), expected, "bfloat16", `captured linear, replay ${round}`);
        }
      } finally {
        graph.dispose();
      }
    });
  });

  // Against the plain GEMM (matmul) on the same inputs (the split route's float64 checks are the tests around this
  // one); W made on the device: 35M random values from the host took seconds.
  test("linear at an odd width: a captured graph replays its aligned head, its last columns and the copy to y", () => {
    backend.setCublasEnabled(true);
    const next = random(15);
    for (const [m, n, k] of [[1, 50257, 704], [64, 4097, 128]]) {
      tidy(() => {
        const x = randomTensor(next, [m, k], "bfloat16");
        const w = cast(randn([n, k], { seed: 15 + m }), "bfloat16");
        const graph = captureGraph(() => linear(x.t, w));
        try {
          for (let round = 0; round < 2; round++) {
            const fresh = randomTensor(next, [m, k], "bfloat16");
            x.t.assign(fresh.t);
            const out = graph.replay();
            expect(out.shape).toEqual([m, n]);
            const expected = tidy(() => matmul(fresh.t, w, { transposeB: true }).dataSync());
            expectClose(out.dataSync(), expected, "bfloat16", `captured linear [${m}, ${k}] x [${n}, ${k}]^T, replay ${round}`);
          }
        } finally {
          graph.dispose();
        }
      });
    }
  }, 60_000);

  // One row writes y directly, the residual read in place (1 x 50257); past 64 MiB the aligned-pitch scratch takes the
  // rows a chunk at a time (1200 x 30001: 1024 + 176 rows in bfloat16, 512 + 512 + 176 in float32, the scratch 30008
  // and 30004 wide). Every column of the one row, and of the rows at the chunks' edges and a few others, against
  // float64; W made on the device.
  test("linear at an odd width past the one-call threshold: one row into y, chunks of rows through the scratch", () => {
    backend.setCublasEnabled(true);
    const next = random(17);
    for (const [m, n, k, withResidual] of [[1, 50257, 704, true], [1200, 30001, 128, false]] as const) {
      for (const dtype of ["bfloat16", "float32"] as const) {
        tidy(() => {
          const x = randomTensor(next, [m, k], dtype);
          const w = cast(randn([n, k], { seed: 17 + m }), dtype);
          const wHost = w.dataSync();
          const b = randomTensor(next, [n], dtype);
          const r = withResidual ? randomTensor(next, [m, n], dtype) : undefined;
          const out = linear(x.t, w, b.t, r ? { residual: r.t } : {}).dataSync();
          expect(out.length).toBe(m * n);
          const rows = m === 1 ? [0] : [0, 1, 511, 512, 513, 1023, 1024, 1025, 1100, m - 1];
          for (const row of rows) {
            const expected = new Float64Array(n);
            for (let j = 0; j < n; j++) {
              let sum = b.values[j] + (r ? r.values[row * n + j] : 0);
              for (let p = 0; p < k; p++) sum += x.values[row * k + p] * wHost[j * k + p];
              expected[j] = sum;
            }
            expectClose(out.subarray(row * n, (row + 1) * n), expected, dtype, `linear ${dtype} [${m}, ${k}] x [${n}, ${k}]^T, row ${row}`);
          }
        });
      }
    }
  }, 60_000);

  // Under a memory limit that leaves no room for their scratch, both routes run their one call: same results (within
  // bfloat16's rounding: other kernels), no error. dX of a 768 -> 50257 layer at 2048 tokens would copy dY (206 MB)
  // and W (77 MB); linear's 2048 x 50257 output takes a 198 MiB segment, leaving room for a cuBLASLt workspace (up to
  // 32 MiB) but not for a 62 MiB chunk of scratch.
  test("products at an odd width whose scratch does not fit under the memory limit run as one call instead", () => {
    backend.setCublasEnabled(true);
    const mib = 2 ** 20;
    tidy(() => {
      const [m, n, k] = [2048, 50257, 768];
      const dy = cast(randn([m, n], { seed: 19, std: 0.05 }), "bfloat16");
      const w = cast(randn([n, k], { seed: 20, std: 0.05 }), "bfloat16");
      const x = cast(randn([m, k], { seed: 21 }), "bfloat16");
      const withRoom = [matmul(dy, w).dataSync(), linear(x, w).dataSync()];
      const limited = (room: number, product: () => Tensor): Float32Array | Float64Array | Int32Array | Uint8Array => {
        backend.releaseCache();
        const previous = backend.setMemoryLimit(backend.memory().reservedBytes + room * mib);
        try {
          return product().dataSync();
        } finally {
          backend.setMemoryLimit(previous);
        }
      };
      expectClose(limited(40, () => matmul(dy, w)), withRoom[0], "bfloat16", "matmul [2048, 50257] x [50257, 768] without room for padded copies");
      expectClose(limited(230, () => linear(x, w)), withRoom[1], "bfloat16", "linear [2048, 768] x [50257, 768]^T without room for the scratch");
    });
  }, 60_000);

  test("full writes every element of every length in 2- and 4-byte dtypes (16-byte words, then the tail)", () => {
    // Allocations are poisoned by the same kernel, so each length gets its own value: a skipped element would hold the
    // poison or an earlier call's value, never this one.
    const lengths = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 1000, 4097, (1 << 20) + 5];
    for (const dtype of ["float32", "bfloat16", "float16", "int32"] as const) {
      lengths.forEach((length, k) => {
        const value = dtype === "int32" ? -7 - k : 1.5 + k / 4;
        tidy(() => {
          const data = full([length], value, dtype).dataSync();
          let wrong = -1;
          for (let i = 0; i < length && wrong < 0; i++) if (data[i] !== value) wrong = i;
          expect(wrong, `${dtype}, ${length} elements: element ${wrong} holds ${data[wrong]}`).toBe(-1);
        });
      });
    }
  });

  test("reductions along rows of any length and alignment (16-byte loads from each row's first aligned element)", () => {
    const next = random(16);
    // A vocabulary's logits (one row and a few, each row starting at another alignment), rows shorter than a vector,
    // and more rows than SMs.
    const cases: [number, number][] = [[1, 50257], [3, 50257], [8, 4099], [2, 7], [5, 1], [1, 16], [300, 333]];
    for (const dtype of FLOAT_DTYPES) {
      for (const [outer, size] of cases) {
        tidy(() => {
          const x = randomTensor(next, [outer, size], dtype);
          const got = { sum: sum(x.t, [1]).dataSync(), max: max(x.t, [1]).dataSync(), min: min(x.t, [1]).dataSync(), argmax: argmax(x.t, 1).dataSync() };
          for (let r = 0; r < outer; r++) {
            const row = x.values.subarray(r * size, (r + 1) * size);
            let total = 0;
            let magnitude = 0;
            let best = 0;
            let least = Number.POSITIVE_INFINITY;
            for (let j = 0; j < size; j++) {
              total += row[j];
              magnitude += Math.abs(row[j]);
              if (row[j] > row[best]) best = j; // the first of equal maxima (random half values repeat)
              least = Math.min(least, row[j]);
            }
            const where = `${dtype} [${outer}, ${size}] row ${r}`;
            if (got.argmax[r] !== best) expect.fail(`argmax ${where}: ${got.argmax[r]}, expected ${best}`);
            if (got.max[r] !== row[best]) expect.fail(`max ${where}: ${got.max[r]}, expected ${row[best]}`);
            if (got.min[r] !== least) expect.fail(`min ${where}: ${got.min[r]}, expected ${least}`);
            const rounding = dtype === "float32" ? 2 ** -23 : dtype === "float16" ? 2 ** -10 : 2 ** -7;
            const bound = magnitude * size * 2 ** -24 + Math.abs(total) * rounding + 1e-30;
            if (!(Math.abs(got.sum[r] - total) <= bound)) expect.fail(`sum ${where}: ${got.sum[r]}, expected ${total}`);
          }
        });
      }
    }
    tidy(() => {
      // int32 (four per vector): a row off alignment whose maximum repeats across vectors and at the tail, and a NaN in
      // a float row that must win over the larger values after it (the first NaN).
      const size = 1027;
      const values = Array.from({ length: 2 * size }, (_, i) => ((i * 7919) % 1000) - 500);
      for (const at of [size + 3, size + 500, 2 * size - 1]) values[at] = 900;
      const x = tensor(values, [2, size], "int32");
      expect(Array.from(argmax(x, 1).dataSync())).toEqual([values.slice(0, size).indexOf(Math.max(...values.slice(0, size))), 3]);
      expect(Array.from(sum(x, [1]).dataSync())).toEqual([0, 1].map((r) => values.slice(r * size, (r + 1) * size).reduce((a, b) => a + b, 0)));
      for (const dtype of FLOAT_DTYPES) {
        const row = Array.from({ length: 5000 }, (_, i) => i % 97);
        row[1234] = Number.NaN;
        row[4321] = Number.NaN;
        const argmaxNaN = argmax(tensor(row, [1, 5000], dtype), 1).dataSync()[0];
        expect(argmaxNaN, `argmax ${dtype} with NaNs`).toBe(1234);
      }
    });
  });

  test("reductions over adjacent, scattered, all and no axes, with keepDims", () => {
    const next = random(7);
    const shape = [3, 4, 5, 6];
    for (const dtype of FLOAT_DTYPES) {
      tidy(() => {
        const x = randomTensor(next, shape, dtype);
        for (const axes of [[1, 3], [0, 2], [1, 2], [0, 1, 2, 3], [3], []]) {
          for (const keepDims of [false, true]) {
            const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
            const count = outShape.reduce((p, d) => p * d, 1);
            const refs = {
              sum: new Float64Array(count),
              max: new Float64Array(count).fill(Number.NEGATIVE_INFINITY),
              min: new Float64Array(count).fill(Number.POSITIVE_INFINITY),
            };
            const os = strides(outShape);
            for (let i = 0; i < x.values.length; i++) {
              const index = unravel(i, shape);
              const o = index.reduce((s, v, d) => s + (axes.includes(d) ? 0 : v) * os[d], 0);
              refs.sum[o] += x.values[i];
              refs.max[o] = Math.max(refs.max[o], x.values[i]);
              refs.min[o] = Math.min(refs.min[o], x.values[i]);
            }
            const reduced = axes.reduce((p, a) => p * shape[a], 1);
            const label = `${dtype} axes [${axes}] keepDims ${keepDims}`;
            const s = sum(x.t, axes, keepDims);
            expect(s.shape).toEqual(keepDims ? outShape : shape.filter((_, i) => !axes.includes(i)));
            expectClose(s.dataSync(), refs.sum, dtype, `sum ${label}`);
            expectClose(mean(x.t, axes, keepDims).dataSync(), refs.sum.map((v) => v / reduced), dtype, `mean ${label}`);
            expect(Array.from(max(x.t, axes, keepDims).dataSync()), `max ${label}`).toEqual(Array.from(refs.max));
            expect(Array.from(min(x.t, axes, keepDims).dataSync()), `min ${label}`).toEqual(Array.from(refs.min));
          }
        }
      });
    }
  });

  // Long reduced axes split into float32 partials that a second kernel sums (lanes over the splits when they are
  // many, one thread per output when they are two or three); odd and even split counts; every output within its
  // own bound.
  test("column sums and means over long axes (split partials, packed and scalar finish)", () => {
    const next = random(11);
    const cases: { shape: number[]; axis: number }[] = [
      { shape: [3001, 40], axis: 0 },
      { shape: [2, 2048, 24], axis: 1 },
      { shape: [5000, 13], axis: 0 },
      { shape: [3, 700, 9], axis: 1 },
      { shape: [4, 150, 5], axis: 1 },
      // 64 splits of 128 rows: the finish's 32 lanes.
      { shape: [8192, 96], axis: 0 },
    ];
    for (const dtype of FLOAT_DTYPES) {
      for (const { shape, axis } of cases) {
        tidy(() => {
          const x = randomTensor(next, shape, dtype);
          const outer = shape.slice(0, axis).reduce((p, d) => p * d, 1);
          const size = shape[axis];
          const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
          const ref = new Float64Array(outer * inner);
          const magnitude = new Float64Array(outer * inner);
          for (let o = 0; o < outer; o++)
            for (let r = 0; r < size; r++)
              for (let c = 0; c < inner; c++) {
                const v = x.values[(o * size + r) * inner + c];
                ref[o * inner + c] += v;
                magnitude[o * inner + c] += Math.abs(v);
              }
          const got = { sum: sum(x.t, [axis]).dataSync(), mean: mean(x.t, [axis]).dataSync() };
          // float32 accumulation over the axis (at most size x 2^-24 of the magnitudes), then one rounding to the dtype.
          const rounding = dtype === "float32" ? 2 ** -23 : dtype === "float16" ? 2 ** -10 : 2 ** -7;
          for (const [what, scale] of [["sum", 1], ["mean", 1 / size]] as const) {
            const out = got[what];
            expect(out.length).toBe(ref.length);
            for (let i = 0; i < ref.length; i++) {
              const expected = ref[i] * scale;
              const bound = (magnitude[i] * size * 2 ** -24 + Math.abs(ref[i]) * rounding) * scale + 1e-30;
              if (!(Math.abs(out[i] - expected) <= bound))
                expect.fail(`${what} ${dtype} [${shape}] axis ${axis}: output ${i} is ${out[i]}, expected ${expected}`);
            }
          }
        });
      }
    }
  });

  test("int32 sums, maxima and argmax (first of equal maxima)", () => {
    tidy(() => {
      const values = [3, -7, 3, 12, 0, 12, 5, 5, -1, 2, 2, 2];
      const x = tensor(values, [3, 4], "int32");
      expect(Array.from(sum(x, [1]).dataSync())).toEqual([11, 22, 5]);
      expect(Array.from(max(x, [0]).dataSync())).toEqual([3, 12, 5, 12]);
      expect(Array.from(min(x, [1]).dataSync())).toEqual([-7, 0, -1]);
      expect(Array.from(argmax(x, 1).dataSync())).toEqual([3, 1, 1]);
      const big = tensor([2147483647, 1], [2], "int32");
      // int32 sums wrap modulo 2^32, like the js backend's Int32Array stores.
      expect(Array.from(sum(big).dataSync())).toEqual([-2147483648]);
    });
  });

  test("elementwise broadcasting over more than 8 dims, merged before launch", () => {
    const next = random(11);
    const shape = [2, 1, 2, 1, 2, 1, 2, 1, 2, 3];
    tidy(() => {
      const a = randomTensor(next, shape, "float32");
      const b = randomTensor(next, [3], "float32");
      const c = randomTensor(next, [2, 1, 1, 1, 1, 1, 1, 1, 1, 1], "float32");
      const out = mul(add(a.t, b.t), c.t);
      const ref = a.values.map((v, i) => (v + b.values[i % 3]) * c.values[Math.floor(i / 48)]);
      expectClose(out.dataSync(), ref, "float32", "broadcast rank 10");
    });
  });

  test("transpose and concat of a rank-5 tensor", () => {
    const next = random(13);
    const shape = [2, 3, 4, 5, 6];
    tidy(() => {
      const x = randomTensor(next, shape, "bfloat16");
      const perm = [4, 2, 0, 3, 1];
      const out = transpose(x.t, perm);
      const outShape = perm.map((p) => shape[p]);
      const xs = strides(shape);
      const ref = Array.from({ length: x.values.length }, (_, i) => {
        const index = unravel(i, outShape);
        return x.values[index.reduce((s, v, d) => s + v * xs[perm[d]], 0)];
      });
      expect(Array.from(out.dataSync())).toEqual(ref);
      const joined = concat([x.t, x.t], 3);
      expect(joined.shape).toEqual([2, 3, 4, 10, 6]);
      const data = joined.dataSync();
      for (let i = 0; i < data.length; i++) {
        const [a, b, c, d, e] = unravel(i, [2, 3, 4, 10, 6]);
        expect(data[i]).toBe(x.values[(((a * 3 + b) * 4 + c) * 5 + (d % 5)) * 6 + e]);
      }
    });
  });

  /** The IndexError that `fn` throws (at the read or synchronize after a kernel found an index out of range). */
  function indexError(fn: () => unknown): string {
    try {
      fn();
    } catch (error) {
      expect(error).toBeInstanceOf(IndexError);
      return (error as Error).message;
    }
    throw new Error("expected an IndexError");
  }

  test("out-of-range indices read zeros and skip updates, never touching other memory, and the next read reports them", () => {
    tidy(() => {
      const x = tensor([1, 2, 3, 4, 5, 6], [3, 2], "float32");
      const indices = tensor([2, -1, 0, 3], [4], "int32");
      const gathered = gather(x, indices);
      // Either bad index may be the one recorded (the first thread to claim the record).
      expect(indexError(() => gathered.dataSync())).toMatch(/^cuda: gather: index (-1 at position 1|3 at position 3) is out of range \[0, 3\)/);
      // Reported once: the values read now, with zeros for the rows out of range.
      expect(Array.from(gathered.dataSync())).toEqual([5, 6, 0, 0, 1, 2, 0, 0]);
      const updates = tensor([1, 1, 2, 2, 3, 3, 4, 4], [4, 2], "float32");
      const scattered = scatterAdd(indices, updates, [3, 2]);
      expect(indexError(() => backend.synchronize())).toMatch(/^cuda: scatterAdd: index (-1|3) at position [13] is out of range \[0, 3\)/);
      expect(Array.from(scattered.dataSync())).toEqual([3, 3, 0, 0, 1, 1]);
      const intScattered = scatterAdd(indices, tensor([1, 1, 2, 2, 3, 3, 4, 4], [4, 2], "int32"), [3, 2]);
      expect(indexError(() => intScattered.dataSync())).toMatch(/^cuda: scatterAdd: /);
      expect(Array.from(intScattered.dataSync())).toEqual([3, 3, 0, 0, 1, 1]);

      const logits = tensor([0, 0, 0, 1, 2, 3], [2, 3], "float32");
      const targets = tensor([5, 2], [2], "int32");
      const loss = crossEntropy(logits, targets, "none");
      expect(indexError(() => loss.dataSync())).toContain("cuda: crossEntropy: target 5 at row 0 is out of range [0, 3)");
      const values = loss.dataSync();
      expect(values[0]).toBe(0);
      expect(values[1]).toBeCloseTo(Math.log(1 + Math.E + Math.E ** 2) + 1 - 3, 5);
      const grad = crossEntropyBackward(logits, targets, tensor([1, 1], [2], "float32"));
      expect(indexError(() => grad.dataSync())).toContain("cuda: crossEntropyBackward: target 5 at row 0 is out of range [0, 3)");
      expect(Array.from(grad.dataSync().slice(0, 3))).toEqual([0, 0, 0]);

      // ignoreIndex's rows are not errors; another negative target is.
      const ignored = crossEntropy(logits, tensor([-100, 2], [2], "int32"), { ignoreIndex: -100, reduction: "none" });
      expect(ignored.dataSync()[0]).toBe(0);
      const ignoredGrad = crossEntropyBackward(logits, tensor([-100, 2], [2], "int32"), tensor([1, 1], [2], "float32"), { ignoreIndex: -100 });
      expect(Array.from(ignoredGrad.dataSync().slice(0, 3))).toEqual([0, 0, 0]);
      const other = crossEntropy(logits, tensor([-1, 2], [2], "int32"), { ignoreIndex: -100, reduction: "none" });
      expect(indexError(() => other.dataSync())).toContain("cuda: crossEntropy: target -1 at row 0 is out of range [0, 3)");

      const target = tensor([0, 0, 0, 0, 0, 0], [3, 2], "float32");
      indexCopy(target, tensor([1, 7], [2], "int32"), tensor([1, 2, 3, 4], [2, 2], "float32"));
      expect(indexError(() => target.dataSync())).toContain("cuda: indexCopy: index 7 at position 1 is out of range [0, 3)");
      expect(Array.from(target.dataSync())).toEqual([0, 0, 1, 2, 0, 0]);
      // Nothing pending after a report.
      backend.synchronize();
    });
  });

  test("an index out of range inside a captured graph is reported by the read after the replay that met it", () => {
    tidy(() => {
      const table = tensor([1, 2, 3, 4, 5, 6], [3, 2], "float32");
      const ids = tensor([0, 1], [2], "int32");
      const graph = captureGraph(() => gather(table, ids));
      try {
        const first = graph.replay() as Tensor;
        expect(Array.from(first.dataSync())).toEqual([1, 2, 3, 4]);
        ids.assign(tensor([2, 9], [2], "int32"));
        const second = graph.replay() as Tensor;
        expect(indexError(() => second.dataSync())).toContain("cuda: gather: index 9 at position 1 is out of range [0, 3)");
        expect(Array.from(second.dataSync())).toEqual([5, 6, 0, 0]);
        ids.assign(tensor([1, 2], [2], "int32"));
        expect(Array.from((graph.replay() as Tensor).dataSync())).toEqual([3, 4, 5, 6]);
      } finally {
        graph.dispose();
      }
    });
  });
});
