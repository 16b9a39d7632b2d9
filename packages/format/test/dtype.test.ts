import { describe, expect, it } from "vitest";
import {
  BSR_DTYPES,
  BsrFormatError,
  bfloat16BitsToFloat32,
  bfloat16BitsToFloat32Array,
  decodeValues,
  encodeValues,
  float16BitsToFloat32,
  float16BitsToFloat32Array,
  float16BitsToFloat32Into,
  bfloat16BitsToFloat32Into,
  float32ToBfloat16BitsInto,
  float32ToFloat16BitsInto,
  float32ArrayToBfloat16Bits,
  float32ArrayToFloat16Bits,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
} from "../src/index.js";
import { SeededRandom } from "../src/random.js";
import { thrown } from "./helpers.js";

const f32 = Math.fround;

describe("float16", () => {
  it.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [0, 0x0000],
    [-0, 0x8000],
    [65504, 0x7bff],
    [65519.99, 0x7bff], // below the halfway point to 65536
    [65520, 0x7c00], // the tie above the largest half rounds to even: infinity
    [1e6, 0x7c00],
    [-1e6, 0xfc00],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal: even is 0
    [f32(2 ** -25 * (1 + 2 ** -23)), 0x0001],
    [3 * 2 ** -25, 0x0002], // tie between 1 and 2 subnormal steps: even is 2
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [1 + 2 ** -11, 0x3c00], // tie, even mantissa stays
    [1 + 3 * 2 ** -11, 0x3c02], // tie, odd mantissa rounds up
    [f32(0.1), 0x2e66],
    [f32(1 / 3), 0x3555],
    [2 ** -130, 0x0000], // float32 subnormal
    [-(2 ** -130), 0x8000],
  ])("float32ToFloat16Bits(%d) = %i", (value, bits) => {
    expect(float32ToFloat16Bits(value)).toBe(bits);
  });

  it("keeps NaN a NaN", () => {
    const bits = float32ToFloat16Bits(Number.NaN);
    expect(bits & 0x7c00).toBe(0x7c00);
    expect(bits & 0x3ff).not.toBe(0);
    expect(float16BitsToFloat32(bits)).toBeNaN();
  });

  it("widens every half exactly and narrows it back to the same bits", () => {
    const wrong: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = float16BitsToFloat32(bits);
      if (Number.isNaN(value)) {
        if ((bits & 0x7c00) !== 0x7c00 || (bits & 0x3ff) === 0) wrong.push(bits);
        continue;
      }
      // An independent decoding in float64.
      const sign = bits & 0x8000 ? -1 : 1;
      const exponent = (bits >> 10) & 0x1f;
      const mantissa = bits & 0x3ff;
      const expected =
        exponent === 0x1f
          ? sign * Number.POSITIVE_INFINITY
          : exponent === 0
            ? sign * mantissa * 2 ** -24
            : sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
      if (!Object.is(value, expected) || float32ToFloat16Bits(value) !== bits) wrong.push(bits);
    }
    expect(wrong).toEqual([]);
  });

  it("rounds random float32 values to the nearest half, ties to even", () => {
    // Reference: the finite halves in ascending order, searched in float64.
    const halves: { value: number; bits: number }[] = [];
    for (let bits = 0; bits <= 0x7bff; bits++) halves.push({ value: float16BitsToFloat32(bits), bits });
    const nearest = (x: number): number => {
      const magnitude = Math.abs(x);
      const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
      // Beyond max + half an ulp (65520) is infinity; exactly 65520 ties to even (infinity).
      if (magnitude >= 65520) return sign | 0x7c00;
      let low = 0;
      let high = halves.length - 1;
      while (high - low > 1) {
        const mid = (low + high) >> 1;
        if (halves[mid].value <= magnitude) low = mid;
        else high = mid;
      }
      const below = halves[low];
      const above = halves[high];
      const dBelow = magnitude - below.value;
      const dAbove = above.value - magnitude;
      if (dBelow < dAbove || (magnitude <= below.value)) return sign | below.bits;
      if (dAbove < dBelow) return sign | above.bits;
      return sign | ((below.bits & 1) === 0 ? below.bits : above.bits);
    };
    const random = new SeededRandom(7);
    const input = new Float32Array(20000);
    const bitsView = new Uint32Array(input.buffer);
    for (let i = 0; i < input.length; i++) {
      // Exponents around the half range: subnormals, normals, overflow.
      const exponent = 127 - 30 + random.nextInt(50);
      bitsView[i] = (random.nextUint32() & 0x807fffff) | (exponent << 23);
    }
    const out = float32ArrayToFloat16Bits(input);
    const wrong = Array.from(input).filter((x, i) => out[i] !== nearest(x));
    expect(wrong).toEqual([]);
  });
});

describe("bfloat16", () => {
  it.each([
    [1, 0x3f80],
    [-2, 0xc000],
    [0, 0x0000],
    [-0, 0x8000],
    [1 + 2 ** -8, 0x3f80], // tie, even stays
    [1 + 3 * 2 ** -8, 0x3f82], // tie, odd rounds up
    [f32(1 + 2 ** -8 + 2 ** -20), 0x3f81],
    [f32(3.4028234663852886e38), 0x7f80], // float32 max rounds up to infinity
    [Number.POSITIVE_INFINITY, 0x7f80],
    [Number.NEGATIVE_INFINITY, 0xff80],
    [2 ** -133, 0x0001], // subnormal bfloat16
    [f32(Math.PI), 0x4049],
  ])("float32ToBfloat16Bits(%d) = %i", (value, bits) => {
    expect(float32ToBfloat16Bits(value)).toBe(bits);
  });

  it("keeps NaN a NaN, including payloads in the low bits only", () => {
    const input = new Float32Array(2);
    const view = new Uint32Array(input.buffer);
    view[0] = 0x7f800001; // a NaN whose payload would be truncated away
    view[1] = 0xffc00000;
    for (const bits of float32ArrayToBfloat16Bits(input)) expect(bfloat16BitsToFloat32(bits)).toBeNaN();
  });

  it("widens every bfloat16 exactly and narrows it back", () => {
    const floats = new Float32Array(1);
    const view = new Uint32Array(floats.buffer);
    const wrong: number[] = [];
    for (let bits = 0; bits < 0x10000; bits++) {
      view[0] = bits << 16;
      const value = bfloat16BitsToFloat32(bits);
      if (Number.isNaN(floats[0])) {
        if (!Number.isNaN(value)) wrong.push(bits);
      } else if (!Object.is(value, floats[0]) || float32ToBfloat16Bits(value) !== bits) {
        wrong.push(bits);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("rounds random float32 values to the nearer neighbour, ties to even", () => {
    const random = new SeededRandom(8);
    const input = new Float32Array(20000);
    const view = new Uint32Array(input.buffer);
    for (let i = 0; i < input.length; i++) {
      do view[i] = random.nextUint32();
      while (Number.isNaN(input[i]) || !Number.isFinite(input[i]));
    }
    const out = float32ArrayToBfloat16Bits(input);
    const wrong: number[] = [];
    for (let i = 0; i < input.length; i++) {
      const x = input[i];
      const truncated = view[i] >>> 16;
      const down = bfloat16BitsToFloat32(truncated);
      const up = bfloat16BitsToFloat32(truncated + 1); // next magnitude (may be infinity)
      const upValue = Number.isFinite(up) ? up : Math.sign(x) * 2 ** 128; // infinity acts as 2^128 for rounding
      const dDown = Math.abs(x - down);
      const dUp = Math.abs(upValue - x);
      const expected = dDown < dUp ? truncated : dUp < dDown ? truncated + 1 : truncated & 1 ? truncated + 1 : truncated;
      if (out[i] !== expected) wrong.push(x);
    }
    expect(wrong).toEqual([]);
  });
});

describe("array helpers", () => {
  it("encodeValues and decodeValues agree with the scalar conversions", () => {
    const input = Float32Array.from([1.5, -0.1, 70000, 1e-8, 3]);
    expect(Array.from(encodeValues(input, "float16") as Uint16Array)).toEqual(
      Array.from(input, float32ToFloat16Bits),
    );
    expect(Array.from(encodeValues(input, "bfloat16"))).toEqual(Array.from(input, float32ToBfloat16Bits));
    expect(encodeValues(input, "float32")).toEqual(input);
    expect(encodeValues(input, "float32")).not.toBe(input);
    const half = float32ArrayToFloat16Bits(input);
    expect(decodeValues(half, "float16")).toEqual(float16BitsToFloat32Array(half));
    const brain = float32ArrayToBfloat16Bits(input);
    expect(decodeValues(brain, "bfloat16")).toEqual(bfloat16BitsToFloat32Array(brain));
  });

  it("encodeValues and decodeValues refuse an unknown dtype, and decodeValues an array that does not hold that dtype", () => {
    const fieldOf = (action: () => unknown) => {
      const error = thrown(action);
      expect(error).toBeInstanceOf(BsrFormatError);
      return (error as BsrFormatError).field;
    };
    // Each came back as float32 without a word: "bf16" read raw bits as the integers they spell.
    expect(fieldOf(() => encodeValues([1.5], "bf16" as never))).toBe("dtype");
    expect(fieldOf(() => decodeValues(Uint16Array.of(0x3fc0), "bf16" as never))).toBe("dtype");
    expect(fieldOf(() => decodeValues(undefined as never, undefined as never))).toBe("dtype");
    // float32 values read as half bits, and half bits read as integers.
    expect(fieldOf(() => decodeValues(Float32Array.of(1.5), "float16"))).toBe("values");
    expect(fieldOf(() => decodeValues(Float32Array.of(1.5), "bfloat16"))).toBe("values");
    expect(thrown(() => decodeValues(Uint16Array.of(0x3c00), "float32")).message).toBe("values: float32 values must be a Float32Array, got Uint16Array");
  });

  it("encodeValues refuses what is not an array of numbers, where a string came back as NaNs and undefined was a TypeError", () => {
    for (const dtype of BSR_DTYPES) {
      expect(thrown(() => encodeValues("1.5" as never, dtype)).message).toBe("values: expected an array of numbers, got 1.5");
      expect(thrown(() => encodeValues(undefined as never, dtype)).message).toBe("values: expected an array of numbers, got undefined");
      const error = thrown(() => encodeValues([1, "2"] as never, dtype)) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.message).toBe('values[1]: expected a number, got "2"');
    }
  });
});

describe("widening arrays bit for bit", () => {
  const bitsOf = (values: Float32Array) => Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));

  it("float16 -> float32 keeps a NaN's payload and signaling bit, as NumPy's astype(float32) does", () => {
    // Signaling and quiet NaNs of both signs, then infinity, a subnormal, the largest subnormal and -0.
    const half = Uint16Array.from([0x7c01, 0xfe01, 0x7dff, 0x7c00, 0x0001, 0x03ff, 0x8000]);
    expect(bitsOf(float16BitsToFloat32Array(half))).toEqual([0x7f802000, 0xffc02000, 0x7fbfe000, 0x7f800000, 0x33800000, 0x387fc000, 0x80000000]);
    expect(bitsOf(decodeValues(half, "float16"))).toEqual(bitsOf(float16BitsToFloat32Array(half)));
  });

  it("bfloat16 -> float32 is the 16-bit shift, signaling NaNs included (their quiet bit was set)", () => {
    const brain = Uint16Array.from([0x7f81, 0xffa0, 0x7fc1, 0x0001, 0x8000, 0xff80]);
    expect(bitsOf(bfloat16BitsToFloat32Array(brain))).toEqual(Array.from(brain, (bits) => bits * 0x10000));
    expect(bitsOf(decodeValues(brain, "bfloat16"))).toEqual(Array.from(brain, (bits) => bits * 0x10000));
  });
});

describe("conversions into given arrays", () => {
  const bitsOf = (values: Float32Array) => Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));

  it("widen every float16 and bfloat16 pattern to the bits the allocating versions give, at an offset", () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const out = new Float32Array(65536 + 3).subarray(3);
    expect(bitsOf(float16BitsToFloat32Into(all, out))).toEqual(bitsOf(float16BitsToFloat32Array(all)));
    expect(bitsOf(bfloat16BitsToFloat32Into(all, out))).toEqual(bitsOf(bfloat16BitsToFloat32Array(all)));
  });

  it("refuse an output of another length than the input, where a shorter one dropped values and a longer one got zeros", () => {
    const bits = Uint16Array.of(0x3c00, 0x4000);
    const values = Float32Array.of(1, 2);
    for (const length of [1, 3]) {
      for (const action of [
        () => float16BitsToFloat32Into(bits, new Float32Array(length)),
        () => bfloat16BitsToFloat32Into(bits, new Float32Array(length)),
        () => float32ToFloat16BitsInto(values, new Uint16Array(length)),
        () => float32ToBfloat16BitsInto(values, new Uint16Array(length)),
      ]) {
        const error = thrown(action);
        expect(error).toBeInstanceOf(BsrFormatError);
        expect(error.message).toBe(`out: expected 2 elements, as many as the input, got ${length}`);
      }
    }
  });

  it("refuse arrays of another type, whose words were read or written as float32 or 16-bit ones without a word", () => {
    const bits = Uint16Array.of(0x3c00, 0x4000);
    const values = Float32Array.of(1, 2);
    // A Float64Array out got float32 bits in its first half, a plain one nothing; Float32Array values read as bits gave subnormals.
    for (const [action, field, expected, got] of [
      [() => float16BitsToFloat32Into(bits, new Float64Array(2) as never), "out", "Float32Array", "Float64Array"],
      [() => bfloat16BitsToFloat32Into(bits, [0, 0] as never), "out", "Float32Array", "Array"],
      [() => float16BitsToFloat32Into(values as never, new Float32Array(2)), "bits", "Uint16Array", "Float32Array"],
      [() => bfloat16BitsToFloat32Into(null as never, new Float32Array(2)), "bits", "Uint16Array", "null"],
      [() => float32ToFloat16BitsInto(new Float64Array(2) as never, new Uint16Array(2)), "values", "Float32Array", "Float64Array"],
      [() => float32ToBfloat16BitsInto([1, 2] as never, new Uint16Array(2)), "values", "Float32Array", "Array"],
      [() => float32ToFloat16BitsInto(values, new Uint8Array(2) as never), "out", "Uint16Array", "Uint8Array"],
      [() => float32ToBfloat16BitsInto(values, new Int16Array(2) as never), "out", "Uint16Array", "Int16Array"],
    ] as const) {
      const error = thrown(action) as BsrFormatError;
      expect(error).toBeInstanceOf(BsrFormatError);
      expect(error.field).toBe(field);
      expect(error.message).toBe(`${field}: expected a ${expected}, got ${got}`);
    }
  });

  it("round float32 values (specials, subnormals, ties, random bits) as the per-value conversions do", () => {
    const random = new SeededRandom(11);
    const words = new Uint32Array(20000);
    for (let i = 0; i < words.length; i++) words[i] = random.nextUint32();
    const special = [0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff, 0x00000001, 0x387fe000, 0x38800000,
      0x33000000, 0x33000001, 0x477fe000, 0x477ff000, 0x3f808000, 0x3f818000, 0x3f800001, 0x7f7fffff];
    words.set(special);
    const values = new Float32Array(words.buffer);
    const out = new Uint16Array(values.length);
    // The per-value versions read a NaN as a number (quieted); both formats keep a NaN quiet anyway.
    expect(Array.from(float32ToFloat16BitsInto(values, out))).toEqual(Array.from(float32ArrayToFloat16Bits(values)));
    expect(Array.from(float32ToBfloat16BitsInto(values, out))).toEqual(Array.from(float32ArrayToBfloat16Bits(values)));
  });
});
