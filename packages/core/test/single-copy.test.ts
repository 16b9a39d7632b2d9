import { describe, expect, it, vi } from "vitest";
import { version } from "../src/index";

describe("one copy of core per process", () => {
  it("a second copy throws DuplicateCoreError on load, naming both copies and the fix", async () => {
    vi.resetModules(); // the next import evaluates core's modules again: a second copy, as a mixed ESM/CJS app gets
    const error = await import("../src/index").then(
      () => null,
      (thrown: unknown) => thrown,
    );
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).name).toBe("DuplicateCoreError");
    expect((error as Error).message).toContain(`version ${version} from its TypeScript sources, then version ${version}`);
    expect((error as Error).message).toMatch(/one module format .*npm dedupe/);
  });
});
