import { describe, expect, it } from "vitest";
import { auditDispatch, auditMarkdown, parseTcBenchTimes, TcBenchParseError } from "../src/tc_audit";
import { parseTcAuditFlags } from "../src/tc_audit_flags";

// The shape of `tc_bench --mode time --paths auto,wgmma --variants 0,34 --activation gelu_tanh` output: a device line,
// cuBLAS's line per shape, then a row per route and form; one case printed twice (the last row counts), and a check
// table's rows, which are not times.
const LOG = [
  "device: NVIDIA H100 80GB HBM3, 132 SMs, cc 9.0; path for 32x32 blocks: 1 (1 = mma, 2 = wgmma); dtype bf16",
  "cuBLAS linear  M=256   K=4096  N=1024  0.0113 ms  190.7 TFLOP/s",
  "| linear | 128 | 0.50 | 256 | 4096 | 1024 | auto fused activation | 0.0193 | 52.1 | 190.7 | 0.27 |",
  "| linear | 128 | 0.50 | 256 | 4096 | 1024 | auto then biasActivation | 0.0195 | 51.7 | 190.7 | 0.27 |",
  "| linear | 128 | 0.50 | 256 | 4096 | 1024 | wgmma/v0 fused activation | 0.0193 | 52.1 | 190.7 | 0.27 |",
  "| linear | 128 | 0.50 | 256 | 4096 | 1024 | wgmma/v0 then biasActivation | 0.0194 | 51.8 | 190.7 | 0.27 |",
  "| linear | 128 | 0.50 | 256 | 4096 | 1024 | wgmma/v34 fused activation | 0.0146 | 69.0 | 190.7 | 0.36 |",
  "| linear | 128 | 0.50 | 256 | 4096 | 1024 | wgmma/v34 then biasActivation | 0.0149 | 67.4 | 190.7 | 0.35 |",
  "| linear | 128 | 0.10 | 256 | 4096 | 1024 | auto fused activation | 0.0070 | 23.2 | 190.7 | 0.12 |",
  "| linear | 128 | 0.10 | 256 | 4096 | 1024 | wgmma/v0 fused activation | 0.0083 | 23.2 | 190.7 | 0.12 |",
  "| linear | 128 | 0.10 | 256 | 4096 | 1024 | wgmma/v34 fused activation | 0.0071 | 27.6 | 190.7 | 0.14 |",
  "| matmul | 64x128 | 0.25 | 2048 | 1024 | 4096 | auto | 0.0100 | 1 | 1 | 0.5 |",
  "| matmul | 64x128 | 0.25 | 2048 | 1024 | 4096 | wgmma/v7 | 0.0110 | 1 | 1 | 0.5 |",
  "| matmul | 64x128 | 0.25 | 2048 | 1024 | 4096 | wgmma/v7 | 0.0098 | 1 | 1 | 0.5 |",
  "| matmul | 64 | 0.25 | 2048 | 1024 | 4096 | auto | 0.0100 | 1 | 1 | 0.5 |",
  "| matmul | 128 | 0.10 | 8192 | 8192 | 2048 | auto fused backward | 0.1610 | 171.8 | 764.5 | 0.22 |",
  "| matmul | 128 | 0.10 | 8192 | 8192 | 2048 | auto then its backward | 0.2464 | 112.2 | 764.5 | 0.15 |",
  "| matmul | 128 | 0.10 | 8192 | 8192 | 2048 | wgmma/v14 fused backward | 0.1554 | 177.9 | 764.5 | 0.23 |",
  "| matmul | 128 | 0.10 | 8192 | 8192 | 2048 | wgmma/v14 then its backward | 0.2421 | 114.2 | 764.5 | 0.15 |",
  "| product | variant | block | worst rel. error (max of vs simple, vs float64) |",
  "| linear | auto | 128 | 1.69e-03 |",
].join("\n");

describe("the dispatch audit of tc_bench's timings", () => {
  it("reads each route's time per case and form, the last of a row printed twice, and skips every other line", () => {
    const times = parseTcBenchTimes(LOG);
    expect(times).toHaveLength(16);
    expect(times.find((t) => t.route === "wgmma/v14" && t.form === "fused backward")?.ms).toBe(0.1554);
    expect(times.find((t) => t.route === "auto" && t.form === "then its backward")?.ms).toBe(0.2464);
    expect(times[0]).toEqual({ op: "linear", block: "128", density: 0.5, m: 256, k: 4096, n: 1024, route: "auto", form: "fused activation", ms: 0.0193 });
    expect(times.find((t) => t.route === "wgmma/v34" && t.form === "then biasActivation")?.ms).toBe(0.0149);
    const twice = times.filter((t) => t.op === "matmul" && t.route === "wgmma/v7");
    expect(twice).toEqual([{ op: "matmul", block: "64x128", density: 0.25, m: 2048, k: 1024, n: 4096, route: "wgmma/v7", form: "plain", ms: 0.0098 }]);
  });

  it("compares auto with the fastest other route of its case and form, and counts the misses past the margin", () => {
    const audit = auditDispatch(parseTcBenchTimes(LOG), 0.03);
    // Six cases have auto and another route (dX's two forms of its backward each against its own); the 64x64 matmul
    // has auto alone.
    expect(audit.cases).toHaveLength(6);
    expect(audit.cases.find((c) => c.form === "fused backward")).toMatchObject({ autoMs: 0.161, best: "wgmma/v14", bestMs: 0.1554 });
    const fused = audit.cases.find((c) => c.form === "fused activation" && c.density === 0.5);
    expect(fused).toMatchObject({ autoMs: 0.0193, best: "wgmma/v34", bestMs: 0.0146 });
    expect(fused?.ratio).toBeCloseTo(0.0193 / 0.0146, 12);
    // Where auto is the fastest, it is its own best.
    expect(audit.cases.find((c) => c.density === 0.1)).toMatchObject({ best: "auto", bestMs: 0.007, ratio: 1 });
    const group = audit.groups.find((g) => g.op === "linear" && g.form === "fused activation");
    expect(group).toMatchObject({ block: "128", cases: 2, missed: 1 });
    expect(group?.geoMean).toBeCloseTo(Math.sqrt(0.0193 / 0.0146), 12);
    // 0.0100 against 0.0098 is 2% over: within 3%, missed at 1%.
    expect(audit.groups.find((g) => g.op === "matmul")?.missed).toBe(0);
    expect(auditDispatch(parseTcBenchTimes(LOG), 0.01).groups.find((g) => g.op === "matmul")?.missed).toBe(1);
  });

  it("prints the summary, then the missed cases worst first", () => {
    const text = auditMarkdown(auditDispatch(parseTcBenchTimes(LOG), 0.03));
    expect(text).toContain("more than 3% over it");
    expect(text).toContain("| linear | fused activation | 128 | 2 | 1.150 | 1 | 1.32x (256 tokens, 4096 -> 1024, density 0.5: wgmma/v34) |");
    const rows = text.split("\n").filter((line) => line.startsWith("| linear |") && line.includes("| 256 |"));
    expect(rows.map((line) => line.split("|")[2].trim())).toEqual(["fused activation", "then biasActivation"]);
    expect(auditMarkdown(auditDispatch(parseTcBenchTimes(LOG.split("\n").slice(8).filter((line) => !line.includes("backward")).join("\n")), 0.03))).toContain("No case missed.");
  });

  it("refuses a time row that does not read, naming its line, and a margin that is not a fraction", () => {
    expect(() => parseTcBenchTimes("\n| linear | 64 | 0.5 | 256 | 1024 | 1024 | auto | fast | 1 | 1 | 1 |")).toThrow(new TcBenchParseError('line 2: ms "fast" is not a number'));
    expect(() => parseTcBenchTimes("| linear | 64 | 0.5 | 256 | 1024 | 1024 | best guess | 0.1 | 1 | 1 | 1 |")).toThrow(/line 1: route "best guess" is not auto or path\/vN/);
    expect(() => parseTcBenchTimes("| linear | 64 | 0.5 | 256 | 1024 | 1024 | auto | 0 | 1 | 1 | 1 |")).toThrow(/line 1: ms 0 is not positive/);
    expect(() => auditDispatch([], -1)).toThrow(RangeError);
    expect(parseTcAuditFlags(["a.log", "b.log", "--within", "0.05"])).toEqual({ files: ["a.log", "b.log"], within: 0.05 });
    expect(parseTcAuditFlags(["a.log"]).within).toBe(0.03);
    expect(() => parseTcAuditFlags([])).toThrow(/no log given/);
    expect(() => parseTcAuditFlags(["a.log", "--within", "5%"])).toThrow(/--within: "5%" is not a fraction/);
    expect(() => parseTcAuditFlags(["a.log", "--within", "1"])).toThrow(/--within: "1" is not a fraction/);
    // Written as the other flags' numbers are: ".05" and "5e-2" were refused as "not a fraction from 0 up to 1".
    expect(parseTcAuditFlags(["a.log", "--within", ".05"]).within).toBe(0.05);
    expect(parseTcAuditFlags(["a.log", "--within", "5e-2"]).within).toBe(0.05);
    expect(parseTcAuditFlags(["a.log", "--within", "0"]).within).toBe(0);
    for (const bad of ["0x1", "Infinity", "NaN", "1e0"]) expect(() => parseTcAuditFlags(["a.log", "--within", bad])).toThrow(`--within: "${bad}" is not a fraction`);
  });
});
