import {
  DTypeError,
  ShapeError,
  ValueError,
  arange,
  argmax,
  cast,
  dispose,
  expandDims,
  flatten,
  full,
  fullOn,
  getBackendInstance,
  layerNorm,
  manualSeed,
  permute,
  rand,
  randint,
  randn,
  scalar,
  scatterAdd,
  softmax,
  squeeze,
  sum,
  tensor,
  tidy,
  transpose,
  zeros,
} from "@blocksparse/core";
import { describe, expect, it } from "vitest";

describe("creating tensors", () => {
  it("infers shapes from nested arrays and validates them", () => {
    tidy(() => {
      const t = tensor([
        [1, 2, 3],
        [4, 5, 6],
      ]);
      expect(t.shape).toEqual([2, 3]);
      expect(t.dtype).toBe("float32");
      expect(tensor(Int32Array.from([1, 2])).dtype).toBe("int32");
      expect(scalar(3).shape).toEqual([]);
      expect(() => tensor([[1, 2], [3]])).toThrow(ShapeError);
      expect(() => tensor([1, 2, 3], [2, 2])).toThrow("tensor: 3 values do not fill shape [2, 2]");
      expect(() => tensor([1.5], [1], "int32")).toThrow("tensor: value 1.5 at index 0 is not a 32-bit integer");
      expect(() => tensor([1], [1], "float64" as "float32")).toThrow(DTypeError);
      expect(() => full([2, -1], 0)).toThrow(ShapeError);
      expect(() => full([2], 0.5, "int32")).toThrow(ValueError);
    });
  });

  it("float values past the dtype's largest finite one are refused, not stored as Infinity (as torch.full)", () => {
    tidy(() => {
      expect(() => full([2], 1e6, "float16")).toThrow("full: value 1000000 is outside float16's range");
      // 65519 rounds down to float16's largest finite value, 65520 up to Infinity.
      expect(full([1], -65519, "float16").toArray()).toEqual([-65504]);
      expect(() => full([1], 65520, "float16")).toThrow(ValueError);
      const bfloat16Max = (2 - 2 ** -7) * 2 ** 127;
      expect(full([1], bfloat16Max, "bfloat16").toArray()).toEqual([bfloat16Max]);
      expect(() => full([1], (2 - 2 ** -8) * 2 ** 127, "bfloat16")).toThrow("full: value");
      expect(full([1], -3.4028234663852886e38).toArray()).toEqual([-3.4028234663852886e38]);
      expect(() => full([1], -1e39)).toThrow("full: value -1e+39 is outside float32's range");
      // fullOn rounds as the scalar operands of ops do (x * 1e39 is Infinity in float32, in torch too).
      expect(fullOn(getBackendInstance(), [1], 1e39).toArray()).toEqual([Number.POSITIVE_INFINITY]);
      // Infinity and NaN given as such are stored.
      expect(full([2], Number.NEGATIVE_INFINITY, "float16").toArray()).toEqual([Number.NEGATIVE_INFINITY, Number.NEGATIVE_INFINITY]);
      expect(full([1], Number.NaN, "bfloat16").toArray()).toEqual([Number.NaN]);
    });
  });

  it("a value that rounds to Infinity through float32 on its way to a half dtype is refused too", () => {
    tidy(() => {
      // 65519.99999 is below 65520 but rounds to it in float32, which float16 stores as Infinity.
      expect(() => full([1], 65519.99999, "float16")).toThrow("full: value 65519.99999 is outside float16's range");
      expect(() => full([1], -65519.999, "float16")).toThrow(ValueError);
      expect(() => full([1], (2 - 2 ** -8) * 2 ** 127 * (1 - 2 ** -40), "bfloat16")).toThrow(ValueError);
      expect(full([1], 65519.99, "float16").toArray()).toEqual([65504]);
    });
  });

  it("a value that is not a number is a ValueError naming its type, not a TypeError from the range check", () => {
    expect(() => full([1], 1n as unknown as number)).toThrow("full: value must be a number, got bigint");
  });

  it("int32 values past int32's range are refused, not wrapped", () => {
    tidy(() => {
      expect(() => full([2], 2 ** 31, "int32")).toThrow("full: value 2147483648 is outside int32's range");
      expect(full([1], -(2 ** 31), "int32").toArray()).toEqual([-(2 ** 31)]);
      expect(() => randint(0, 2 ** 32, [4], { seed: 1 })).toThrow("randint: [0, 4294967296) does not fit int32");
      expect(() => randint(-(2 ** 31) - 1, 0, [4], { seed: 1 })).toThrow(ValueError);
      // The widest range that fits is drawn in full, every value inside it.
      const wide = randint(-(2 ** 31), 2 ** 31, [64], { seed: 2 }).toArray();
      expect(wide.some((v) => v < 0) && wide.some((v) => v > 0)).toBe(true);
    });
  });

  it("rounds to half dtypes on creation and widens on read", async () => {
    tidy(() => {
      const h = tensor([0.1, 65520, 1 / 3], [3], "float16");
      const values = h.dataSync();
      expect(values[0]).toBeCloseTo(0.0999755859375, 12);
      expect(values[1]).toBe(Number.POSITIVE_INFINITY);
      const raw = tensor(Uint16Array.from([0x3c00]), [1], "bfloat16");
      expect(raw.dataSync()[0]).toBeCloseTo(0.0078125, 10); // 0x3c00 read as bfloat16 bits
    });
    const t = tensor([1, 2]);
    expect(Array.from(await t.data())).toEqual([1, 2]);
    t.dispose();
  });

  it("arange counts up or down and seeded random ops repeat", () => {
    tidy(() => {
      expect(arange(4).toArray()).toEqual([0, 1, 2, 3]);
      expect(arange(5, 1, -2).toArray()).toEqual([5, 3]);
      expect(arange(2, 5, 1, "int32").dtype).toBe("int32");
      expect(() => arange(0, 3, 0)).toThrow(ValueError);
      expect(randn([5], { seed: 3 }).toArray()).toEqual(randn([5], { seed: 3 }).toArray());
      manualSeed(11);
      const first = rand([4]).toArray();
      manualSeed(11);
      expect(rand([4]).toArray()).toEqual(first);
      expect(first.every((v) => v >= 0 && v < 1)).toBe(true);
    });
  });

  it("toString shows dtype, shape, backend and the edges of the data", () => {
    tidy(() => {
      expect(tensor([1, 2.5], [2]).toString()).toBe("Tensor(float32, [2], js) [1.0, 2.500]");
      expect(arange(10, undefined, 1, "int32").toString()).toBe("Tensor(int32, [10], js) [0, 1, 2, ..., 7, 8, 9]");
      const gone = zeros([2]);
      gone.dispose();
      expect(gone.toString()).toBe("Tensor(disposed, float32, [2])");
      expect(scalar(4).item()).toBe(4);
      expect(() => zeros([2]).item()).toThrow(ShapeError);
    });
  });
});

describe("requiresGrad", () => {
  it("is refused on an int32 tensor with a DTypeError naming the dtype, as PyTorch refuses it", () => {
    const indices = tensor(new Int32Array([0, 1]));
    expect(() => {
      indices.requiresGrad = true;
    }).toThrow(DTypeError);
    expect(() => {
      indices.requiresGrad = true;
    }).toThrow(/requiresGrad: tensor \d+ \(\[2\] int32\) cannot require gradients/);
    expect(indices.requiresGrad).toBe(false);
    indices.requiresGrad = false;
    indices.dispose();
  });

  it("must be a boolean: a truthy string or number is a ValueError, not a flag turned on (as torch's TypeError)", () => {
    const t = tensor([1, 2]);
    for (const value of ["no", 1, 0, null, undefined, {}]) {
      expect(() => {
        (t as { requiresGrad: unknown }).requiresGrad = value;
      }, String(value)).toThrow(ValueError);
    }
    expect(() => {
      (t as { requiresGrad: unknown }).requiresGrad = "no";
    }).toThrow(/requiresGrad: tensor \d+ \(\[2\] float32\): requiresGrad must be a boolean, got "no"/);
    // Nothing was set, and no observer was told of a change.
    expect(t.requiresGrad).toBe(false);
    t.dispose();
  });

  it("is accepted on every float dtype", () => {
    for (const dtype of ["float32", "float16", "bfloat16"] as const) {
      const t = tensor([1, 2], [2], dtype);
      t.requiresGrad = true;
      expect(t.requiresGrad).toBe(true);
      t.dispose();
    }
  });
});

describe("shape helpers built on reshape and transpose", () => {
  it("flatten, expandDims, squeeze, permute", () => {
    tidy(() => {
      const x = zeros([2, 1, 3]);
      expect(flatten(x).shape).toEqual([6]);
      expect(flatten(x, 1).shape).toEqual([2, 3]);
      expect(expandDims(x, -1).shape).toEqual([2, 1, 3, 1]);
      expect(squeeze(x).shape).toEqual([2, 3]);
      expect(() => squeeze(x, 0)).toThrow("squeeze: axis 0 has size 2, expected 1");
      expect(permute(x, [2, 0, 1]).shape).toEqual([3, 2, 1]);
      expect(transpose(x).shape).toEqual([3, 1, 2]);
    });
  });

  it("softmax along a non-last axis sums to one along that axis", () => {
    tidy(() => {
      const x = randn([3, 4, 2], { seed: 5 });
      const y = softmax(x, 1).dataSync();
      for (let i = 0; i < 3; i++) {
        for (let k = 0; k < 2; k++) {
          let s = 0;
          for (let j = 0; j < 4; j++) s += y[i * 8 + j * 2 + k];
          expect(s).toBeCloseTo(1, 6);
        }
      }
      expect(argmax(tensor([[1, 5, 5], [7, 0, 7]]), 1).toArray()).toEqual([1, 0]);
      expect(layerNorm(x).shape).toEqual([3, 4, 2]);
    });
  });

  it("dispose() accepts nested containers", () => {
    const a = zeros([1]);
    const b = zeros([1]);
    dispose({ a, list: [b] });
    expect(a.isDisposed && b.isDisposed).toBe(true);
  });
});

describe("int32 sums wrap modulo 2^32 exactly (cuda sums in int64 and wraps on store)", () => {
  // (2^31 - 1) * (2^23 + 1) modulo 2^32, as an int32: a float64 running sum past 2^53 rounded, and the js backend
  // returned 2143289344.
  const count = 2 ** 23 + 1;
  const wrapped = Number(BigInt.asIntN(32, BigInt(count) * 2147483647n));

  it("sum", () => {
    tidy(() => {
      expect(sum(full([count], 2147483647, "int32")).item()).toBe(wrapped);
      expect(sum(full([1, count], 2147483647, "int32"), 1).toArray()).toEqual([wrapped]);
      // Column sums (the reduced axes leading) and a middle axis (the general walk) wrap the same way.
      expect(sum(full([count, 2], 2147483647, "int32"), 0).toArray()).toEqual([wrapped, wrapped]);
      expect(sum(full([1, count, 1], 2147483647, "int32"), 1).toArray()).toEqual([wrapped]);
    });
  });

  it("scatterAdd", () => {
    tidy(() => {
      expect(scatterAdd(zeros([count], "int32"), full([count], 2147483647, "int32"), [2]).toArray()).toEqual([wrapped, 0]);
    });
  });
});

describe("cast to int32", () => {
  it("truncates toward zero and wraps past int32 (JavaScript's ToInt32, as cuda's cast); NaN and infinities give 0", () => {
    tidy(() => {
      const x = tensor([2.7, -2.7, 3e9, -3e9, 2 ** 31, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]);
      expect(cast(x, "int32").toArray()).toEqual([2, -2, -1294967296, 1294967296, -(2 ** 31), 0, 0, 0]);
    });
  });
});
