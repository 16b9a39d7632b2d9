import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { saneTolerance } from "../src/gpt2_train_flags";

const script = resolve(__dirname, "../src/gpt2_train.ts");

describe("gpt2_train.ts", () => {
  it("lets a fresh model's first loss sit further from ln(vocab) the fewer tokens it averages", () => {
    expect(saneTolerance(1)).toBeCloseTo(1.1, 12);
    expect(saneTolerance(16)).toBeCloseTo(0.35, 12);
    expect(saneTolerance(8192)).toBeLessThan(0.112);
  });

  it("runs a two-token vocabulary over 16 tokens (its correct first loss is 18% off ln 2, which a 10% bound refused)", () => {
    const out = mkdtempSync(join(tmpdir(), "gpt2-train-"));
    try {
      const flags = ["--backend", "js", "--sizes", "tiny", "--batch", "1", "--context", "16", "--vocab", "2", "--blocks", "32", "--densities", "0.25", "--quick", "--out", out];
      execFileSync(process.execPath, ["--import", "tsx", script, ...flags], { cwd: resolve(__dirname, ".."), stdio: "pipe" });
      const { rows } = JSON.parse(readFileSync(join(out, "gpt2-train.json"), "utf8")) as { rows: { checks: { ok: boolean; what: string; relError: number }[] }[] };
      const sane = rows.map((row) => row.checks[1]);
      expect(sane.every((check) => check.ok && check.relError > 0.1)).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 120_000);

  it("checks and times a tiny GPT-2's step, dense and block-sparse, on js", () => {
    const out = mkdtempSync(join(tmpdir(), "gpt2-train-"));
    try {
      const flags = ["--backend", "js", "--sizes", "tiny", "--batch", "2", "--context", "16", "--vocab", "1001", "--blocks", "32", "--densities", "0.5", "--quick", "--profile", "--out", out];
      execFileSync(process.execPath, ["--import", "tsx", script, ...flags], { cwd: resolve(__dirname, ".."), stdio: "pipe" });
      const result = JSON.parse(readFileSync(join(out, "gpt2-train.json"), "utf8")) as {
        backend: string;
        machine: string;
        commit: string;
        date: string;
        rows: { block: number; density: number; medianMs: number; parameters: number; checks: { ok: boolean; what: string }[] }[];
      };
      // The JSON alone says what ran where: the backend, the machine, the commit and the date.
      expect(result).toMatchObject({ backend: "js", machine: expect.stringMatching(/^cpu-/), commit: expect.any(String), date: expect.stringMatching(/^\d{4}-/) });
      expect(result.rows.map((r) => [r.block, r.density])).toEqual([
        [0, 1],
        [32, 0.5],
      ]);
      for (const row of result.rows) {
        expect(row.checks.map((c) => c.what)).toEqual([expect.stringMatching(/^first loss .* against float32/), expect.stringMatching(/^first loss [\d.]+ near ln\(vocab\)/), "step's loss is finite"]);
        expect(row.checks.every((c) => c.ok)).toBe(true);
        expect(row.medianMs).toBeGreaterThan(0);
      }
      // --profile: each model's eager step, kernel by kernel (the loss's kernel among them).
      const profile = readFileSync(join(out, "gpt2-train-profile.md"), "utf8");
      expect(profile).toContain("gpt2 tiny dense, eager step");
      expect(profile).toContain("gpt2 tiny 32x32 d=0.5, eager step");
      expect(profile).toContain("CrossEntropy");
      // Half the feed-forward weights kept: fewer parameters than the dense model.
      expect(result.rows[1].parameters).toBeLessThan(result.rows[0].parameters);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);

  it("calls a float32 run float32 throughout, not mixed precision", () => {
    const out = mkdtempSync(join(tmpdir(), "gpt2-train-"));
    try {
      const flags = ["--backend", "js", "--sizes", "tiny", "--batch", "1", "--context", "16", "--vocab", "128", "--blocks", "32", "--densities", "0.5", "--dtype", "float32", "--quick", "--out", out];
      execFileSync(process.execPath, ["--import", "tsx", script, ...flags], { cwd: resolve(__dirname, ".."), stdio: "pipe" });
      const report = readFileSync(join(out, "gpt2-train.md"), "utf8");
      expect(report).toMatch(/^# GPT-2 training steps \(float32\)\n/);
      expect(report).toContain("AdamW (float32 throughout)");
      expect(report).not.toContain("mixed precision");
      expect(report).not.toContain("master weights");
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 60_000);
});
