import { addKernelObserver, arange, cast, memory, reshape, scalar, tensor, tidy, transpose } from "@blocksparse/core";
import { describe, expect, it, vi } from "vitest";

describe("Tensor.toString", () => {
  it("keeps the sign of -0, as torch prints -0.", () => {
    tidy(() => {
      expect(scalar(-0).toString()).toBe("Tensor(float32, [], js) [-0.0]");
      expect(cast(tensor([-0, 0]), "float16").toString()).toBe("Tensor(float16, [2], js) [-0.0, 0.0]");
      expect(tensor([Number.NaN, -Infinity, -3]).toString()).toBe("Tensor(float32, [3], js) [NaN, -Infinity, -3.0]");
    });
  });

  it("writes large integer-valued floats with 4 significant digits, not every digit of their float64 widening", () => {
    tidy(() => {
      expect(tensor([3, 12345678, 1e20, -1e21, 3.3895313892515355e38]).toString()).toBe(
        "Tensor(float32, [5], js) [3.0, 12345678.0, 1.000e+20, -1.000e+21, 3.390e+38]",
      );
    });
  });

  it("reads only the values it shows of a long tensor, unseen by kernel observers, and frees what it made", () => {
    tidy(() => {
      const t = reshape(arange(4000, undefined, 1, "float32"), [40, 100]);
      const halves = cast(t, "bfloat16");
      const read = vi.spyOn(t.backend, "readSync");
      const seen: string[] = [];
      const stop = addKernelObserver((record) => seen.push(record.kernelName));
      const before = memory().numTensors;
      try {
        expect(t.toString()).toBe("Tensor(float32, [40, 100], js) [0.0, 1.0, 2.0, ..., 3997.0, 3998.0, 3999.0]");
        expect(halves.toString()).toBe("Tensor(bfloat16, [40, 100], js) [0.0, 1.0, 2.0, ..., 4000.0, 4000.0, 4000.0]");
        // A transposed copy's ends are its own (row-major), not its source's.
        const moved = transpose(t);
        expect(moved.toString()).toBe("Tensor(float32, [100, 40], js) [0.0, 100.0, 200.0, ..., 3799.0, 3899.0, 3999.0]");
        moved.dispose();
        expect(read.mock.calls.some(([id]) => id === t.dataId || id === halves.dataId)).toBe(false);
        expect(seen.filter((name) => name !== "Transpose")).toEqual([]);
        expect(memory().numTensors).toBe(before);
      } finally {
        stop();
        read.mockRestore();
      }
    });
  });
});
