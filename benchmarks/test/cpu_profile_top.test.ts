import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const script = resolve(__dirname, "../scripts/cpu-profile-top.mjs");
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "cpu-profile-top-"));
  execFileSync(process.execPath, ["--cpu-prof", "--cpu-prof-dir", dir, "-e", "let s = 0; for (let i = 0; i < 2e7; i++) s += i;"]);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (...args: string[]) => spawnSync(process.execPath, [script, ...args], { encoding: "utf8" });

describe("cpu-profile-top.mjs", () => {
  it("prints the functions with the most self time, as many as asked", () => {
    const { status, stdout } = run(dir, "2");
    expect(status).toBe(0);
    const lines = stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(/^ *\d+\.\d% {2}\S/);
  });

  it("refuses a count that is no positive integer, a missing path and a folder without profiles, instead of printing nothing", () => {
    expect(run(dir, "abc")).toMatchObject({ status: 2, stdout: "", stderr: 'cpu-profile-top.mjs: count must be a positive integer, got "abc"\n' });
    expect(run(dir, "0").status).toBe(2);
    expect(run(join(dir, "none"))).toMatchObject({ status: 2, stderr: `cpu-profile-top.mjs: ${join(dir, "none")} does not exist\n` });
    const empty = mkdtempSync(join(tmpdir(), "cpu-profile-top-empty-"));
    try {
      expect(run(empty)).toMatchObject({ status: 1, stderr: expect.stringContaining("holds no .cpuprofile file") });
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
