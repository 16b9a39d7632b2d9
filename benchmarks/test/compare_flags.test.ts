import { describe, expect, it } from "vitest";
import { parseCompareFlags } from "../src/compare_flags";

describe("compare.ts's flags", () => {
  it("takes --backend cpu (the native cpu backend) as it takes cuda and js", () => {
    for (const backend of ["cpu", "cuda", "js"]) {
      expect(parseCompareFlags(["--out", "somewhere", "--backend", backend, "--small"])).toMatchObject({ backend, shape: [64, 256, 256], blockSizes: [32, 64] });
    }
    expect(parseCompareFlags(["--out", "somewhere"]).backend).toBe("cuda");
  });

  it("refuses any other backend, naming the three it takes", () => {
    expect(() => parseCompareFlags(["--out", "somewhere", "--backend", "gpu"])).toThrow('--backend: expected cuda, cpu, js, got "gpu"');
    expect(() => parseCompareFlags(["--out", "somewhere", "--backend", "auto"])).toThrow(/--backend: expected cuda, cpu, js/);
  });

  it("checks the other flags as before", () => {
    expect(() => parseCompareFlags(["--backend", "cpu"])).toThrow("--out DIR is required");
    expect(() => parseCompareFlags(["--out", "o", "--backend", "cpu", "--shape", "64x0x256"])).toThrow(/--shape: every dim must be positive/);
    expect(() => parseCompareFlags(["--out", "o", "--small", "--blocks", "48"])).toThrow("--blocks: 48 does not divide K=256 and N=256");
  });
});
