import { getBackend, listBackends, removeBackend, setBackend } from "@blocksparse/core";
import { CPU_PRIORITY, addonCandidates, cpuAvailability } from "../src/index";
import { describe, expect, test, vi } from "vitest";

describe("loading the addon and registering the backend", () => {
  test("importing the package registers cpu above js (and below cuda's 10)", () => {
    expect(CPU_PRIORITY).toBeGreaterThan(1);
    expect(CPU_PRIORITY).toBeLessThan(10);
    expect(listBackends().slice(0, 2)).toEqual(["cpu", "js"]);
  });

  test("the addon is looked for in the kernels-cpu build", () => {
    expect(addonCandidates().some((path) => path.endsWith("kernels-cpu/build/Release/blocksparse_cpu.node"))).toBe(true);
  });

  test("availability is one answer: cpu active, or js active after one warning giving the reason", () => {
    const availability = cpuAvailability();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const active = getBackend();
      if (availability.available) {
        expect(active).toBe("cpu");
        expect(warn).not.toHaveBeenCalled();
      } else {
        expect(process.env.BLOCKSPARSE_REQUIRE_CPU, `the CPU addon is required here but: ${availability.reason}`).not.toBe("1");
        expect(active).toBe("js");
        expect(availability.reason).toMatch(/\S/);
        expect(availability.reason).not.toMatch(/\n/);
        expect(warn).toHaveBeenCalledTimes(1);
        expect(String(warn.mock.calls[0][0])).toContain(availability.reason as string);
        expect(() => setBackend("cpu")).toThrow(availability.reason as string);
        expect(getBackend()).toBe("js");
      }
    } finally {
      warn.mockRestore();
    }
  });

  test("a removed backend is gone from the registry", () => {
    removeBackend("cpu");
    expect(listBackends()).not.toContain("cpu");
  });
});
