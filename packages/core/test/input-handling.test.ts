import {
  JsBackend,
  add,
  argmax,
  keep,
  OutOfMemoryError,
  ShapeError,
  adamUpdate,
  attentionBackward,
  attentionWithStats,
  cachedAttention,
  captureGraph,
  crossEntropy,
  crossEntropyBackward,
  disableLeakGuard,
  enableLeakGuard,
  layerNorm,
  layerNormBackward,
  layerNormWithStats,
  linear,
  logSoftmax,
  matmul,
  max,
  mean,
  min,
  multiTensorAdamUpdate,
  multiTensorAdamUpdateInPlace,
  ones,
  packedAttention,
  packedAttentionBackward,
  packedAttentionWithStats,
  rand,
  randint,
  randn,
  scaledDotProductAttention,
  scatterAdd,
  softmax,
  softmaxBackward,
  sum,
  tensor,
  tidy,
  type Tensor,
  ValueError,
  where,
  zeros,
} from "@blocksparse/core";
import { describe, expect, it } from "vitest";

describe("null as an optional options argument means no options", () => {
  it("every op with optional options gives the same result for null as for undefined", () => {
    tidy(() => {
      const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
      const b = tensor([1, 0, 2, 1, 0, 3], [3, 2]);
      const q = tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [2, 4]);
      const qkv = zeros([2, 3, 1, 4]);
      const same = (run: (options: null | undefined) => Tensor) =>
        expect(run(null).dataSync()).toEqual(run(undefined).dataSync());
      same((o) => matmul(a, b, o));
      same((o) => linear(a, tensor([1, 1, 1], [1, 3]), null, o));
      same((o) => softmax(a, -1, o));
      same((o) => logSoftmax(a, -1, o));
      same((o) => softmaxBackward(a, softmax(a), o));
      same((o) => crossEntropy(a, tensor([0, 2], [2], "int32"), o));
      same((o) => crossEntropyBackward(a, tensor([0, 2], [2], "int32"), zeros([2]), o));
      same((o) => scaledDotProductAttention(q, q, q, o));
      same((o) => attentionWithStats(q, q, q, o).lse);
      const { out, lse } = attentionWithStats(q, q, q);
      same((o) => attentionBackward(q, q, q, q, out, lse, o).dq);
      same((o) => packedAttention(qkv, o));
      const packed = packedAttentionWithStats(qkv, null);
      same((o) => packedAttentionBackward(packed.out, qkv, packed.out, packed.lse, o));
      same((o) => cachedAttention(q, q, q, tensor([0, 1], [2], "int32"), o));
      expect(rand([2], null).shape).toEqual([2]);
      expect(randn([2], null).shape).toEqual([2]);
      expect(randint(0, 3, [2], null).shape).toEqual([2]);
    });
    expect(() => enableLeakGuard(null)).not.toThrow();
    disableLeakGuard();
    expect(() => captureGraph(() => 0, null)).toThrow("captureGraph: backend 'js' cannot record graphs");
  });

  it("an options argument that is not an object is a ValueError naming the op", () => {
    tidy(() => {
      expect(() => matmul(zeros([2, 2]), zeros([2, 2]), "transposeA" as never)).toThrow("matmul: options must be an object or null, got string");
      expect(() => linear(zeros([2, 2]), zeros([2, 2]), null, 1n as never)).toThrow("linear: options must be an object or null, got bigint");
      expect(() => randn([2], 3 as never)).toThrow("randn: options must be an object");
      expect(() => enableLeakGuard(5 as never)).toThrow("enableLeakGuard: options must be an object");
    });
  });
});

describe("matmul's transpose flags", () => {
  it("refuse what is not a boolean (a truthy string would transpose) with a ValueError naming the flag", () => {
    tidy(() => {
      const x = zeros([2, 3]);
      expect(thrown(() => matmul(x, x, { transposeB: "no" as never }))).toEqual(["ValueError", 'matmul: transposeB must be a boolean, got "no"']);
      expect(thrown(() => matmul(x, x, { transposeA: 1 as never }))).toEqual(["ValueError", "matmul: transposeA must be a boolean, got 1"]);
      expect(() => matmul(x, x, { transposeA: null as never })).toThrow("matmul: transposeA must be a boolean, got null");
      expect(matmul(x, x, { transposeB: true, transposeA: undefined }).shape).toEqual([2, 2]);
    });
  });
});

describe("the reductions' keepDims flag", () => {
  // As torch.sum(x, 0, keepdim="no"), a TypeError there: a truthy string or number would keep the dims.
  it("refuses what is not a boolean with a ValueError naming the op and the flag", () => {
    tidy(() => {
      const x = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
      expect(thrown(() => sum(x, 0, "no" as never))).toEqual(["ValueError", 'sum: keepDims must be a boolean, got "no"']);
      expect(thrown(() => mean(x, 1, 1 as never))).toEqual(["ValueError", "mean: keepDims must be a boolean, got 1"]);
      expect(thrown(() => max(x, undefined, "false" as never))).toEqual(["ValueError", 'max: keepDims must be a boolean, got "false"']);
      expect(thrown(() => min(x, [0, 1], null as never))).toEqual(["ValueError", "min: keepDims must be a boolean, got null"]);
      expect(thrown(() => argmax(x, 1, {} as never))).toEqual(["ValueError", "argmax: keepDims must be a boolean, got object"]);
      expect(sum(x, 0, true).shape).toEqual([1, 3]);
      expect(argmax(x, 1, undefined).shape).toEqual([2]);
    });
  });
});

describe("layerNorm's null gamma and beta", () => {
  // torch's F.layer_norm(x, shape, None, None): null is absent, as biasActivation's null bias.
  it("mean none, as undefined does, in the forward and the backward", () => {
    tidy(() => {
      const x = tensor([1, 2, 4, -1, 0, 3], [2, 3]);
      const gamma = tensor([2, 1, 0.5]);
      expect(layerNorm(x, null, null).dataSync()).toEqual(layerNorm(x).dataSync());
      expect(layerNorm(x, gamma, null).dataSync()).toEqual(layerNorm(x, gamma).dataSync());
      expect(layerNorm(x, null, gamma, 1e-3).dataSync()).toEqual(layerNorm(x, undefined, gamma, 1e-3).dataSync());
      const { mean: m, rstd } = layerNormWithStats(x, null, null);
      expect(layerNormBackward(x, x, m, rstd, null).dx.dataSync()).toEqual(layerNormBackward(x, x, m, rstd).dx.dataSync());
    });
  });
});

describe("a Tensor or an array where an op's options go", () => {
  it("is a ValueError naming the op and what was passed, not the Tensor's fields as unknown options", () => {
    tidy(() => {
      const x = zeros([2, 2]);
      // matmul(a, b, c) from torch's addmm habit, crossEntropy(logits, targets, weight), randn(shape, [mean, std]).
      expect(thrown(() => matmul(x, x, x as never))).toEqual(["ValueError", "matmul: options must be an object or null, got a Tensor"]);
      expect(() => softmax(x, -1, x as never)).toThrow("softmax: options must be an object or null, got a Tensor");
      expect(() => crossEntropy(x, zeros([2], "int32"), zeros([2]) as never)).toThrow("crossEntropy: options must be an object or null, got a Tensor");
      expect(() => scaledDotProductAttention(x, x, x, x as never)).toThrow("scaledDotProductAttention: options must be an object or null, got a Tensor");
      expect(() => randn([2], [0, 1] as never)).toThrow("randn: options must be an object or null, got an array");
      expect(() => linear(x, x, null, [] as never)).toThrow(ValueError);
      expect(() => linear(x, x, null, [] as never)).toThrow("linear: options must be an object or null, got an array");
      expect(() => matmul(x, x, 2 as never)).toThrow("matmul: options must be an object or null, got number");
    });
  });

  it("a typed array, an ArrayBuffer, a Map, a Date or another built-in object is refused as a Tensor is, naming what it is", () => {
    tidy(() => {
      const x = zeros([2, 2]);
      // Each used to pass: no own keys (an empty typed array, a Map, a Date) read as no options, or its indices as unknown options.
      expect(thrown(() => matmul(x, x, new Float32Array(0) as never))).toEqual(["ValueError", "matmul: options must be an object or null, got a Float32Array"]);
      expect(() => matmul(x, x, new Float32Array([1, 0]) as never)).toThrow("matmul: options must be an object or null, got a Float32Array");
      expect(() => softmax(x, -1, new ArrayBuffer(8) as never)).toThrow("softmax: options must be an object or null, got an ArrayBuffer");
      expect(() => randn([2], new Map([["seed", 1]]) as never)).toThrow("randn: options must be an object or null, got a Map");
      expect(() => rand([2], new Date() as never)).toThrow("rand: options must be an object or null, got a Date");
      expect(() => randint(0, 2, [2], new Set() as never)).toThrow("randint: options must be an object or null, got a Set");
      expect(() => scaledDotProductAttention(x, x, x, new Int32Array(2) as never)).toThrow("scaledDotProductAttention: options must be an object or null, got an Int32Array");
      expect(() => crossEntropy(x, zeros([2], "int32"), /mean/ as never)).toThrow("crossEntropy: options must be an object or null, got a RegExp");
      expect(() => captureGraph(() => 0, Promise.resolve() as never)).toThrow("captureGraph: options must be an object or null, got a Promise");
      expect(() => enableLeakGuard(new DataView(new ArrayBuffer(1)) as never)).toThrow("enableLeakGuard: options must be an object or null, got a DataView");
      // Plain objects still pass, with or without a prototype, and so do instances of the caller's own classes.
      expect(matmul(x, x, Object.assign(Object.create(null), { transposeA: true })).shape).toEqual([2, 2]);
      class MatmulOptions {
        transposeB = true;
      }
      expect(matmul(x, x, new MatmulOptions()).shape).toEqual([2, 2]);
    });
    expect(() => tidy(new Uint8Array(1) as never)).toThrow("tidy: expected a function, got a Uint8Array");
    expect(() => keep(new Map() as never)).toThrow("keep: expected a Tensor, got a Map");
  });

  it("tidy, keep and the elementwise ops say null or an array where they said object", () => {
    expect(() => tidy([] as never)).toThrow("tidy: expected a function, got an array");
    expect(() => keep([zeros([1])] as never)).toThrow("keep: expected a Tensor, got an array");
    tidy(() => {
      expect(() => add(zeros([1]), null as never)).toThrow("add: b must be a Tensor or a number, got null");
      expect(() => add([1] as never, zeros([1]))).toThrow("add: a must be a Tensor or a number, got an array");
    });
  });
});

/** The error fn throws: its class and message. */
function thrown(fn: () => unknown): [string, string] {
  try {
    fn();
  } catch (error) {
    return [(error as Error).name, (error as Error).message];
  }
  return ["nothing", ""];
}

describe("an unknown option is refused, not ignored", () => {
  it("is a ValueError naming the op, each unknown key and the op's options", () => {
    tidy(() => {
      const logits = zeros([4, 3]);
      const targets = zeros([4], "int32");
      // torch's options, from plain JS: they used to change nothing without a word.
      expect(thrown(() => crossEntropy(logits, targets, { labelSmooth: 0.1 } as never))).toEqual([
        "ValueError",
        "crossEntropy: unknown option 'labelSmooth'; the options are reduction, ignoreIndex, labelSmoothing, weight",
      ]);
      expect(thrown(() => crossEntropy(logits, targets, { reduction: "sum", ignore_index: -100, label_smoothing: 0.1 } as never))).toEqual([
        "ValueError",
        "crossEntropy: unknown options 'ignore_index', 'label_smoothing'; the options are reduction, ignoreIndex, labelSmoothing, weight",
      ]);
      expect(() => crossEntropyBackward(logits, targets, zeros([4]), { ignore_index: -100 } as never)).toThrow("crossEntropyBackward: unknown option 'ignore_index'");
      expect(() => matmul(zeros([2, 2]), zeros([2, 2]), { transpose_b: true } as never)).toThrow("matmul: unknown option 'transpose_b'; the options are transposeA, transposeB");
      expect(() => linear(zeros([2, 2]), zeros([2, 2]), null, { activation: "relu" } as never)).toThrow("linear: unknown option 'activation'");
      expect(() => softmax(zeros([2, 2]), -1, { dim: 0 } as never)).toThrow("softmax: unknown option 'dim'");
      expect(() => softmaxBackward(zeros([2, 2]), zeros([2, 2]), { scale: 1 } as never)).toThrow("softmaxBackward: unknown option 'scale'");
      const q = zeros([2, 4]);
      expect(() => scaledDotProductAttention(q, q, q, { is_causal: true } as never)).toThrow("scaledDotProductAttention: unknown option 'is_causal'; the options are causal, scale");
      expect(() => cachedAttention(q, q, q, tensor([0, 1], [2], "int32"), { causal: true } as never)).toThrow(
        "cachedAttention: unknown option 'causal'; the options are scale, newKeys, newValues",
      );
      expect(() => randn([2], { generator: 1 } as never)).toThrow("randn: unknown option 'generator'");
      expect(() => rand([2], { mean: 0 } as never)).toThrow("rand: unknown option 'mean'");
      expect(() => randint(0, 2, [2], { dtype: "float32" } as never)).toThrow("randint: unknown option 'dtype'; the options are seed");
      expect(() => enableLeakGuard({ window: 10 } as never)).toThrow("enableLeakGuard: unknown option 'window'");
      expect(() => captureGraph(() => 0, { device: "cuda" } as never)).toThrow("captureGraph: unknown option 'device'; the options are backend");
    });
  });

  it("each Adam op knows its own options: step, steps, copies", () => {
    tidy(() => {
      const t = () => [zeros([3])];
      expect(() => adamUpdate(zeros([3]), zeros([3]), zeros([3]), zeros([3]), { lr: 0.1, step: 1, amsgrad: true } as never)).toThrow(
        "adamUpdate: unknown option 'amsgrad'; the options are lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay, step",
      );
      expect(() => adamUpdate(zeros([3]), zeros([3]), zeros([3]), zeros([3]), { lr: 0.1, steps: [1] } as never)).toThrow("adamUpdate: unknown option 'steps'");
      // copies is multiTensorAdamUpdateInPlace's: the out-of-place op would drop them.
      expect(() => multiTensorAdamUpdate(t(), t(), t(), t(), { lr: 0.1, steps: [1], copyDType: "float16", copies: [zeros([3], "float16")] } as never)).toThrow(
        "multiTensorAdamUpdate: unknown option 'copies'; the options are lr, beta1, beta2, epsilon, weightDecay, decoupledWeightDecay, steps, lrValue, copyDType",
      );
      expect(() => multiTensorAdamUpdateInPlace(t(), t(), t(), t(), { lr: 0.1, steps: [1], betas: [0.9, 0.99] } as never)).toThrow(
        "multiTensorAdamUpdateInPlace: unknown option 'betas'",
      );
      const copies = [zeros([3], "float16")];
      multiTensorAdamUpdateInPlace(t(), t(), t(), t(), { lr: 0.1, beta1: 0.9, beta2: 0.99, epsilon: 1e-8, weightDecay: 0, decoupledWeightDecay: true, steps: [1], lrValue: null, copyDType: "float16", copies });
      expect(adamUpdate(zeros([3]), zeros([3]), zeros([3]), zeros([3]), { lr: 0.1, beta1: 0.9, beta2: 0.99, epsilon: 1e-8, weightDecay: 0, decoupledWeightDecay: false, step: 1 }).param.shape).toEqual([3]);
    });
  });

  it("Adam's decoupledWeightDecay must be a boolean: a string 'false' does not turn AdamW's decay on", () => {
    tidy(() => {
      const args = () => [ones([2]), ones([2]), zeros([2]), zeros([2])] as const;
      const options = { lr: 0.1, weightDecay: 0.5, step: 1 };
      const asString = () => adamUpdate(...args(), { ...options, decoupledWeightDecay: "false" as never });
      expect(asString).toThrow(ValueError);
      expect(asString).toThrow('adamUpdate: decoupledWeightDecay must be a boolean, got "false"');
      const [p, g, m, v] = args();
      expect(() => multiTensorAdamUpdate([p], [g], [m], [v], { lr: 0.1, weightDecay: 0.5, steps: [1], decoupledWeightDecay: 1 as never })).toThrow(
        "multiTensorAdamUpdate: decoupledWeightDecay must be a boolean, got 1",
      );
      // Left out or null: Adam's L2 decay, as false.
      const adam = adamUpdate(...args(), { ...options, decoupledWeightDecay: false }).param.toArray();
      expect(adamUpdate(...args(), options).param.toArray()).toEqual(adam);
      expect(adamUpdate(...args(), { ...options, decoupledWeightDecay: null as never }).param.toArray()).toEqual(adam);
    });
  });

  it("every documented option passes, undefined values included", () => {
    tidy(() => {
      expect(crossEntropy(zeros([4, 3]), zeros([4], "int32"), { reduction: "sum", ignoreIndex: undefined }).shape).toEqual([]);
      expect(matmul(zeros([2, 2]), zeros([2, 2]), { transposeA: true, transposeB: undefined }).shape).toEqual([2, 2]);
      expect(softmax(zeros([2, 2]), -1, { causal: true }).shape).toEqual([2, 2]);
      expect(randn([2], { mean: 0, std: 1, dtype: "float32", seed: 1 }).shape).toEqual([2]);
      expect(rand([2], { low: 0, high: 1, dtype: "float32", seed: 1 }).shape).toEqual([2]);
      const q = zeros([2, 4]);
      expect(scaledDotProductAttention(q, q, q, { causal: true, scale: 0.5 }).shape).toEqual([2, 4]);
    });
    expect(() => enableLeakGuard({ windowSteps: 2, growingWindows: 2, minGrowth: 2, topSites: 1, onLeak: () => {} })).not.toThrow();
    disableLeakGuard();
  });
});

describe("where's broadcasting error", () => {
  it("names the shapes of condition, a and b, not the broadcast of two of them", () => {
    tidy(() => {
      expect(thrown(() => where(zeros([2, 3], "int32"), zeros([2, 1]), zeros([4])))).toEqual([
        "ShapeError",
        "where: condition [2, 3], a [2, 1] and b [4] cannot be broadcast together",
      ]);
      expect(() => where(zeros([3], "int32"), zeros([2, 1]), 1)).not.toThrow();
      expect(() => where(zeros([5], "int32"), 0, 1)).not.toThrow();
      expect(() => where(zeros([2], "int32"), zeros([3]), 1)).toThrow(ShapeError);
      expect(() => where(zeros([2], "int32"), zeros([3]), 1)).toThrow("where: condition [2], a [3] and b [] cannot be broadcast together");
    });
  });
});

describe("rand's bounds", () => {
  it("low == high gives low everywhere", () => {
    tidy(() => expect(Array.from(rand([3], { low: 2, high: 2, seed: 1 }).dataSync())).toEqual([2, 2, 2]));
  });

  it("no draw is the excluded high, in any float dtype", () => {
    // A draw rounding up to high was stored as high: seed 1 gave 2067 of these 2^20 bfloat16 values equal to 1.
    tidy(() => {
      for (const dtype of ["bfloat16", "float16", "float32"] as const) {
        for (const [low, high] of [[0, 1], [-1, 0], [0, 3]]) {
          const values = rand([2 ** 20], { low, high, dtype, seed: 1 }).dataSync();
          let outside = 0;
          for (const v of values) if (!(v >= low && v < high)) outside++;
          expect({ dtype, low, high, outside }).toEqual({ dtype, low, high, outside: 0 });
        }
      }
    });
  });
});

describe("js allocation failures", () => {
  it("a storage array past the engine's limit is an OutOfMemoryError naming the bytes, elements and dtype", () => {
    const backend = new JsBackend();
    let caught: unknown;
    try {
      backend.allocate("float16", 2 ** 40);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(OutOfMemoryError);
    expect((caught as Error).message).toMatch(/^js: cannot allocate 2199023255552 bytes for 1099511627776 float16 elements, 0 in use: out of memory \(/);
    expect(backend.memory()).toEqual({ bytesInUse: 0, buffers: 0 });
  });

  it("scatterAdd into a shape past the limit is an OutOfMemoryError too (its float64 sums threw a bare RangeError first)", () => {
    tidy(() => {
      const indices = tensor([0], [1], "int32");
      const updates = ones([1]);
      expect(() => scatterAdd(indices, updates, [2 ** 40])).toThrow(OutOfMemoryError);
      expect(() => scatterAdd(indices, tensor([1], [1], "int32"), [2 ** 40])).toThrow(OutOfMemoryError);
    });
  });
});
