import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { add, disableLeakGuard, enableLeakGuard, engine, type LeakReport, leakGuard, mul, type Tensor, tensor, tidy, ValueError } from "../src/index";

afterEach(() => disableLeakGuard());

/** Two tensors per step that nobody disposes, as a loop written without tidy leaks them. */
function leakyStep(x: Tensor): void {
  const y = add(x, x);
  mul(y, y);
}

describe("leak guard", () => {
  it("warns once, naming the creation site, when live tensors grow step after step", () => {
    const reports: LeakReport[] = [];
    enableLeakGuard({ onLeak: (report) => reports.push(report) });
    const x = tensor([1, 2], [2]);
    for (let step = 0; step < 300; step++) {
      leakyStep(x);
      leakGuard.step();
    }
    expect(reports).toHaveLength(1);
    const [report] = reports;
    expect(report.growth).toBeGreaterThanOrEqual(20);
    expect(report.sites[0].count).toBeGreaterThan(100);
    expect(report.sites[0].site).toMatch(/leak_guard\.test\.ts:\d+/);
    expect(report.message).toMatch(/wrap each step in tidy\(\)/);
    expect(leakGuard.sites(1)[0].site).toBe(report.sites[0].site);
  });

  it("stays quiet for a loop that disposes what it makes, and for a one-off warm-up", () => {
    const reports: LeakReport[] = [];
    enableLeakGuard({ onLeak: (report) => reports.push(report) });
    const x = tensor([1, 2], [2]);
    const kept: Tensor[] = [];
    for (let step = 0; step < 400; step++) {
      // Optimizer state made once, in the first step, is not a leak.
      if (step === 0) for (let i = 0; i < 50; i++) kept.push(add(x, x));
      tidy(() => leakyStep(x));
      leakGuard.step();
    }
    expect(reports).toHaveLength(0);
    expect(leakGuard.sites().reduce((sum, site) => sum + site.count, 0)).toBe(51);
  });

  it("counts each outermost tidy exit as a step when the code never calls step()", () => {
    const reports: LeakReport[] = [];
    enableLeakGuard({ onLeak: (report) => reports.push(report) });
    const x = tensor([1, 2], [2]);
    for (let step = 0; step < 300; step++) {
      leakyStep(x);
      tidy(() => add(x, x));
    }
    expect(reports).toHaveLength(1);
  });

  it("does not keep leaked tensors alive, and turns off completely", () => {
    enableLeakGuard();
    expect(leakGuard.enabled).toBe(true);
    expect(engine.debugHooks).not.toBeNull();
    disableLeakGuard();
    expect(leakGuard.enabled).toBe(false);
    expect(engine.debugHooks).toBeNull();
    expect(() => enableLeakGuard({ windowSteps: 0 })).toThrow(RangeError);
  });

  it("refuses an onLeak that is not a function when enabled, keeping the guard that was on", () => {
    const reports: LeakReport[] = [];
    enableLeakGuard({ onLeak: (report) => reports.push(report) });
    // It threw "onLeak is not a function" only when a leak was reported, from the exit of some tidy steps later.
    expect(() => enableLeakGuard({ onLeak: "console" as unknown as () => void })).toThrow(new ValueError('enableLeakGuard: onLeak must be a function, got "console"'));
    expect(() => enableLeakGuard({ windowSteps: 0 })).toThrow(RangeError);
    expect(leakGuard.enabled).toBe(true);
    expect(engine.debugHooks).not.toBeNull();
  });

  it("BLOCKSPARSE_DEBUG_LEAKS=1 turns it on with no code and warns on stderr", () => {
    const run = (value: string | undefined) =>
      spawnSync(process.execPath, ["--import", "tsx", "test/children/leaky-loop.ts"], {
        cwd: fileURLToPath(new URL("..", import.meta.url)),
        env: { ...process.env, BLOCKSPARSE_DEBUG_LEAKS: value },
        encoding: "utf8",
        timeout: 60_000,
      });
    const on = run("1");
    expect(on.status).toBe(0);
    expect(on.stderr.match(/blocksparse leak guard/g)).toHaveLength(1);
    expect(on.stderr).toMatch(/leaky-loop\.ts:\d+/);
    const off = run(undefined);
    expect(off.stderr).not.toMatch(/leak guard/);
  }, 90_000);
});
