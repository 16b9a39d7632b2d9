import { getBackend, listBackends, removeBackend, setBackend } from "@blocksparse/core";
import { CUDA_PRIORITY, addonCandidates, cudaAvailability } from "../src/index";
import { BUILD_FROM_SOURCE, PLATFORM_PACKAGE } from "../src/loader";
import { describe, expect, test, vi } from "vitest";

describe("loading the addon and registering the backend", () => {
  test("importing the package registers cuda above js", () => {
    expect(CUDA_PRIORITY).toBeGreaterThan(1);
    expect(listBackends().slice(0, 2)).toEqual(["cuda", "js"]);
  });

  test("the addon is looked for in the prebuilt platform package first, then in builds from source", () => {
    const candidates = addonCandidates().filter((candidate) => candidate.source !== "BLOCKSPARSE_CUDA_ADDON");
    expect(candidates.map((candidate) => candidate.source)).toEqual([
      `the prebuilt binary (${PLATFORM_PACKAGE})`,
      "a build from source at install",
      "a build from source in this repository",
    ]);
    expect(candidates[2]!.path).toMatch(/kernels-cuda\/build\/Release\/blocksparse_cuda\.node$/);
  });

  test("without any binary the reason speaks to an app: the npm and pnpm commands, no repository paths", () => {
    expect(BUILD_FROM_SOURCE).toContain("npm rebuild @blocksparse/backend-cuda");
    expect(BUILD_FROM_SOURCE).toContain("pnpm approve-builds");
    const availability = cudaAvailability();
    if (!availability.available && /not installed/.test(availability.reason ?? "")) {
      expect(availability.reason).toContain(BUILD_FROM_SOURCE);
      expect(availability.reason).not.toMatch(/kernels-cuda|pnpm build|(^|[\s(])\/\w/); // no path on this machine
    }
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
