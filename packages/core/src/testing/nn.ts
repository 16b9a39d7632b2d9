/**
 * The nn family: Softmax, LogSoftmax, LayerNorm, LayerNormBackward, CrossEntropy, CrossEntropyBackward, Attention,
 * AttentionBackward, PackedAttention, PackedAttentionBackward, CachedAttention.
 */
import {
  FLOAT_DTYPES,
  IndexError,
  type Tensor,
  attentionBackward,
  attentionWithStats,
  cachedAttention,
  crossEntropy,
  crossEntropyBackward,
  formatShape,
  layerNorm,
  layerNormBackward,
  layerNormWithStats,
  logSoftmax,
  mul,
  ones,
  packedAttentionBackward,
  packedAttentionWithStats,
  softmax,
  softmaxBackward,
  split,
  tensor,
  zeros,
} from "@blocksparse/core";
import { describe, expect } from "vitest";
import { type Conformance, expectThrowsKeeping, expectValues, inCase, makeInput, round } from "./harness";
import * as R from "./reference";

/** One attention call of the suite: q [...batch, m, d], k and v [...batch, n, d]; scale absent means the default 1 / sqrt(d). */
interface AttentionCase {
  batch: number[];
  m: number;
  n: number;
  d: number;
  causal: boolean;
  scale?: number;
}

/**
 * Tile edges of a GPU kernel (64 rows or keys): M and N below, at and past them, not multiples of 64, one query and
 * one key, causal with fewer queries than keys (the mask's diagonal off the tiles' corners), head dims 8 to 128 and
 * ones off the fast paths (40, 5), peaked scores (scale 1: the running max of an online softmax moves), scales 0
 * (uniform over the kept keys) and negative (the row maximum is the smallest raw score) at a fast path's head dim, no
 * batch dims, [1] and [2, 3]. Small enough for the js backend to run in about a second over the three dtypes.
 */
const ATTENTION_CASES: readonly AttentionCase[] = [
  { batch: [], m: 1, n: 1, d: 8, causal: false },
  { batch: [1], m: 1, n: 1, d: 64, causal: true },
  { batch: [2, 3], m: 17, n: 17, d: 32, causal: true },
  { batch: [2, 3], m: 17, n: 65, d: 8, causal: false },
  { batch: [1], m: 64, n: 64, d: 64, causal: true },
  { batch: [2], m: 65, n: 130, d: 64, causal: true, scale: 1 },
  { batch: [], m: 130, n: 130, d: 128, causal: false },
  { batch: [1], m: 130, n: 130, d: 128, causal: true },
  { batch: [2], m: 1, n: 130, d: 40, causal: true },
  { batch: [], m: 130, n: 17, d: 40, causal: false },
  { batch: [1], m: 65, n: 64, d: 40, causal: false },
  { batch: [2], m: 17, n: 65, d: 5, causal: true },
  { batch: [2], m: 0, n: 5, d: 8, causal: true },
  { batch: [2], m: 17, n: 33, d: 64, causal: true, scale: 0 },
  { batch: [1], m: 65, n: 70, d: 64, causal: false, scale: -0.5 },
];

/**
 * Packed attention's calls: qkv [...batch, T, 3, H, D]. Lengths off the 64-row tiles, one position, head dims on the
 * fast paths (8, 64, 128) and off them (40 fast with a wider tile, 5 and 12 through the contiguous copies of the math
 * route on cuda: 12 is not a multiple of 8, so the packed rows are not 16-byte aligned), no batch dims and [2, 2],
 * sequences of no positions (empty outputs and gradient), scales 0 and negative.
 */
const PACKED_CASES: readonly { batch: number[]; t: number; h: number; d: number; causal: boolean; scale?: number }[] = [
  { batch: [2], t: 70, h: 3, d: 16, causal: true },
  { batch: [], t: 5, h: 2, d: 8, causal: false },
  { batch: [1], t: 1, h: 2, d: 64, causal: true },
  { batch: [2, 2], t: 64, h: 2, d: 64, causal: true, scale: 1 },
  { batch: [1], t: 130, h: 1, d: 40, causal: true },
  { batch: [1], t: 9, h: 4, d: 128, causal: false },
  { batch: [2], t: 33, h: 2, d: 5, causal: true },
  { batch: [1], t: 20, h: 3, d: 12, causal: true },
  { batch: [2], t: 0, h: 2, d: 8, causal: true },
  { batch: [], t: 9, h: 2, d: 8, causal: false, scale: 0 },
  { batch: [1], t: 33, h: 2, d: 64, causal: true, scale: -0.5 },
];

function attentionLabel(c: AttentionCase): string {
  const scale = c.scale === undefined ? "" : `, scale ${c.scale}`;
  return `q ${formatShape([...c.batch, c.m, c.d])}, k and v ${formatShape([...c.batch, c.n, c.d])}${c.causal ? ", causal" : ""}${scale}`;
}

export function declareNnTests(suite: Conformance): void {
  const { check, rng } = suite;

  describe("softmax, layerNorm, crossEntropy", () => {
    for (const dtype of FLOAT_DTYPES) {
      check(`Softmax and LogSoftmax ${dtype}`, () => {
        for (const shape of [[1, 1], [4, 7], [2, 3, 33], [0, 5]]) {
          const x = makeInput(rng(), shape, dtype);
          inCase(`Softmax ${dtype} x ${formatShape(shape)}`, () => expectValues(softmax(x.t), R.softmax(x.ref, false), dtype, "elementwise", 2));
          inCase(`LogSoftmax ${dtype} x ${formatShape(shape)}`, () => expectValues(logSoftmax(x.t), R.softmax(x.ref, true), dtype, "scaled"));
        }
        // Large logits must not overflow: the max is subtracted first.
        const big = makeInput(rng(), [3, 8], dtype);
        const scaled = mul(big.t, 60);
        const scaledRef = R.map(big.ref, (v) => round(dtype, v * 60));
        inCase(`Softmax ${dtype} x [3, 8] large logits`, () => expectValues(softmax(scaled), R.softmax(scaledRef, false), dtype, "scaled"));
        inCase(`LogSoftmax ${dtype} x [3, 8] large logits`, () => expectValues(logSoftmax(scaled), R.softmax(scaledRef, true), dtype, "scaled"));
        // Along an inner axis (the op moves it last).
        const inner = makeInput(rng(), [3, 4, 2], dtype);
        const moved = R.transpose(R.softmax(R.transpose(inner.ref, [0, 2, 1]), false), [0, 2, 1]);
        inCase(`Softmax ${dtype} x [3, 4, 2] axis 1`, () => expectValues(softmax(inner.t, 1), moved, dtype, "elementwise", 2));
      });

      check(`causal Softmax and LogSoftmax ${dtype}, against the explicit -Infinity mask`, () => {
        // Square (attention), fewer queries than keys (decoding with a cache: m = 1 and m < n), a batch
        // of heads, and rows longer than a CUDA block. The masked entries of the input hold +Infinity,
        // NaN or large values: the kernel must not read them.
        for (const shape of [[5, 5], [1, 9], [2, 3, 4, 7], [2, 70, 300], [1, 1], [0, 3, 3]]) {
          const m = shape[shape.length - 2];
          const n = shape[shape.length - 1];
          const masked = (i: number) => (i % n) > (Math.floor(i / n) % m) + n - m;
          const x = makeInput(rng(), shape, dtype);
          const poisoned = x.ref.data.map((v, i) => (masked(i) ? [Number.POSITIVE_INFINITY, Number.NaN, 1e4][i % 3] : v));
          const input = tensor(poisoned, shape, dtype);
          const ref = { shape: [...shape], data: x.ref.data.map((v, i) => (masked(i) ? Number.NEGATIVE_INFINITY : v)) };
          inCase(`causal Softmax ${dtype} x ${formatShape(shape)}`, () => expectValues(softmax(input, -1, { causal: true }), R.softmax(ref, false), dtype, "elementwise", 2));
          inCase(`causal LogSoftmax ${dtype} x ${formatShape(shape)}`, () =>
            expectValues(logSoftmax(input, -1, { causal: true }), R.softmax(ref, true), dtype, "scaled"),
          );
        }
      });

      check(`SoftmaxBackward ${dtype}, plain and log, plain and causal`, () => {
        // The causal cases hold NaN and +Infinity in the masked entries of dy and y: the kernel must not read them.
        for (const [shape, causal] of [[[4, 7], false], [[2, 3, 33], false], [[2, 70, 300], false], [[0, 5], false], [[5, 5], true], [[2, 3, 4, 7], true], [[2, 70, 300], true], [[1, 9], true]] as [number[], boolean][]) {
          const m = shape[shape.length - 2];
          const n = shape[shape.length - 1];
          const masked = (i: number) => causal && (i % n) > (Math.floor(i / n) % m) + n - m;
          for (const log of [false, true]) {
            const y = makeInput(rng(), shape, dtype, log ? "normal" : "uniform");
            const dy = makeInput(rng(), shape, dtype);
            const poison = (v: number, i: number) => (masked(i) ? [Number.NaN, Number.POSITIVE_INFINITY][i % 2] : v);
            const rowsOf = n === 0 ? 0 : y.ref.data.length / n;
            const want = R.ref(shape);
            for (let r = 0; r < rowsOf; r++) {
              let total = 0;
              for (let j = 0; j < n; j++) if (!masked(r * n + j)) total += log ? dy.ref.data[r * n + j] : dy.ref.data[r * n + j] * y.ref.data[r * n + j];
              for (let j = 0; j < n; j++) {
                const i = r * n + j;
                want.data[i] = masked(i) ? 0 : log ? dy.ref.data[i] - Math.exp(y.ref.data[i]) * total : y.ref.data[i] * (dy.ref.data[i] - total);
              }
            }
            const label = `SoftmaxBackward ${dtype} ${formatShape(shape)}${log ? " log" : ""}${causal ? " causal" : ""}`;
            inCase(label, () =>
              expectValues(
                softmaxBackward(tensor(dy.ref.data.map(poison), shape, dtype), tensor(y.ref.data.map(poison), shape, dtype), { log, causal }),
                want,
                dtype,
                "scaled",
                2,
              ),
            );
          }
        }
      });

      check(`LayerNorm with saved statistics, and LayerNormBackward, ${dtype}`, () => {
        // Rows of transformer widths (16-byte vectors on a device: 776), rows whose starts fall between 16-byte
        // boundaries (1030: a scalar head and tail per row), more rows than a device's block of row-warps (40), and
        // rows wider than a warp takes (8200). A device holds rows of whole vectors in registers, a row to 32-256
        // threads of 1-8 vectors each: 4096 (128 or 256 threads), 2056 (257 vectors: threads holding 2 or 3), 8192 (8
        // vectors per thread in float32).
        const shapes: [number[], boolean][] = [[[3, 8], true], [[2, 2, 16], false], [[1, 1], true], [[4, 33], true], [[0, 4], true], [[5, 776], true], [[3, 1030], false], [[40, 64], true], [[2, 8200], true], [[40, 4096], true], [[7, 2056], false], [[3, 8192], true]];
        for (const [shape, affine] of shapes) {
          const label = `${dtype} x ${formatShape(shape)} ${affine ? "with" : "without"} gamma/beta`;
          const d = shape[shape.length - 1];
          const x = makeInput(rng(), shape, dtype);
          const gamma = affine ? makeInput(rng(), [d], dtype) : undefined;
          const beta = affine ? makeInput(rng(), [d], dtype) : undefined;
          const eps = 1e-5;
          const want = R.layerNorm(x.ref, gamma?.ref ?? null, beta?.ref ?? null, eps);
          const { y, mean: mu, rstd } = layerNormWithStats(x.t, gamma?.t, beta?.t, eps);
          inCase(`LayerNorm ${label}: y`, () => expectValues(y, want.y, dtype, "scaled", 2));
          inCase(`LayerNorm ${label}: mean`, () => expectValues(mu, want.mean, "float32", "scaled"));
          inCase(`LayerNorm ${label}: rstd`, () => expectValues(rstd, want.rstd, "float32", "elementwise", 2));
          inCase(`LayerNorm ${label}: layerNorm's y`, () => expectValues(layerNorm(x.t, gamma?.t, beta?.t, eps), want.y, dtype, "scaled", 2));
          const dy = makeInput(rng(), shape, dtype);
          const grads = R.layerNormBackward(dy.ref, x.ref, gamma?.ref ?? null, eps);
          const got = layerNormBackward(dy.t, x.t, mu, rstd, gamma?.t);
          inCase(`LayerNormBackward ${label}: dx`, () => expectValues(got.dx, grads.dx, dtype, "scaled", 4));
          inCase(`LayerNormBackward ${label}: dgamma`, () => expectValues(got.dgamma, grads.dgamma, dtype, "scaled", 2));
          inCase(`LayerNormBackward ${label}: dbeta`, () => expectValues(got.dbeta, grads.dbeta, dtype, "scaled", 2));
        }
      });

      check(`CrossEntropy and CrossEntropyBackward ${dtype}`, () => {
        for (const [n, classes] of [[5, 7], [1, 1], [3, 130], [0, 4]]) {
          const label = `${dtype} logits [${n}, ${classes}]`;
          const logits = makeInput(rng(), [n, classes], dtype);
          const pick = rng();
          const t = R.ref([n], () => pick.nextInt(classes));
          const targetTensor = tensor(t.data, [n], "int32");
          const rows = R.crossEntropy(logits.ref, t.data);
          // The loss is float32 whatever the logits' dtype: only its float32 sums may differ from float64's.
          inCase(`CrossEntropy ${label} reduction none`, () => expectValues(crossEntropy(logits.t, targetTensor, "none"), rows, "float32", "scaled"));
          if (n > 0) {
            const total = rows.data.reduce((s, v) => s + v, 0);
            inCase(`CrossEntropy ${label} reduction sum`, () =>
              expectValues(crossEntropy(logits.t, targetTensor, "sum"), R.ref([], () => total), "float32", "scaled"),
            );
            inCase(`CrossEntropy ${label} reduction mean`, () =>
              expectValues(crossEntropy(logits.t, targetTensor), R.ref([], () => total / n), "float32", "scaled"),
            );
          }
          // dy is float32 (the loss's dtype); one in the logits' dtype is widened first.
          const dy = makeInput(rng(), [n], "float32");
          inCase(`CrossEntropyBackward ${label}`, () =>
            expectValues(crossEntropyBackward(logits.t, targetTensor, dy.t), R.crossEntropyBackward(logits.ref, t.data, dy.ref), dtype, "scaled"),
          );
          if (dtype !== "float32") {
            const dyLow = makeInput(rng(), [n], dtype);
            inCase(`CrossEntropyBackward ${label}, dy ${dtype}`, () =>
              expectValues(crossEntropyBackward(logits.t, targetTensor, dyLow.t), R.crossEntropyBackward(logits.ref, t.data, dyLow.ref), dtype, "scaled"),
            );
          }
        }
        // Wide rows (each thread of a device's row sees many classes, rising and falling, so a running maximum moves)
        // with a spread of +-40, and classes at -inf (masked out) that add nothing: the loss and its gradient.
        const classes = 2051;
        const wide = R.map(
          R.ref([3, classes], (i) => (i % classes === 9 || i % 300 === 1 ? Number.NEGATIVE_INFINITY : 30 * Math.sin(i * 0.37) + (i % 97) * 0.1)),
          (v) => round(dtype, v),
        );
        const wideTargets = [5, 2050, 700];
        const wideLogits = tensor(wide.data, wide.shape, dtype);
        const wideTargetTensor = tensor(wideTargets, [3], "int32");
        inCase(`CrossEntropy ${dtype} logits [3, ${classes}] with -inf classes`, () =>
          expectValues(crossEntropy(wideLogits, wideTargetTensor, "none"), R.crossEntropy(wide, wideTargets), "float32", "scaled"),
        );
        const wideDy = R.ref([3], (i) => [0.5, -1, 2][i]);
        inCase(`CrossEntropyBackward ${dtype} logits [3, ${classes}] with -inf classes`, () =>
          expectValues(
            crossEntropyBackward(wideLogits, wideTargetTensor, tensor(wideDy.data, [3], "float32")),
            R.crossEntropyBackward(wide, wideTargets, wideDy),
            dtype,
            "scaled",
          ),
        );
        // Rows left out by ignoreIndex (padding, torch's ignore_index): loss and gradient 0, the mean over the rows kept.
        {
          const logitsI = makeInput(rng(), [6, 9], dtype);
          const targetsI = [3, -100, 0, 8, -100, 5];
          const targetsIT = tensor(targetsI, [6], "int32");
          const rowsI = R.crossEntropy(logitsI.ref, targetsI, -100);
          const options = { ignoreIndex: -100 };
          inCase(`CrossEntropy ${dtype} with ignoreIndex, reduction none`, () =>
            expectValues(crossEntropy(logitsI.t, targetsIT, { ...options, reduction: "none" }), rowsI, "float32", "scaled"),
          );
          const totalI = rowsI.data.reduce((s, v) => s + v, 0);
          inCase(`CrossEntropy ${dtype} with ignoreIndex, reduction sum`, () =>
            expectValues(crossEntropy(logitsI.t, targetsIT, { ...options, reduction: "sum" }), R.ref([], () => totalI), "float32", "scaled"),
          );
          inCase(`CrossEntropy ${dtype} with ignoreIndex, reduction mean (over the 4 rows kept)`, () =>
            expectValues(crossEntropy(logitsI.t, targetsIT, options), R.ref([], () => totalI / 4), "float32", "scaled"),
          );
          const dyI = makeInput(rng(), [6], "float32");
          inCase(`CrossEntropyBackward ${dtype} with ignoreIndex`, () =>
            expectValues(
              crossEntropyBackward(logitsI.t, targetsIT, dyI.t, options),
              R.crossEntropyBackward(logitsI.ref, targetsI, dyI.ref, -100),
              dtype,
              "scaled",
            ),
          );
        }
        // A class as ignoreIndex (a tokenizer's pad id, torch's ignore_index=pad_id): its rows left out, the others kept.
        {
          const logitsP = makeInput(rng(), [6, 9], dtype);
          const targetsP = [3, 0, 0, 8, 5, 0];
          const targetsPT = tensor(targetsP, [6], "int32");
          const rowsP = R.crossEntropy(logitsP.ref, targetsP, 0);
          const totalP = rowsP.data.reduce((s, v) => s + v, 0);
          inCase(`CrossEntropy ${dtype} with a class as ignoreIndex, reduction none`, () =>
            expectValues(crossEntropy(logitsP.t, targetsPT, { ignoreIndex: 0, reduction: "none" }), rowsP, "float32", "scaled"),
          );
          inCase(`CrossEntropy ${dtype} with a class as ignoreIndex, reduction mean (over the 3 rows kept)`, () =>
            expectValues(crossEntropy(logitsP.t, targetsPT, { ignoreIndex: 0 }), R.ref([], () => totalP / 3), "float32", "scaled"),
          );
          const dyP = makeInput(rng(), [6], "float32");
          inCase(`CrossEntropyBackward ${dtype} with a class as ignoreIndex`, () =>
            expectValues(crossEntropyBackward(logitsP.t, targetsPT, dyP.t, { ignoreIndex: 0 }), R.crossEntropyBackward(logitsP.ref, targetsP, dyP.ref, 0), dtype, "scaled"),
          );
          // Another target out of range is still an error.
          expectThrowsKeeping(
            () => crossEntropy(logitsP.t, tensor([3, 0, -1, 8, 5, 0], [6], "int32"), { ignoreIndex: 0, reduction: "none" }).dataSync(),
            IndexError,
            "crossEntropy: target -1 at row 2 is out of range [0, 9)",
          );
        }
        // torch's class weights with ignoreIndex and labelSmoothing (built from ops beside the kernel): "mean" divides
        // by the sum of weight[target] over the rows kept.
        {
          const logitsW = makeInput(rng(), [6, 5], dtype);
          const weightW = makeInput(rng(), [5], "float32", "positive");
          const targetsW = [3, -100, 0, 4, 0, 1];
          const targetsWT = tensor(targetsW, [6], "int32");
          for (const labelSmoothing of [0, 0.2]) {
            const label = `CrossEntropy ${dtype} with weight, ignoreIndex and labelSmoothing ${labelSmoothing}`;
            const want = R.crossEntropyWeighted(logitsW.ref, targetsW, { weight: weightW.ref.data, ignoreIndex: -100, labelSmoothing });
            const total = want.rows.data.reduce((s, v) => s + v, 0);
            const options = { weight: weightW.t, ignoreIndex: -100, labelSmoothing };
            inCase(`${label}, reduction none`, () => expectValues(crossEntropy(logitsW.t, targetsWT, { ...options, reduction: "none" }), want.rows, "float32", "scaled"));
            inCase(`${label}, reduction sum`, () => expectValues(crossEntropy(logitsW.t, targetsWT, { ...options, reduction: "sum" }), R.ref([], () => total), "float32", "scaled"));
            inCase(`${label}, reduction mean`, () => expectValues(crossEntropy(logitsW.t, targetsWT, options), R.ref([], () => total / want.divisor), "float32", "scaled"));
          }
        }
        // Class probabilities (float targets of the logits' shape), with and without weight and labelSmoothing.
        {
          const logitsQ = makeInput(rng(), [2, 3, 5], dtype);
          const probs = makeInput(rng(), [2, 3, 5], dtype, "positive");
          const weightQ = makeInput(rng(), [5], "float32", "positive");
          for (const [weighted, labelSmoothing] of [[false, 0], [true, 0], [true, 0.3]] as const) {
            const label = `CrossEntropy ${dtype} with class probabilities${weighted ? ", weight" : ""}, labelSmoothing ${labelSmoothing}`;
            const want = R.crossEntropyProbabilities(R.reshape(logitsQ.ref, [6, 5]), probs.ref, { weight: weighted ? weightQ.ref.data : undefined, labelSmoothing });
            const total = want.data.reduce((s, v) => s + v, 0);
            const options = { weight: weighted ? weightQ.t : null, labelSmoothing };
            inCase(`${label}, reduction none`, () =>
              expectValues(crossEntropy(logitsQ.t, probs.t, { ...options, reduction: "none" }), R.reshape(want, [2, 3]), "float32", "scaled"),
            );
            inCase(`${label}, reduction sum`, () => expectValues(crossEntropy(logitsQ.t, probs.t, { ...options, reduction: "sum" }), R.ref([], () => total), "float32", "scaled"));
            inCase(`${label}, reduction mean`, () => expectValues(crossEntropy(logitsQ.t, probs.t, options), R.ref([], () => total / 6), "float32", "scaled"));
          }
        }
        // Leading dims are flattened by the op.
        const logits3 = makeInput(rng(), [2, 3, 5], dtype);
        const targets3 = tensor([0, 4, 2, 1, 3, 4], [2, 3], "int32");
        const rows3 = R.crossEntropy(R.reshape(logits3.ref, [6, 5]), [0, 4, 2, 1, 3, 4]);
        inCase(`CrossEntropy ${dtype} logits [2, 3, 5]`, () =>
          expectValues(crossEntropy(logits3.t, targets3, "none"), R.reshape(rows3, [2, 3]), "float32", "scaled"),
        );
      });
    }
    // Host backends throw before the op runs; device backends throw at the first read after it.
    check("CrossEntropy with out-of-range targets throws IndexError, by the first read, and reads nothing out of bounds", () => {
      const logits = zeros([2, 3]);
      const targets = tensor([1, 3], [2], "int32");
      let result: Tensor | undefined;
      expectThrowsKeeping(
        () => {
          result = crossEntropy(logits, targets, "none");
          result.dataSync();
        },
        IndexError,
        "crossEntropy: target 3 at row 1 is out of range [0, 3)",
      );
      // A device backend that ran the op still returns a finite first row.
      if (result) expect(Number.isFinite(result.dataSync()[0]), "CrossEntropy float32 logits [2, 3] targets [1, 3]: row 0").toBe(true);
      expectThrowsKeeping(() => crossEntropyBackward(logits, targets, ones([2])).dataSync(), IndexError, "crossEntropyBackward: target 3 at row 1 is out of range [0, 3)");
      // Rows left out by ignoreIndex are not errors.
      expect(Array.from(crossEntropy(logits, tensor([1, -100], [2], "int32"), { ignoreIndex: -100, reduction: "none" }).dataSync())[1]).toBe(0);
    });
  });

  describe("scaledDotProductAttention (Attention, AttentionBackward) and cachedAttention (CachedAttention)", () => {
    for (const dtype of FLOAT_DTYPES) {
      check(`Attention ${dtype}: out and float32 lse`, () => {
        for (const c of ATTENTION_CASES) {
          const q = makeInput(rng(), [...c.batch, c.m, c.d], dtype);
          const k = makeInput(rng(), [...c.batch, c.n, c.d], dtype);
          const v = makeInput(rng(), [...c.batch, c.n, c.d], dtype);
          const want = R.attention(q.ref, k.ref, v.ref, c.causal, c.scale ?? 1 / Math.sqrt(c.d));
          const { out, lse } = attentionWithStats(q.t, k.t, v.t, { causal: c.causal, scale: c.scale });
          const label = `Attention ${dtype}, ${attentionLabel(c)}`;
          inCase(`${label}: out`, () => expectValues(out, want.out, dtype, "scaled", 2, want.magnitudes.out));
          inCase(`${label}: lse`, () => expectValues(lse, want.lse, "float32", "scaled", 1, want.magnitudes.lse));
        }
      });

      check(`CachedAttention ${dtype}: each query over the keys up to its position`, () => {
        // [batch..., M, N, D], positions (one past N: the keys end at N - 1; -1: no key, zeros), and a scale other
        // than the default (0: uniform over the kept keys; negative).
        const cases: [number[], number, number, number, number[], number?][] = [
          [[2, 3], 1, 9, 16, [5]],
          [[2], 3, 7, 8, [0, 3, 6]],
          [[], 4, 6, 5, [-1, 2, 9, 5]],
          [[1, 2], 2, 40, 64, [37, 39]],
          [[2], 3, 7, 8, [0, 3, 6], 0],
          [[1, 2], 2, 40, 64, [37, 39], -0.5],
        ];
        for (const [batch, m, n, d, positions, given] of cases) {
          const q = makeInput(rng(), [...batch, m, d], dtype);
          const k = makeInput(rng(), [...batch, n, d], dtype);
          const v = makeInput(rng(), [...batch, n, d], dtype);
          const scale = given ?? 1 / Math.sqrt(d);
          const want = R.cachedAttention(q.ref, k.ref, v.ref, positions, scale);
          inCase(`CachedAttention ${dtype}, batch [${batch}] M ${m} N ${n} D ${d} positions [${positions}]${given === undefined ? "" : `, scale ${given}`}`, () =>
            expectValues(cachedAttention(q.t, k.t, v.t, tensor(positions, [m], "int32"), { scale: given }), want.out, dtype, "scaled", 2, want.magnitudes.out),
          );
        }
      });

      check(`CachedAttention ${dtype} with newKeys and newValues: written into the cache at the positions, then attended`, () => {
        // [batch..., M, N, D], positions within [0, N): a decoding step (M = 1, the last position too), a prompt's
        // chunk, positions out of order.
        const cases: [number[], number, number, number, number[]][] = [
          [[2, 3], 1, 9, 16, [5]],
          [[1, 2], 1, 40, 64, [39]],
          [[2], 3, 7, 8, [0, 1, 2]],
          [[], 2, 6, 5, [4, 1]],
        ];
        for (const [index, [batch, m, n, d, positions]] of cases.entries()) {
          const q = makeInput(rng(), [...batch, m, d], dtype);
          const k = makeInput(rng(), [...batch, n, d], dtype);
          const v = makeInput(rng(), [...batch, n, d], dtype);
          // Once, a second tensor shares k's buffer: k cannot be written in place, so the op copies (indexCopy's way)
          // and the other tensor keeps the old keys.
          const held = index === 2 ? zeros(k.t.shape, dtype) : null;
          held?.assign(k.t);
          const newKeys = makeInput(rng(), [...batch, m, d], dtype);
          const newValues = makeInput(rng(), [...batch, m, d], dtype);
          // The caches as they must be after the call: each new row at its position.
          const written = (cache: R.Ref, rows: R.Ref): R.Ref => {
            const data = Float64Array.from(cache.data);
            const heads = cache.data.length / (n * d);
            for (let h = 0; h < heads; h++)
              for (let i = 0; i < m; i++) data.set(rows.data.subarray((h * m + i) * d, (h * m + i + 1) * d), (h * n + positions[i]) * d);
            return { shape: cache.shape, data };
          };
          const keys = written(k.ref, newKeys.ref);
          const values = written(v.ref, newValues.ref);
          const scale = 1 / Math.sqrt(d);
          const want = R.cachedAttention(q.ref, keys, values, positions, scale);
          const label = `CachedAttention ${dtype} with new keys, batch [${batch}] M ${m} N ${n} D ${d} positions [${positions}]`;
          const out = cachedAttention(q.t, k.t, v.t, tensor(positions, [m], "int32"), { newKeys: newKeys.t, newValues: newValues.t });
          inCase(`${label}: out`, () => expectValues(out, want.out, dtype, "scaled", 2, want.magnitudes.out));
          inCase(`${label}: keys written`, () => expect(Array.from(k.t.dataSync())).toEqual(Array.from(keys.data)));
          inCase(`${label}: values written`, () => expect(Array.from(v.t.dataSync())).toEqual(Array.from(values.data)));
          if (held !== null) inCase(`${label}: a tensor sharing k's buffer keeps the old keys`, () => expect(Array.from(held.dataSync())).toEqual(Array.from(k.ref.data)));
        }
      });

      check(`AttentionBackward ${dtype}: dq, dk and dv from out and lse`, () => {
        for (const c of ATTENTION_CASES) {
          const scale = c.scale ?? 1 / Math.sqrt(c.d);
          const q = makeInput(rng(), [...c.batch, c.m, c.d], dtype);
          const k = makeInput(rng(), [...c.batch, c.n, c.d], dtype);
          const v = makeInput(rng(), [...c.batch, c.n, c.d], dtype);
          const dout = makeInput(rng(), [...c.batch, c.m, c.d], dtype);
          // The saved outputs as a forward stores them: out rounded to the dtype, lse to float32.
          const forward = R.attention(q.ref, k.ref, v.ref, c.causal, scale);
          const out = R.map(forward.out, (x) => round(dtype, x));
          const lse = R.map(forward.lse, (x) => round("float32", x));
          const want = R.attentionBackward(dout.ref, q.ref, k.ref, v.ref, out, lse, c.causal, scale);
          const got = attentionBackward(dout.t, q.t, k.t, v.t, tensor(out.data, out.shape, dtype), tensor(lse.data, lse.shape, "float32"), {
            causal: c.causal,
            scale: c.scale,
          });
          const label = `AttentionBackward ${dtype}, ${attentionLabel(c)}`;
          // Rows that keep one key (N = 1, a causal first row) cancel to dq = dk = 0 but for rounding: errors scale with the terms.
          inCase(`${label}: dq`, () => expectValues(got.dq, want.dq, dtype, "scaled", 4, want.magnitudes.dq));
          inCase(`${label}: dk`, () => expectValues(got.dk, want.dk, dtype, "scaled", 4, want.magnitudes.dk));
          inCase(`${label}: dv`, () => expectValues(got.dv, want.dv, dtype, "scaled", 4, want.magnitudes.dv));
        }
      });

      check(`PackedAttention and PackedAttentionBackward ${dtype}: each head read from and written to its packed rows`, () => {
        for (const c of PACKED_CASES) {
          const scale = c.scale ?? 1 / Math.sqrt(c.d);
          const qkv = makeInput(rng(), [...c.batch, c.t, 3, c.h, c.d], dtype);
          const [q, k, v] = [0, 1, 2].map((part) => R.unpackHeads(qkv.ref, part));
          const want = R.attention(q, k, v, c.causal, scale);
          const label = `PackedAttention ${dtype}, qkv ${formatShape(qkv.t.shape)}${c.causal ? ", causal" : ""}${c.scale === undefined ? "" : `, scale ${c.scale}`}`;
          const { out, lse } = packedAttentionWithStats(qkv.t, { causal: c.causal, scale: c.scale });
          inCase(`${label}: out [...batch, T, H, D]`, () => expectValues(out, R.swapHeads(want.out), dtype, "scaled", 2, want.magnitudes.out));
          inCase(`${label}: lse [...batch, H, T]`, () => expectValues(lse, want.lse, "float32", "scaled", 1, want.magnitudes.lse));

          const dout = makeInput(rng(), [...c.batch, c.t, c.h, c.d], dtype);
          const savedOut = R.map(R.swapHeads(want.out), (x) => round(dtype, x));
          const savedLse = R.map(want.lse, (x) => round("float32", x));
          const grads = R.attentionBackward(R.swapHeads(dout.ref), q, k, v, R.swapHeads(savedOut), savedLse, c.causal, scale);
          const dqkv = packedAttentionBackward(dout.t, qkv.t, tensor(savedOut.data, savedOut.shape, dtype), tensor(savedLse.data, savedLse.shape, "float32"), {
            causal: c.causal,
            scale: c.scale,
          });
          const parts = split(dqkv, 3, dqkv.rank - 3);
          for (const [index, name] of (["dq", "dk", "dv"] as const).entries()) {
            inCase(`${label}: dqkv's ${name} part`, () => expectValues(parts[index], R.packHeads([grads[name]]), dtype, "scaled", 4, grads.magnitudes[name]));
          }
        }
      });
    }
  });
}
