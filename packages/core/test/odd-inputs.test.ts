import {
  CoreError,
  DTypeError,
  DisposedTensorError,
  IndexError,
  JsBackend,
  BackendError,
  ShapeError,
  ValueError,
  adamUpdate,
  add,
  biasActivation,
  cast,
  crossEntropy,
  argmax,
  div,
  equal,
  flatten,
  captureGraph,
  fromStorage,
  full,
  fullOn,
  getBackendInstance,
  gelu,
  keep,
  less,
  lessEqual,
  logSoftmax,
  manualSeed,
  memory,
  mul,
  multiTensorAdamUpdate,
  ones,
  onesLike,
  oneHot,
  rand,
  randn,
  randint,
  registerBackend,
  removeBackend,
  reshape,
  slice,
  split,
  squeeze,
  stack,
  sum,
  tensor,
  tensorOn,
  tidy,
  zeros,
  zerosLike,
  BsrPattern,
  bsrLinear,
  bsrLinearActivation,
  bsrMatmul,
  bsrMatmulActivationBackward,
  sampledMatmul,
  type Tensor,
} from "@blocksparse/core";
import { describe, expect, it } from "vitest";

describe("Adam refuses negative hyperparameters, as torch.optim.Adam does", () => {
  const run = (options: { lr: number; epsilon?: number; weightDecay?: number }) =>
    tidy(() => adamUpdate(ones([2]), ones([2]), zeros([2]), zeros([2]), { ...options, step: 1 }).param.toArray());
  const runMulti = (options: { lr: number; epsilon?: number; weightDecay?: number }) =>
    tidy(() => multiTensorAdamUpdate([ones([2])], [ones([2])], [zeros([2])], [zeros([2])], { ...options, steps: [1] }).params[0].toArray());

  it("a negative lr, epsilon or weightDecay is a ValueError naming it", () => {
    // Before: lr -1 stepped uphill (params 2), epsilon -1 gave -Infinity, weightDecay -1 grew the weights.
    for (const step of [run, runMulti]) {
      expect(() => step({ lr: -1 })).toThrow(/lr must be >= 0, got -1/);
      expect(() => step({ lr: 0.1, epsilon: -1 })).toThrow(/epsilon must be >= 0, got -1/);
      expect(() => step({ lr: 0.1, weightDecay: -0.5 })).toThrow(/weightDecay must be >= 0, got -0.5/);
      expect(() => step({ lr: -1 })).toThrow(ValueError);
    }
  });

  it("zero lr, epsilon and weightDecay still run", () => {
    expect(run({ lr: 0, epsilon: 0, weightDecay: 0 })).toEqual([1, 1]);
    expect(runMulti({ lr: 0.5, epsilon: 0 })).toEqual([0.5, 0.5]);
  });
});

describe("tensor() names data and shapes it cannot take", () => {
  it("a DataView or a BigInt typed array is a ValueError, not a TypeError or a shape message", () => {
    expect(() => tensor(new DataView(new ArrayBuffer(8)) as never)).toThrow(/tensor: data must be .* typed array of numbers, got DataView/);
    expect(() => tensor(new BigInt64Array(2) as never)).toThrow(ValueError);
  });

  it("a shape that is not an array is a ShapeError", () => {
    expect(() => tensor([1, 2], 2 as never)).toThrow(ShapeError);
    expect(tensor(new Float32Array([1, 2, 3, 4]), [2, 2]).shape).toEqual([2, 2]);
  });
});

describe("randn checks mean and std, as rand checks its bounds", () => {
  it("a negative or non-finite std or mean is a ValueError", () => {
    expect(() => randn([2], { std: -1, seed: 1 })).toThrow(/randn: std must be >= 0, got -1/);
    expect(() => randn([2], { mean: Number.NaN, seed: 1 })).toThrow(ValueError);
    expect(() => randn([2], { std: Number.POSITIVE_INFINITY, seed: 1 })).toThrow(ValueError);
    expect(() => randn([2], { std: "1" as never, seed: 1 })).toThrow(ValueError);
  });

  it("std 0 gives the mean", () => {
    expect(randn([3], { mean: 2, std: 0, seed: 1 }).toArray()).toEqual([2, 2, 2]);
  });
});

describe("seeds that are not safe integers", () => {
  it("are a ValueError naming the function and seed (SeededRandom's RangeError named neither), the global generator left as it was", () => {
    for (const seed of [2 ** 60, 1.5, Number.NaN, "1" as never]) {
      const got = typeof seed === "string" ? '"1"' : String(seed);
      for (const [op, call] of [
        ["randn", () => randn([2], { seed })],
        ["rand", () => rand([2], { seed })],
        ["randint", () => randint(0, 4, [2], { seed })],
        ["manualSeed", () => manualSeed(seed)],
      ] as const) {
        expect(call).toThrow(ValueError);
        expect(call).toThrow(`${op}: seed must be a safe integer (|seed| <= 2^53 - 1), got ${got}`);
      }
    }
    manualSeed(7);
    const first = randn([3]).toArray();
    manualSeed(7);
    expect(() => manualSeed(1.5)).toThrow(ValueError);
    expect(randn([3]).toArray()).toEqual(first);
  });
});

describe("axes that are not numbers", () => {
  it("sum and squeeze name axes of the wrong kind (they threw a TypeError)", () => {
    expect(() => sum(ones([2, 3]), "1" as never)).toThrow(/sum: axes must be a number or an array of numbers/);
    expect(() => squeeze(ones([1, 3]), "0" as never)).toThrow(ValueError);
    expect(squeeze(ones([1, 3, 1]), [-1, 0]).shape).toEqual([3]);
  });

  it("an axis given as a string is quoted in the message (\"got 1\" read as if axis 1 were refused)", () => {
    expect(() => argmax(ones([2, 3]), "1" as never)).toThrow('argmax: axis must be an integer, got "1"');
  });

  it("an axis in a list that is not an integer is named as such (sum said axis 1 was out of range for rank 2)", () => {
    expect(() => sum(ones([2, 3]), ["1"] as never)).toThrow('sum: axis must be an integer, got "1"');
    expect(() => squeeze(ones([1, 3]), [0.5])).toThrow("squeeze: axis must be an integer, got 0.5");
    expect(() => sum(ones([2, 3]), [0, 2])).toThrow("sum: axis 2 is out of range for rank 2");
  });
});

describe("memory helpers name a wrong argument", () => {
  it("tidy without a function and keep without a tensor are ValueErrors, and tidy leaks nothing", () => {
    const before = memory().numTensors;
    expect(() => tidy(5 as never)).toThrow(/tidy: expected a function, got number/);
    expect(() => keep(undefined as never)).toThrow(/keep: expected a Tensor, got undefined/);
    expect(memory().numTensors).toBe(before);
  });

  it("item() on a disposed tensor says it was disposed, whatever its size", () => {
    const t = ones([2]);
    t.dispose();
    expect(() => t.item()).toThrow(DisposedTensorError);
  });
});

describe("a number a half dtype cannot hold joins a binary op at float32 precision", () => {
  const f16 = (values: number[]) => tensor(values, [values.length], "float16");
  /** What rounding the exact float32 result to float16 stores. */
  const roundedF16 = (value: number) => tensor([value], [1], "float16").toArray()[0];

  it("mul by 65536 and by 1e-8 in float16 round the float32 result once (they gave Infinity and 0)", () => {
    tidy(() => {
      const x = f16([1e-3, 1000]);
      const [small, large] = x.toArray();
      const up = mul(x, 65536);
      expect(up.dtype).toBe("float16");
      expect(up.toArray()).toEqual([roundedF16(Math.fround(small * 65536)), Number.POSITIVE_INFINITY]);
      const down = mul(1e-8, x);
      expect(down.toArray()[1]).toBe(roundedF16(Math.fround(large * Math.fround(1e-8))));
      expect(down.toArray()[1]).toBeGreaterThan(0);
      const tiny = f16([1e-7]);
      expect(div(tiny, 1e-8).toArray()).toEqual([roundedF16(Math.fround(tiny.toArray()[0] / Math.fround(1e-8)))]);
    });
  });

  it("comparisons with such a number compare to the number, not to 0 or Infinity", () => {
    tidy(() => {
      const cmp = less(f16([0, 1e-3]), 1e-8);
      expect(cmp.dtype).toBe("int32");
      expect(cmp.toArray()).toEqual([1, 0]);
      expect(less(f16([60000]), 1e5).toArray()).toEqual([1]);
    });
  });

  it("a number stored as a half subnormal joins at float32 precision (mul by 3e-8 in float16 gave twice the product)", () => {
    tidy(() => {
      const x = f16([10000, 2 ** -24]);
      for (const factor of [3e-8, 1e-7, 1e-6]) {
        expect(mul(x, factor).toArray()[0]).toBe(roundedF16(Math.fround(10000 * Math.fround(factor))));
      }
      // 2^-24, float16's smallest subnormal, is not equal to 3e-8 nor at most it.
      expect(equal(x, 3e-8).toArray()).toEqual([0, 0]);
      expect(lessEqual(x, 3e-8).toArray()).toEqual([0, 0]);
      const big = tensor([1e30], [1], "bfloat16");
      expect(mul(big, 1e-39).toArray()[0]).toBe(tensor([Math.fround(big.toArray()[0] * Math.fround(1e-39))], [1], "bfloat16").toArray()[0]);
    });
  });

  it("numbers a half dtype holds take the usual path, and the widened path leaves no temporary", () => {
    const [one, two, thousand] = [f16([1]), f16([2]), f16([1000])];
    const before = memory().numTensors;
    expect(add(one, 0.5).toArray()).toEqual([1.5]);
    // 70000 is past float16's range, but so is 2 x 70000: Infinity either way.
    expect(mul(two, 70000).toArray()).toEqual([Number.POSITIVE_INFINITY]);
    // The widened path's casts and scalar are gone afterwards.
    expect(mul(thousand, 1e-8).toArray()[0]).toBeGreaterThan(0);
    expect(memory().numTensors).toBe(before + 3);
  });
});

describe("zerosLike and onesLike follow their input's backend", () => {
  class SecondJs extends JsBackend {
    override readonly name = "js-second";
  }
  it("a tensor on another backend than the active one gets zeros and ones there (they were made on the active one)", () => {
    registerBackend("js-second", () => new SecondJs(), 0);
    try {
      tidy(() => {
        const x = tensor([1, 2], [2], "int32").to("js-second");
        for (const like of [zerosLike(x), onesLike(x)]) {
          expect(like.backend.name).toBe("js-second");
          expect(like.dtype).toBe("int32");
        }
        // What a layer does with it: add to the tensor it mirrors (a BackendError before).
        expect(add(x, onesLike(x)).toArray()).toEqual([2, 3]);
      });
    } finally {
      removeBackend("js-second");
    }
  });
});

describe("stack names itself when its tensors live on two backends", () => {
  class SecondJs extends JsBackend {
    override readonly name = "js-second";
  }
  it("is a BackendError from stack (it came from the concat stack runs)", () => {
    registerBackend("js-second", () => new SecondJs(), 0);
    try {
      tidy(() => {
        const here = zeros([2]);
        const there = zeros([2]).to("js-second");
        expect(() => stack([here, there])).toThrowError(BackendError);
        expect(() => stack([here, there])).toThrowError("stack: tensors[1] is on backend 'js-second' but tensors[0] is on 'js'");
      });
    } finally {
      removeBackend("js-second");
    }
  });
});

describe("Tensor.assign names an argument that is not a tensor", () => {
  it("null or a number is a ValueError, not a TypeError", () => {
    const x = tensor([1]);
    expect(() => x.assign(null as never)).toThrow(/assign: other must be a Tensor, got null/);
    expect(() => x.assign(3 as never)).toThrow(ValueError);
    x.dispose();
  });
});

describe("rand checks its bounds against the dtype", () => {
  it("bounds past the dtype's largest value are a ValueError, as torch's uniform_ (float16 [0, 1e5) stored a third of its draws as Infinity)", () => {
    expect(() => rand([4], { low: 0, high: 1e5, dtype: "float16" })).toThrow(/rand: \[0, 100000\) is outside float16's range/);
    expect(() => rand([4], { low: -1e39, high: 0 })).toThrow(ValueError);
    expect(() => rand([4], { low: 0, high: 3.4e38, dtype: "bfloat16" })).toThrow(ValueError);
    // The largest values themselves are bounds.
    for (const [high, dtype] of [[65504, "float16"], [3.3895313892515355e38, "bfloat16"], [3.4028234663852886e38, "float32"]] as const) {
      const draws = tidy(() => rand([1000], { low: -high, high, dtype, seed: 3 }).toArray());
      expect(draws.every(Number.isFinite)).toBe(true);
    }
  });
});

describe("log-sum-exp of huge logits keeps log(sum) (max + log(sum) rounded it away)", () => {
  it("crossEntropy of tied logits of 1e30 and 1e20 is log of the class count", () => {
    tidy(() => {
      // Before: log(sum) + max - x_t gave 0 for both.
      expect(crossEntropy(tensor([1e30, 1e30], [1, 2]), tensor([0], [1], "int32")).toArray()).toEqual([Math.fround(Math.log(2))]);
      expect(crossEntropy(tensor([1e20, 1e20, 1e20], [1, 3]), tensor([2], [1], "int32"), "none").toArray()).toEqual([Math.fround(Math.log(3))]);
    });
  });

  it("logSoftmax of tied logits of 1e30 is -log 2, as softmax gives 0.5", () => {
    tidy(() => {
      const y = logSoftmax(tensor([1e30, 1e30, 1e20, 1e20, 1e20, Number.NEGATIVE_INFINITY], [2, 3])).toArray();
      const [big, small] = [Math.fround(1e30), Math.fround(1e20)];
      expect(y).toEqual([-Math.log(2), -Math.log(2), small - big, -Math.log(2), -Math.log(2), Number.NEGATIVE_INFINITY].map(Math.fround));
    });
  });
});

describe("a wrong argument named in a message is never serialised whole", () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const big = 2n as never;

  it("a BigInt or a cyclic object where a shape, axes, dtype or option goes is a typed error, not JSON.stringify's TypeError", () => {
    const x = ones([2]);
    const cases: [() => unknown, string][] = [
      [() => zeros([big]), "full: shape must be an array of non-negative integers, got [2]"],
      [() => full([cyclic] as never, 1), "full: shape must be an array of non-negative integers, got [object]"],
      [() => reshape(x, [big]), "reshape: shape must be an array of non-negative integers, got [2]"],
      [() => sum(x, big), "sum: axes must be a number or an array of numbers, got 2"],
      [() => sum(x, cyclic as never), "sum: axes must be a number or an array of numbers, got object"],
      [() => cast(x, cyclic as never), "cast: unknown dtype object"],
      [() => tensor([1], [1], big), "tensor: unknown dtype 2 (float32, float16, bfloat16, int32)"],
      [() => oneHot(tensor(new Int32Array([1])), 2, big), "oneHot: unknown dtype 2"],
      [() => gelu(x, cyclic as never), 'gelu: approximate must be "none" or "tanh", got object'],
      [() => biasActivation(x, null, big), 'biasActivation: activation must be one of "relu", "gelu", "gelu_tanh", got 2'],
      [() => crossEntropy(ones([1, 2]), tensor(new Int32Array([0])), { reduction: cyclic as never }), 'crossEntropy: reduction must be "mean", "sum" or "none", got object'],
      [() => multiTensorAdamUpdate([x], [x], [x], [x], { lr: 1, steps: [1], copyDType: big }), "multiTensorAdamUpdate: copyDType must be a float dtype (float32, float16, bfloat16) or null, got 2"],
    ];
    for (const [run, message] of cases) {
      expect(run).toThrow(CoreError);
      expect(run).toThrow(message);
    }
  });

  it("a Tensor passed as a dtype is named as a Tensor, not dumped field by field", () => {
    const x = ones([2]);
    expect(() => cast(x, x as never)).toThrow(new DTypeError("cast: unknown dtype a Tensor"));
  });
});

describe("zerosLike and onesLike check their tensor", () => {
  it("a disposed tensor is a DisposedTensorError (zeros were made as if it were live), null a ValueError (a TypeError)", () => {
    const t = ones([2, 3]);
    t.dispose();
    expect(() => zerosLike(t)).toThrow(DisposedTensorError);
    expect(() => onesLike(t)).toThrow("onesLike: t: tensor");
    expect(() => zerosLike(null as never)).toThrow(new ValueError("zerosLike: t must be a Tensor, got null"));
    expect(() => onesLike(3 as never)).toThrow(ValueError);
  });
});

describe("a number given as a string is quoted in the message, as axes are", () => {
  it("slice, split, crossEntropy's ignoreIndex, Adam's step, randint and assign say what they got (\"begin[0] = 1 is not an integer\")", () => {
    const x = ones([4]);
    const cases: [() => unknown, string][] = [
      [() => slice(x, ["1"] as never), 'slice: begin[0] must be an integer, got "1"'],
      [() => slice(x, [0], ["2"] as never), 'slice: size[0] must be -1 or a non-negative integer, got "2"'],
      // A negative size is not one that exceeds the dim.
      [() => slice(x, [0], [-2]), "slice: size[0] must be -1 or a non-negative integer, got -2"],
      [() => slice(x, [1], [4]), "slice: size[0] = 4 from 1 exceeds dim 4"],
      [() => split(x, ["2", "2"] as never), 'split: sizes[0] must be a non-negative integer, got "2"'],
      [() => crossEntropy(ones([1, 2]), tensor(new Int32Array([0])), { ignoreIndex: "-100" as never }), 'crossEntropy: ignoreIndex must be an int32 (e.g. -100, or a pad id), got "-100"'],
      [() => adamUpdate(x, x, x, x, { lr: 0.1, step: "1" as never }), 'adamUpdate: step must be an integer >= 1, got "1"'],
      [() => randint("0" as never, 5, [2]), 'randint: expected integers low < high, got ["0", 5)'],
      [() => x.assign("x" as never), "assign: other must be a Tensor, got string"],
    ];
    for (const [run, message] of cases) {
      expect(run).toThrow(CoreError);
      expect(run).toThrow(message);
    }
    x.dispose();
  });
});

describe("flatten and fromStorage check their arguments under their own names", () => {
  it("flatten of a scalar takes the axes of [1], as torch's, and refuses others (flatten(scalar, 5) was [1])", () => {
    const s = tensor(2);
    expect(flatten(s).shape).toEqual([1]);
    expect(flatten(s, 0, -1).shape).toEqual([1]);
    expect(() => flatten(s, 5)).toThrow(new IndexError("flatten: axis 5 is out of range for rank 1"));
    s.dispose();
  });

  it("fromStorage names itself (the errors said upload)", () => {
    expect(() => fromStorage(new Float32Array(2), [2], "float16")).toThrow(new ValueError("fromStorage: values are not the storage array of float16"));
    expect(() => fromStorage([1, 2] as never, [2], "float32")).toThrow(new ValueError("fromStorage: values are not the storage array of float32"));
    expect(() => fromStorage(new Int32Array(2), [3], "int32")).toThrow(new ShapeError("fromStorage: 2 values do not fill shape [3]"));
  });
});

describe("fullOn, tensorOn and captureGraph check their backend, and tensorOn its values", () => {
  it("a backend name or null is a ValueError saying what to pass (it was a TypeError from inside the engine)", () => {
    const message = (op: string, got: string) => `${op}: backend must be a Backend object (getBackendInstance(name) returns one), got ${got}`;
    expect(() => fullOn("js" as never, [2], 1)).toThrow(new ValueError(message("fullOn", '"js"')));
    expect(() => tensorOn("js" as never, [1, 2], [2])).toThrow(new ValueError(message("tensorOn", '"js"')));
    expect(() => tensorOn(null as never, [1, 2], [2])).toThrow(new ValueError(message("tensorOn", "null")));
    // It said "backend 'undefined' cannot record graphs".
    expect(() => captureGraph(() => zeros([1]), { backend: "js" as never })).toThrow(new ValueError(message("captureGraph", '"js"')));
  });

  it("an object that is not a Backend, such as a tensor given for its backend, is a ValueError too (a TypeError from inside the engine)", () => {
    const message = (op: string, got: string) => `${op}: backend must be a Backend object (getBackendInstance(name) returns one), got ${got}`;
    const x = zeros([2]);
    // fullOn said "Cannot read properties of undefined (reading 'Fill')", tensorOn "backend.allocate is not a function".
    expect(() => fullOn(x as never, [2], 1)).toThrow(new ValueError(message("fullOn", "a Tensor (a tensor's backend is tensor.backend)")));
    expect(() => tensorOn({} as never, [1, 2], [2])).toThrow(new ValueError(message("tensorOn", "object")));
    // It said "backend 'undefined' cannot record graphs".
    expect(() => captureGraph(() => zeros([1]), { backend: x as never })).toThrow(new ValueError(message("captureGraph", "a Tensor (a tensor's backend is tensor.backend)")));
    x.dispose();
  });

  it("tensorOn refuses values that are not numbers (a string gave NaNs) and names itself for a size mismatch", () => {
    const js = getBackendInstance("js");
    expect(() => tensorOn(js, "ab" as never, [2])).toThrow(new ValueError("tensorOn: values must be an array or a typed array of numbers, got string"));
    expect(() => tensorOn(js, 5 as never, [1])).toThrow(new ValueError("tensorOn: values must be an array or a typed array of numbers, got number"));
    expect(() => tensorOn(js, [1, "2"] as never, [2])).toThrow(new ValueError('tensorOn: values[1] must be a number, got "2"'));
    expect(() => tensorOn(js, [null] as never, [1])).toThrow(new ValueError("tensorOn: values[0] must be a number, got null"));
    expect(() => tensorOn(js, [1], [2])).toThrow(new ShapeError("tensorOn: 1 values do not fill shape [2]"));
    const t = tensorOn(js, new Float64Array([1.5, -2]), [2], "bfloat16");
    expect(t.toArray()).toEqual([1.5, -2]);
    t.dispose();
  });
});

describe("the block-sparse ops name a pattern given in another place", () => {
  const pattern = BsrPattern.random([8, 8], { blockShape: [4, 4], density: 0.5, seed: 1 });
  const values = zeros([pattern.nnzBlocks, 4, 4]);
  const x = zeros([2, 8]);
  const swapped = pattern as unknown as Tensor;
  const asValues = values as unknown as BsrPattern;

  it("says the pattern comes third when it was passed second", () => {
    expect(() => bsrLinear(x, swapped, asValues)).toThrow("bsrLinear: pattern must be a BsrPattern from @blocksparse/format, got a Tensor (the pattern is the third argument; it came second)");
    expect(() => bsrLinearActivation(x, swapped, asValues, null, "relu")).toThrow(/^bsrLinearActivation: .*got a Tensor \(the pattern is the third argument; it came second\)$/);
    expect(() => bsrMatmul(x, swapped, asValues)).toThrow(/^bsrMatmul: .*it came second\)$/);
    expect(() => bsrMatmulActivationBackward(x, swapped, asValues, x, "relu")).toThrow(/^bsrMatmulActivationBackward: .*it came second\)$/);
    expect(() => sampledMatmul(x, swapped, asValues)).toThrow(/^sampledMatmul: .*it came second\)$/);
  });

  it("names what it got in the pattern's place otherwise", () => {
    expect(() => bsrLinear(x, values, {} as BsrPattern)).toThrow(/^bsrLinear: pattern must be a BsrPattern from @blocksparse\/format, got object$/);
    expect(() => sampledMatmul(x, x, undefined as unknown as BsrPattern)).toThrow(/^sampledMatmul: pattern must be a BsrPattern from @blocksparse\/format, got undefined$/);
  });
});
