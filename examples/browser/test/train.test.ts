import { describe, expect, it } from "vitest";
import { trainAndReload } from "../src/train";

describe("the browser example's job, in Node", () => {
  it("trains (the loss falls), saves and reloads a model that answers the same", () => {
    const result = trainAndReload(30);
    expect(result.losses).toHaveLength(30);
    expect(result.losses.at(-1)!).toBeLessThan(result.losses[0]! * 0.7);
    expect(result.reloadedMatches).toBe(true);
    expect(result.savedBytes).toBeGreaterThan(1000);
  });
});
