import { describe, expect, it } from "vitest";
import { browserBundle, evaluatedCode } from "../../../browser-bundle.shared.ts";

describe("browser bundle (esbuild, minified, every export kept)", () => {
  // 127 KiB while configs were parsed with classic zod (not tree-shakeable, and its `new Function` probe).
  it("@blocksparse/models stays within 45 KiB gzipped and evaluates no code", async () => {
    const { code, gzipKiB } = await browserBundle(["@blocksparse/models"]);
    console.log(`@blocksparse/models: ${(code.length / 1024).toFixed(1)} KiB minified, ${gzipKiB.toFixed(1)} KiB gzipped`);
    expect(gzipKiB).toBeLessThanOrEqual(45);
    expect(evaluatedCode(code)).toEqual([]);
  }, 60_000);
});
