import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { XMLValidator } from "fast-xml-parser";
import { afterAll, describe, expect, it } from "vitest";
import type { BenchRecord, RunRecord } from "../src/record";
import { renderReport, writeIndex, writeRun } from "../src/report";

function kernelRecord(op: string, blockSize: number, density: number, medianMs: number): BenchRecord {
  return {
    suite: "kernels",
    name: blockSize === 0 ? `dense ${op}` : op,
    params: { M: 64, K: 256, N: 256, dtype: "float32", op, blockSize, density },
    checks: [{ what: "y rows", relError: 1e-7, tolerance: 2e-3, ok: true }],
    timing: { medianMs, q1Ms: medianMs * 0.9, q3Ms: medianMs * 1.1, minMs: medianMs * 0.8, maxMs: medianMs * 1.3, samples: 5, callsPerSample: 1 },
    metrics: { gflops: (2 * 64 * 256 * 256 * density) / (medianMs * 1e6), ...(blockSize ? { speedupVsDense: 4 / medianMs } : {}) },
  };
}

const run: RunRecord = {
  schemaVersion: 1,
  date: "2026-01-01T00:00:00.000Z",
  commit: "0123456789abcdef0123456789abcdef01234567",
  dirty: false,
  mode: "quick",
  backend: "js",
  machine: { name: "cpu-test-2c", cpuModel: "Test CPU", cpuCores: 2, memoryBytes: 2 ** 33, platform: "linux", arch: "x64", node: "v20.0.0" },
  versions: { "@blocksparse/core": "0.1.0" },
  settings: {},
  results: [
    kernelRecord("bsrLinear", 0, 1, 4),
    ...[16, 32].flatMap((b) => [1, 0.5, 0.1].map((d) => kernelRecord("bsrLinear", b, d, 4 * d + 0.1))),
    {
      suite: "train",
      name: "BlockSparseLinear step",
      params: { M: 64, K: 256, N: 256, dtype: "float32", blockSize: 32, density: 0.25 },
      checks: [{ what: "W after Adam", relError: 0, tolerance: 2e-3, ok: true }],
      timing: { medianMs: 4, q1Ms: 3.9, q3Ms: 4.2, minMs: 3.8, maxMs: 5, samples: 5, callsPerSample: 1 },
      metrics: { speedupVsDense: 3.4, stateBytes: 2 ** 20, stepEndBytes: 3 * 2 ** 20 },
    },
  ],
  failures: [{ suite: "kernels", name: "bsrMatmul", params: { blockSize: 64 }, error: "bsrMatmul: result does not match | the reference" }],
  durationSeconds: 12,
};

describe("renderReport", () => {
  const { markdown, charts } = renderReport(run);

  it("says where, when and from which commit it was measured", () => {
    expect(markdown).toMatch(/^# Benchmarks: js backend on Test CPU/);
    expect(markdown).toContain("Commit 0123456789ab, 2026-01-01T00:00:00.000Z, quick mode");
    expect(markdown).toContain("@blocksparse/core 0.1.0");
  });

  it("tabulates every kernel result with its median, spread, throughput and ratio to dense", () => {
    expect(markdown).toContain("| dense bsrLinear | 1 | 4.00 | 3.60–4.40 |");
    expect(markdown).toContain("| 32 | 0.5 | 2.10 | 1.89–2.31 |");
    expect(markdown.match(/^\| (16|32) \|/gm)).toHaveLength(6);
  });

  it("links one time chart and one throughput chart per op, each a well-formed SVG", () => {
    expect([...charts.keys()].sort()).toEqual(["charts/js-64x256x256-float32-bsrLinear-gflops.svg", "charts/js-64x256x256-float32-bsrLinear-time.svg"]);
    for (const [file, svg] of charts) {
      expect(markdown).toContain(`(${file})`);
      expect(XMLValidator.validate(svg)).toBe(true);
      expect(svg).toContain("dense bsrLinear");
    }
  });

  it("lists the training step and what could not be measured, escaping table pipes", () => {
    expect(markdown).toContain("| BlockSparseLinear step | 64×256→256 | float32 | 0.25 | 4.00 | 3.90–4.20 | 3.40 | 1.00 | 3.00 |");
    expect(markdown).toContain("result does not match \\| the reference");
  });
});

describe("renderReport at the edges", () => {
  const edge = (results: BenchRecord[]) => renderReport({ ...run, results, failures: [] });

  it("reports a case it could not time (NaN) or rate (no GFLOP/s) with a dash, charts the rest, and throws nothing", () => {
    const noRate = kernelRecord("bsrLinear", 32, 0.25, 1);
    noRate.metrics = {};
    const { markdown, charts } = edge([kernelRecord("bsrLinear", 0, 1, Number.NaN), kernelRecord("bsrLinear", 32, 0.5, 2), noRate]);
    expect(markdown).toContain("| dense bsrLinear | 1 | – | – | – | 1.00 |");
    expect(markdown).toContain("| 32 | 0.25 | 1.00 | 0.900–1.10 | – | – |");
    for (const svg of charts.values()) {
      expect(XMLValidator.validate(svg)).toBe(true);
      expect(svg).not.toContain("NaN");
    }
    expect(charts.get("charts/js-64x256x256-float32-bsrLinear-time.svg")?.match(/<circle /g)).toHaveLength(2);
    expect(charts.get("charts/js-64x256x256-float32-bsrLinear-gflops.svg")?.match(/<circle /g)).toHaveLength(1);
  });

  it("gives a kernel's density that ran beside the one asked for where whole blocks moved it by more than 5%", () => {
    // 256x256 in 64x64 blocks: 16 blocks; 0.1 keeps 2 (0.125), 0.25 keeps 4 (exact). 16x16 blocks: 256; 0.1 keeps 26 (0.102).
    const kept = (blockSize: number, density: number, nnzBlocks: number): BenchRecord => {
      const record = kernelRecord("bsrLinear", blockSize, density, 1);
      return { ...record, metrics: { ...record.metrics, nnzBlocks } };
    };
    const report = edge([kernelRecord("bsrLinear", 0, 1, 4), kept(64, 0.1, 2), kept(64, 0.25, 4), kept(16, 0.1, 26)]).markdown;
    expect(report).toMatch(/^\| 64 \| 0\.1 \(0\.125 ran\) \| /m);
    expect(report).toMatch(/^\| 64 \| 0\.25 \| /m);
    expect(report).toMatch(/^\| 16 \| 0\.1 \| /m);
  });

  it("shows a format result without a recorded rate as a dash, not 0.0 M blocks/s", () => {
    const timing = { medianMs: 2, q1Ms: 1.9, q3Ms: 2.1, minMs: 1.8, maxMs: 2.5, samples: 5, callsPerSample: 1 };
    const params = { rows: 256, cols: 256, blockSize: 32, density: 0.5 };
    const checks = [{ what: "values", relError: 0, tolerance: 0, ok: true }];
    const { markdown } = edge([
      { suite: "format", name: "random pattern", params, checks, timing, metrics: { blocksPerSecond: 3e6 } },
      { suite: "format", name: "validate", params, checks, timing, metrics: {} },
    ]);
    expect(markdown).toContain("| random pattern | 256×256, 32×32 blocks, density 0.5 | 2.00 | 1.90–2.10 | 3.0 M blocks/s |");
    expect(markdown).toContain("| validate | 256×256, 32×32 blocks, density 0.5 | 2.00 | 1.90–2.10 | – |");
  });

  it("keeps two significant digits of a rate too small for two decimals", () => {
    // 64x256x256 at density 0.1 in 1000 s: 3.4e-7 GFLOP/s; the dense product 250x faster than it.
    const { markdown } = edge([kernelRecord("bsrLinear", 0, 1, 4), kernelRecord("bsrLinear", 32, 0.1, 1e6)]);
    expect(markdown).toContain("| 32 | 0.1 | 1000000 | 900000–1100000 | 8.4e-7 | 0.0000040 |");
  });
});

describe("writeRun", () => {
  const dir = mkdtempSync(join(tmpdir(), "bench-report-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("writes the JSON, the report, its charts and an index of machines", () => {
    const machineDir = join(dir, run.machine.name);
    const reportPath = writeRun(run, machineDir);
    expect(reportPath).toBe(join(machineDir, "js.md"));
    expect(JSON.parse(readFileSync(join(machineDir, "js.json"), "utf8"))).toEqual(run);
    expect(readdirSync(join(machineDir, "charts"))).toHaveLength(2);
    writeIndex(dir);
    expect(readFileSync(join(dir, "README.md"), "utf8")).toContain("- [cpu-test-2c: js](cpu-test-2c/js.md)");
  });

  it("keeps an index's own lines and descriptions, and adds a link to a run report it does not have yet", () => {
    const results = mkdtempSync(join(tmpdir(), "bench-index-"));
    try {
      mkdirSync(join(results, "gpu-x"));
      writeFileSync(join(results, "gpu-x", "notes.md"), "# Notes\n");
      const index = [
        "# Benchmark results",
        "",
        "One folder per machine; each report says how it was measured.",
        "",
        "- [gpu-x: what was measured, in words](gpu-x/notes.md) (a description written by hand)",
        "",
        "Prose after the list.",
        "",
      ].join("\n");
      writeFileSync(join(results, "README.md"), index);
      writeRun(run, join(results, run.machine.name));
      writeFileSync(join(results, run.machine.name, "extra.md"), "# Not a run report\n");
      expect(writeIndex(results)).toBe(true);
      const lines = readFileSync(join(results, "README.md"), "utf8").split("\n");
      expect(lines).toEqual([...index.split("\n").slice(0, 5), "- [cpu-test-2c: js](cpu-test-2c/js.md)", ...index.split("\n").slice(5)]);
      // Written again, nothing changes.
      expect(writeIndex(results)).toBe(true);
      expect(readFileSync(join(results, "README.md"), "utf8").split("\n")).toEqual(lines);
    } finally {
      rmSync(results, { recursive: true, force: true });
    }
  });

  it("leaves a README.md it did not write alone (--out pointed at a folder of the user's own)", () => {
    const own = mkdtempSync(join(tmpdir(), "bench-own-"));
    try {
      writeFileSync(join(own, "README.md"), "# My project\n");
      writeRun(run, join(own, run.machine.name));
      expect(writeIndex(own)).toBe(false);
      expect(readFileSync(join(own, "README.md"), "utf8")).toBe("# My project\n");
      rmSync(join(own, "README.md"));
      expect(writeIndex(own)).toBe(true);
      expect(writeIndex(own)).toBe(true);
      expect(readFileSync(join(own, "README.md"), "utf8")).toContain("(cpu-test-2c/js.md)");
    } finally {
      rmSync(own, { recursive: true, force: true });
    }
  });
});
