import { describe, expect, it } from "vitest";
import { nativeTimesTable, timeNativeCalls } from "../src/native_times";

/** An addon-like object whose calls advance a fake clock by a set number of microseconds. */
function fakeAddon(clock: { now: number }) {
  return {
    version: 3,
    launch(us: number): string {
      clock.now += us;
      return `launched ${us}`;
    },
    fail(): never {
      clock.now += 7;
      throw new Error("refused");
    },
  } as Record<string, unknown>;
}

describe("timeNativeCalls", () => {
  it("times each call after reset, passes arguments and results through, and counts throwing calls", () => {
    const clock = { now: 0 };
    const addon = fakeAddon(clock);
    const timer = timeNativeCalls(addon, Object.keys(addon), () => clock.now);
    const launch = addon.launch as (us: number) => string;
    expect(launch(100)).toBe("launched 100");
    expect(timer.times()).toEqual([]);
    timer.reset();
    expect(launch(10)).toBe("launched 10");
    expect(launch(60)).toBe("launched 60");
    expect(() => (addon.fail as () => void)()).toThrow("refused");
    expect(timer.times()).toEqual([
      { name: "launch", calls: 2, totalUs: 70, maxUs: 60, over50Us: 1 },
      { name: "fail", calls: 1, totalUs: 7, maxUs: 7, over50Us: 0 },
    ]);
    expect(addon.version).toBe(3);
  });

  it("wraps named functions that are not own properties (a proxy's), and restore puts the originals back", () => {
    const clock = { now: 0 };
    const calls: string[] = [];
    const target: Record<string, unknown> = {};
    const proxy = new Proxy(target, {
      get: (t, key) => (key in t ? t[key as string] : () => calls.push(String(key))),
    });
    const timer = timeNativeCalls(proxy, ["bsrLinear", "free"], () => clock.now);
    timer.reset();
    (proxy.bsrLinear as () => void)();
    (proxy.bsrLinear as () => void)();
    expect(calls).toEqual(["bsrLinear", "bsrLinear"]);
    expect(timer.times().map((t) => [t.name, t.calls])).toEqual([["bsrLinear", 2]]);
    const wrapped = target.bsrLinear;
    timer.restore();
    expect(target.bsrLinear).not.toBe(wrapped);
    (proxy.bsrLinear as () => void)();
    expect(timer.times().map((t) => [t.name, t.calls])).toEqual([["bsrLinear", 2]]);
  });

  it("tables the times per step, most first", () => {
    const table = nativeTimesTable(
      [
        { name: "sampledMatmul", calls: 20, totalUs: 400, maxUs: 97, over50Us: 3 },
        { name: "alloc", calls: 80, totalUs: 40, maxUs: 2, over50Us: 0 },
      ],
      10,
    );
    expect(table.split("\n")).toEqual([
      "native calls: 44.0 us of host time per step",
      "",
      "| function | calls per step | us per call (mean) | longest us | calls over 50 us | us per step |",
      "| --- | --- | --- | --- | --- | --- |",
      "| sampledMatmul | 2.00 | 20.00 | 97 | 3 | 40.0 |",
      "| alloc | 8.00 | 0.50 | 2 | 0 | 4.0 |",
    ]);
  });
});
