/** The backend object itself: its kernel table, memory calls, poisoning; and buffer sharing through the engine. */
import {
  BACKEND_KERNELS,
  type DType,
  bfloat16BitsToFloat32,
  exp,
  float16BitsToFloat32,
  memory,
  randn,
  reshape,
  sum,
  tidy,
  zeros,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { describe, expect, it } from "vitest";
import { ALL_DTYPES, type Conformance, INT32_POISON } from "./harness";

export function declareBackendObjectTests(suite: Conformance): void {
  describe("backend object", () => {
    it("implements every kernel core declares", () => {
      const missing = BACKEND_KERNELS.filter((k) => typeof suite.backend.kernels[k] !== "function");
      expect(missing, `kernels missing from '${suite.backendName}'`).toEqual([]);
    });

    it("round-trips every dtype through write and read, and counts buffers", async () => {
      const backend = suite.backend;
      const before = backend.memory();
      const cases: [DType, Float32Array | Uint16Array | Int32Array][] = [
        ["float32", Float32Array.from([1.5, -2, 0, 3.25])],
        ["float16", Uint16Array.from([0x3c00, 0xc000, 0, 0x7bff])],
        ["bfloat16", Uint16Array.from([0x3f80, 0xc000, 0, 0x7f7f])],
        ["int32", Int32Array.from([1, -2, 0, 2147483647])],
      ];
      for (const [dtype, values] of cases) {
        const id = backend.allocate(dtype, values.length);
        backend.write(id, values);
        expect(backend.memory().buffers, `${dtype}: buffers after allocate`).toBe(before.buffers + 1);
        expect(Array.from(backend.readSync(id)), `${dtype}: readSync`).toEqual(Array.from(values));
        expect(Array.from(await backend.read(id)), `${dtype}: read`).toEqual(Array.from(values));
        backend.free(id);
      }
      const empty = backend.allocate("float32", 0);
      expect(backend.readSync(empty).length).toBe(0);
      backend.free(empty);
      expect(backend.memory().buffers).toBe(before.buffers);
      expect(backend.memory().bytesInUse).toBe(before.bytesInUse);
    });

    it("poisons allocations, fresh or reused, when poisonAllocations is on", () => {
      const backend = suite.backend;
      for (const dtype of ALL_DTYPES) {
        const first = backend.allocate(dtype, 64);
        const filler = dtype === "float32" ? new Float32Array(64).fill(1) : dtype === "int32" ? new Int32Array(64).fill(1) : new Uint16Array(64).fill(0x3c00);
        backend.write(first, filler);
        backend.free(first);
        const second = backend.allocate(dtype, 64);
        const raw = backend.readSync(second);
        backend.free(second);
        const decoded = Array.from(raw, (v) =>
          dtype === "float16" ? float16BitsToFloat32(v) : dtype === "bfloat16" ? bfloat16BitsToFloat32(v) : v,
        );
        if (dtype === "int32") expect(decoded.every((v) => v === INT32_POISON), `${dtype}: every element is 0x7fffffff`).toBe(true);
        else expect(decoded.every((v) => Number.isNaN(v)), `${dtype}: every element is NaN`).toBe(true);
      }
    });
  });

  describe("memory", () => {
    it("tidy frees everything but the result, and buffers are shared by clone/reshape/assign", () => {
      const backend = suite.backend;
      const buffers = backend.memory().buffers;
      const kept = tidy(() => {
        const a = randn([3, 4], { seed: 1 });
        const b = exp(a);
        const view = reshape(b, [12]);
        const copy = view.clone();
        expect(memory().backends[suite.backendName].numBuffers).toBeGreaterThanOrEqual(2);
        return { copy, sum: sum(copy) };
      });
      expect(backend.memory().buffers).toBe(buffers + 2);
      const target = zeros([12]);
      target.assign(kept.copy);
      expect(backend.memory().buffers).toBe(buffers + 2);
      kept.copy.dispose();
      expect(backend.memory().buffers).toBe(buffers + 2);
      expect(target.dataSync()[0]).toBeCloseTo(Math.exp(new SeededRandom(1).normal()), 5);
      target.dispose();
      kept.sum.dispose();
      expect(backend.memory().buffers).toBe(buffers);
    });
  });
}
