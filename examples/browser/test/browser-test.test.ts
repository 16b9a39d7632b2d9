import { spawnSync } from "node:child_process";
import { resolve } from "node:path";
import { expect, it } from "vitest";

it("test:browser says that CHROMIUM names no executable, rather than that none was found or a launch stack trace", () => {
  for (const chromium of ["/no/such/chromium", import.meta.dirname]) {
    const result = spawnSync(process.execPath, ["scripts/browser-test.mjs"], {
      cwd: resolve(import.meta.dirname, ".."),
      env: { ...process.env, CHROMIUM: chromium },
      encoding: "utf8",
    });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`CHROMIUM=${chromium} is not a file`);
    expect(result.stderr).not.toMatch(/^\s+at /m);
  }
  // Two Node processes, each loading the script's imports: seconds on a loaded machine, past vitest's 5 s default.
}, 60_000);
