import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { XMLValidator } from "fast-xml-parser";
import { describe, expect, it } from "vitest";
import { readStepFile, type StepRow, stepCharts, writeStepCharts } from "../src/ffn_chart";
import { runCli } from "./run_cli";

const row = (tokens: number, block: number, density: number, medianMs: number, vsTorchDense?: number): StepRow => ({
  model: "ffn",
  dModel: 1024,
  hidden: 4096,
  tokens,
  dtype: "bfloat16",
  block,
  density,
  medianMs,
  vsTorchDense,
});

describe("stepCharts", () => {
  const rows = [
    row(8192, 0, 1, 0.7, 1.9),
    row(8192, 64, 0.25, 0.35),
    row(8192, 64, 0.5, 0.7),
    row(8192, 32, 0.25, 0.7),
    row(2048, 0, 1, 0.25),
    row(2048, 64, 0.1, 0.125),
    // No dense row for this token count: no chart.
    row(512, 64, 0.25, 0.1),
  ];

  it("draws one chart per model, widths and tokens with a dense row, one line per block size", () => {
    const charts = stepCharts(rows, "captured");
    expect(charts.map((c) => c.file)).toEqual(["ffn-1024x4096-8192-captured-speedup.svg", "ffn-1024x4096-2048-captured-speedup.svg"]);
    for (const chart of charts) expect(XMLValidator.validate(chart.svg)).toBe(true);
    const [big] = charts;
    expect(big.title).toContain("8192 tokens");
    expect(big.title).toContain("captured");
    expect(big.svg).toContain("32x32 blocks");
    expect(big.svg).toContain("64x64 blocks");
    // PyTorch's step took 1.9x ours, so it sits at 1/1.9 of our dense step's speed; the 2048-token group has no PyTorch row.
    expect(big.svg).toContain("PyTorch dense step");
    expect(charts[1].svg).not.toContain("PyTorch dense step");
  });

  it("says one token in the title of a decode step's chart, not '1 tokens'", () => {
    const [chart] = stepCharts([row(1, 0, 1, 0.02), row(1, 32, 0.25, 0.01)]);
    expect(chart.title).toBe("ffn 1024<->4096, 1 token, bfloat16: speed-up over dense");
  });

  it("draws one line per block shape: a rectangle apart from the square of its rows", () => {
    const shapes = [row(8192, 0, 1, 0.7), row(8192, 32, 0.25, 0.7), { ...row(8192, 32, 0.25, 0.5), blockCols: 64 }, { ...row(8192, 32, 0.1, 0.4), blockCols: 64 }];
    const [chart] = stepCharts(shapes);
    expect(chart.svg).toContain("32x32 blocks");
    expect(chart.svg).toContain("32x64 blocks");
    // Ordered by block area: the 32x32 line (one point) first, then 32x64 (two).
    const lines = [...chart.svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1].split(" ").length);
    expect(lines).toEqual([1, 2]);
  });

  it("plots the speed-up over dense, densities left to right", () => {
    const [big] = stepCharts(rows);
    const path = /<path d="([^"]+)"/.exec(big.svg);
    expect(path).not.toBeNull();
    // The first line is 32x32 (one point); the 64x64 line has two, and its points are ordered by density.
    const lines = [...big.svg.matchAll(/<path d="([^"]+)"/g)].map((m) => m[1].split(" ").map((step) => step.slice(1).split(",").map(Number)));
    expect(lines).toHaveLength(2);
    const [[x1, y1], [x2, y2]] = lines[1];
    expect(x1).toBeLessThan(x2);
    // Speed-up 2.0 at d=0.25 is drawn higher (smaller y) than 1.0 at d=0.5.
    expect(y1).toBeLessThan(y2);
  });

  it("writes the files, and nothing for rows without a dense step", () => {
    const dir = mkdtempSync(join(tmpdir(), "ffn-chart-"));
    try {
      expect(writeStepCharts([row(512, 64, 0.25, 0.1)], join(dir, "none"))).toEqual([]);
      const written = writeStepCharts(rows, join(dir, "charts"));
      expect(readdirSync(join(dir, "charts")).sort()).toEqual([...written].sort());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("readStepFile", () => {
  it("names the file and the row of a saved result it cannot chart, instead of a TypeError or a chart of coerced strings", () => {
    const dir = mkdtempSync(join(tmpdir(), "ffn-chart-read-"));
    const file = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    try {
      const good = file("good.json", JSON.stringify({ graph: true, rows: [row(16, 0, 1, 2), row(16, 32, 0.5, 1)] }));
      expect(readStepFile(good)).toMatchObject({ graph: true, rows: [{ block: 0 }, { block: 32 }] });
      const cut = file("cut.json", '{"rows": [');
      expect(() => readStepFile(cut)).toThrow(new RegExp(`^${cut}: not JSON \\(.*\\); expected ffn.ts's ffn.json$`));
      expect(() => readStepFile(file("null.json", "null"))).toThrow(/null.json: no "rows" array/);
      expect(() => readStepFile(file("hole.json", '{"rows": [null]}'))).toThrow(/hole.json: row 0 is not an ffn.ts row: not an object$/);
      const text = file("text.json", JSON.stringify({ rows: [row(16, 0, 1, 2), { ...row(16, 32, 0.5, 1), medianMs: "1" }] }));
      expect(() => readStepFile(text)).toThrow(/text.json: row 1 is not an ffn.ts row: "medianMs" is not a number$/);
      expect(() => readStepFile(join(dir, "absent.json"))).toThrow(/absent.json: cannot read it: ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("ffn_chart.ts's command line", () => {
  // Charts are named by model, widths and tokens: a float32 and a bfloat16 run of one case both wrote
  // ffn-1024x4096-16-speedup.svg, the second over the first, and both were listed as written (exit 0).
  it("refuses two files whose charts share a name, and one file given twice, writing nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ffn-chart-cli-"));
    try {
      const save = (name: string, dtype: string) => {
        writeFileSync(join(dir, name), JSON.stringify({ rows: [row(16, 0, 1, 2), row(16, 32, 0.5, 1)].map((r) => ({ ...r, dtype })) }));
        return join(dir, name);
      };
      const [f32, bf16] = [save("f32.json", "float32"), save("bf16.json", "bfloat16")];
      const out = join(dir, "charts");
      const clash = await runCli("ffn_chart.ts", [f32, bf16, "--out", out]);
      expect(clash.stderr).toBe(`${bf16}: its chart ffn-1024x4096-16-speedup.svg is also ${f32}'s, and would overwrite it; chart the two into separate --out directories\n`);
      expect(clash.code).toBe(1);
      expect(clash.stdout).toBe("");
      const twice = await runCli("ffn_chart.ts", [f32, join(dir, ".", "f32.json"), "--out", out]);
      expect(twice.stderr).toMatch(/f32.json: given twice; give each file once\n$/);
      expect(twice.code).toBe(1);
      expect(readdirSync(out)).toEqual([]);
      // Each on its own writes its chart.
      const one = await runCli("ffn_chart.ts", [bf16, "--out", out]);
      expect(one.code).toBe(0);
      expect(readdirSync(out)).toEqual(["ffn-1024x4096-16-speedup.svg"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
