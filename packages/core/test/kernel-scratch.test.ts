/**
 * The js backend's per-kernel scratch (half inputs widened to float32, half outputs staged in float32): taken only
 * while the engine runs a kernel, and every piece given back when the outermost kernel returns or throws.
 */
import { describe, expect, it } from "vitest";
import { IndexError, JsBackend, float32ToBfloat16Bits, float32ToFloat16Bits, gather, gelu, jsKernels, mul, registerBackend, removeBackend, setBackend, tensor, tidy } from "../src";

class CountingBackend extends JsBackend {
  override readonly name = "counting";
  taken = 0;
  given = 0;
  protected override takeScratch(bytes: number): ArrayBuffer {
    this.taken++;
    return super.takeScratch(bytes);
  }
  protected override releaseScratch(buffer: ArrayBuffer): void {
    this.given++;
    super.releaseScratch(buffer);
  }
}

describe("kernel scratch on the js backend", () => {
  it("is taken inside kernels only and given back after each, also when a kernel throws", () => {
    const backend = new CountingBackend();
    registerBackend("counting", () => backend, 0);
    try {
      setBackend("counting");
      const x = tensor([0.5, -1, 2, 3], [4], "bfloat16");
      const y = tidy(() => Array.from(gelu(mul(x, x)).dataSync()));
      expect(y).toHaveLength(4);
      expect(backend.taken).toBeGreaterThanOrEqual(3);
      expect(backend.given).toBe(backend.taken);
      // Outside a kernel (a kernel's helpers called directly) the arrays are new memory, not scratch.
      const before = backend.taken;
      backend.floats({ dataId: backend.allocate("bfloat16", 4), shape: [4], dtype: "bfloat16" });
      expect(backend.taken).toBe(before);
      // A kernel that throws after reading its half input still gives its scratch back.
      const table = tensor([1, 2, 3, 4], [2, 2], "bfloat16");
      expect(() => gather(table, tensor([0, 5], [2], "int32"), 0).dataSync()).toThrow(IndexError);
      expect(backend.given).toBe(backend.taken);
      x.dispose();
      table.dispose();
    } finally {
      setBackend("js");
      removeBackend("counting");
    }
  });
});

describe("storeFloats on the js backend", () => {
  it("writes float32 values into a tensor's own buffer, rounded to its dtype as a cast rounds them", () => {
    const backend = new JsBackend();
    const values = Float32Array.from([1 / 3, -65520, 1e-8, 70000, Number.NaN, -0, 2 ** -20]);
    for (const dtype of ["float32", "float16", "bfloat16"] as const) {
      const info = { dataId: backend.allocate(dtype, values.length), shape: [values.length], dtype };
      backend.storeFloats(info, values);
      // @blocksparse/format's rounding, element by element (Cast itself now stores through storeFloats).
      const round = dtype === "float16" ? float32ToFloat16Bits : dtype === "bfloat16" ? float32ToBfloat16Bits : (value: number) => value;
      const want = Array.from(values, (value) => round(value));
      expect(Array.from(backend.readSync(info.dataId)), dtype).toEqual(want);
    }
  });

  it("refuses a length other than the tensor's and an int32 tensor", () => {
    const backend = new JsBackend();
    const info = { dataId: backend.allocate("bfloat16", 3), shape: [3], dtype: "bfloat16" as const };
    expect(() => backend.storeFloats(info, new Float32Array(4))).toThrow("js: storeFloats got 4 values for 3 elements");
    const ints = { dataId: backend.allocate("int32", 3), shape: [3], dtype: "int32" as const };
    expect(() => backend.storeFloats(ints, new Float32Array(3))).toThrow("js: storeFloats needs a float tensor, got int32");
  });
});

describe("floatsInto on the js backend", () => {
  it("widens a half tensor into the caller's array, as floats() widens it, and refuses other dtypes and lengths", () => {
    const backend = new JsBackend();
    const values = Float32Array.from([1 / 3, -65504, 1e-6, Number.NaN, -0, 2 ** -24]);
    for (const dtype of ["float16", "bfloat16"] as const) {
      const info = castKernelOn(backend, values, dtype);
      const out = new Float32Array(values.length).fill(7);
      expect(backend.floatsInto(info, out)).toBe(out);
      expect(Array.from(out), dtype).toEqual(Array.from(backend.floats(info)));
      expect(() => backend.floatsInto(info, new Float32Array(2))).toThrow(`js: floatsInto got 2 slots for ${values.length} elements`);
    }
    expect(() => backend.floatsInto(castKernelOn(backend, values, "float32"), new Float32Array(values.length))).toThrow("js: floatsInto needs a float16 or bfloat16 tensor, got float32");
  });
});

/** A cast of float32 values to `dtype` by the js backend's own kernel: what storeFloats must match. */
function castKernelOn(backend: JsBackend, values: Float32Array, dtype: "float32" | "float16" | "bfloat16") {
  const source = { dataId: backend.allocate("float32", values.length), shape: [values.length], dtype: "float32" as const };
  backend.write(source.dataId, values);
  return jsKernels.Cast({ inputs: { x: source }, attrs: { dtype }, backend } as never);
}
