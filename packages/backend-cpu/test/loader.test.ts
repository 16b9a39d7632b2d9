import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { getBackend, listBackends, removeBackend, setBackend } from "@blocksparse/core";
import { CPU_PRIORITY, addonCandidates, cpuAvailability } from "../src/index";
import { loadAddon, loadAddonFrom } from "../src/loader";
import { afterAll, describe, expect, test, vi } from "vitest";

// tsup builds the CommonJS bundle one test checks; where it cannot load (a checkout carried without typescript), that
// test is skipped saying so and the others run.
const tsupImport = await import("tsup").then(
  (tsup) => ({ tsup, reason: null }),
  (error: unknown) => ({ tsup: null, reason: error instanceof Error ? error.message : String(error) }),
);
if (tsupImport.tsup === null) console.log(`[loader.test.ts] the CommonJS build test is skipped: tsup does not load here (${tsupImport.reason})`);

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

  describe("a build that does not load says why and what to do, on one line", () => {
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-cpu-loader-"));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const reasonFor = (path: string) => {
      const load = loadAddonFrom([path]);
      expect(load.addon).toBeNull();
      return load.addon === null ? load.reason : "";
    };

    test("not built: where it looked and how to build it", () => {
      const reason = reasonFor(join(dir, "missing.node"));
      expect(reason).toContain("not built");
      expect(reason).toContain("missing.node");
      expect(reason).toMatch(/C\+\+17 compiler and CMake/);
    });

    test("a corrupt file and a build for another CPU: the path, dlopen's reason and how to rebuild", () => {
      const corrupt = join(dir, "corrupt.node");
      writeFileSync(corrupt, "not an ELF file\n");
      const builds = [corrupt];
      const built = loadAddon();
      if (built.addon !== null) {
        // The same addon marked as built for another CPU (ELF e_machine: aarch64, or x86-64 on arm64): dlopen says
        // "No such file", though it is there.
        const foreign = join(dir, "foreign.node");
        const bytes = readFileSync(built.path);
        bytes[18] = process.arch === "arm64" ? 0x3e : 0xb7;
        writeFileSync(foreign, bytes);
        builds.push(foreign);
      }
      for (const path of builds) {
        const reason = reasonFor(path);
        expect(reason).toContain(`${path} failed to load`);
        expect(reason).toMatch(/built for another platform, CPU or Node\.js/);
        expect(reason).toContain("npm rebuild @blocksparse/backend-cpu");
        expect(reason).not.toMatch(/\n/);
      }
    });

    test("a module without the addon's functions: how to rebuild", () => {
      const stranger = join(dir, "stranger.js");
      writeFileSync(stranger, "module.exports = { buildInfo() {} };\n");
      const reason = reasonFor(stranger);
      expect(reason).toContain("not a compatible build");
      expect(reason).toContain("npm rebuild @blocksparse/backend-cpu");
    });
  });

  test.skipIf(tsupImport.tsup === null)("the CommonJS build finds the addon under a directory named with # or %", { timeout: 60_000 }, async () => {
    // Its shim of import.meta.url read "a#b" as ending at "a" (no addon found) and "c%d" as a malformed URL (a URIError).
    const tsup = tsupImport.tsup as typeof import("tsup");
    const { default: tsupConfig } = await import("../tsup.config");
    const packageDir = resolve(import.meta.dirname, "..");
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-cpu-cjs-"));
    try {
      const outDir = join(dir, "dist");
      await tsup.build({ ...(tsupConfig as object), entry: { index: join(packageDir, "src/index.ts") }, format: ["cjs"], dts: false, sourcemap: false, outDir, silent: true });
      for (const name of ["a#b", "c%d"]) {
        const root = join(dir, name);
        mkdirSync(join(root, "packages/backend-cpu"), { recursive: true });
        cpSync(outDir, join(root, "packages/backend-cpu/dist"), { recursive: true });
        symlinkSync(join(packageDir, "node_modules"), join(root, "packages/backend-cpu/node_modules"));
        const script = 'try { console.log(require("./dist/index.cjs").addonCandidates()[0]); } catch (error) { console.log(String(error)); }';
        const child = spawnSync(process.execPath, ["-e", script], { cwd: join(root, "packages/backend-cpu"), encoding: "utf8", env: { ...process.env, BLOCKSPARSE_CPU_ADDON: "" } });
        expect(child.stdout.trim(), child.stderr).toBe(join(root, "kernels-cpu/build/Release/blocksparse_cpu.node"));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a removed backend is gone from the registry", () => {
    removeBackend("cpu");
    expect(listBackends()).not.toContain("cpu");
  });
});
