import { describe, expect, it } from "vitest";
import { parseCompareFlags } from "../src/compare_flags";
import { FlagError } from "../src/flags";

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

  it("refuses a --shape no machine holds, naming the flag, before anything is allocated", () => {
    const flags = (shape: string) => ["--out", "o", "--backend", "js", "--shape", shape, "--blocks", "32", "--densities", "0.25"];
    expect(() => parseCompareFlags(flags("99999999999999999999x256x256"))).toThrow(/^--shape: 99999999999999999999x256x256 needs more than 2\^53 values/);
    expect(() => parseCompareFlags(flags("100000000x1000000x256"))).toThrow(/^--shape: 100000000x1000000x256 needs \d+\.\d GiB .* use a smaller --shape$/);
    expect(() => parseCompareFlags(flags("100000000x1000000x256"))).toThrow(FlagError);
    expect(parseCompareFlags(flags("64x256x256")).shape).toEqual([64, 256, 256]);
  });
});
