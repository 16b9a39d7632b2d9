/**
 * The js backend's per-kernel scratch (half inputs widened to float32, half outputs staged in float32): taken only
 * while the engine runs a kernel, and every piece given back when the outermost kernel returns or throws.
 */
import { describe, expect, it } from "vitest";
import { IndexError, JsBackend, gather, gelu, mul, registerBackend, removeBackend, setBackend, tensor, tidy } from "../src";

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
