import { getBackend, listBackends, removeBackend, setBackend } from "@blocksparse/core";
import { CUDA_PRIORITY, addonCandidates, cudaAvailability } from "../src/index";
import { describe, expect, test, vi } from "vitest";

describe("loading the addon and registering the backend", () => {
  test("importing the package registers cuda above js", () => {
    expect(CUDA_PRIORITY).toBeGreaterThan(1);
    expect(listBackends().slice(0, 2)).toEqual(["cuda", "js"]);
  });

  test("the addon is looked for in the kernels-cuda build", () => {
    expect(addonCandidates().some((path) => path.endsWith("kernels-cuda/build/Release/blocksparse_cuda.node"))).toBe(true);
  });

  test("availability is one answer: cuda active with a device, or js active after one warning giving the reason", () => {
    const availability = cudaAvailability();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    try {
      const active = getBackend();
      if (availability.available) {
        expect(active).toBe("cuda");
        expect(availability.device?.name).toBeTruthy();
        expect(warn).not.toHaveBeenCalled();
      } else {
        expect(process.env.BLOCKSPARSE_REQUIRE_CUDA, `CUDA is required here but: ${availability.reason}`).not.toBe("1");
        expect(active).toBe("js");
        expect(availability.reason).toMatch(/\S/);
        expect(availability.reason).not.toMatch(/\n/);
        expect(warn).toHaveBeenCalledTimes(1);
        expect(String(warn.mock.calls[0][0])).toContain(availability.reason as string);
        // The reason is kept: asking for cuda again says the same thing, and js stays usable.
        expect(() => setBackend("cuda")).toThrow(availability.reason as string);
        expect(getBackend()).toBe("js");
      }
    } finally {
      warn.mockRestore();
    }
  });

  test("a removed backend is gone from the registry", () => {
    removeBackend("cuda");
    expect(listBackends()).not.toContain("cuda");
  });
});
