import { spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { getBackend, listBackends, removeBackend, setBackend } from "@blocksparse/core";
import { CUDA_PRIORITY, addonCandidates, cudaAvailability } from "../src/index";
import { type AddonCandidate, BUILD_FROM_SOURCE, deviceIndexOf, loadFirstAddon, PLATFORM_PACKAGE, startOn } from "../src/loader";
import { NATIVE_FUNCTIONS, type NativeAddon } from "../src/native";
import { afterAll, describe, expect, test, vi } from "vitest";

// tsup builds the CommonJS bundle one test checks; where it cannot load (a checkout carried without typescript), that
// test is skipped saying so and the others run.
const tsupImport = await import("tsup").then(
  (tsup) => ({ tsup, reason: null }),
  (error: unknown) => ({ tsup: null, reason: error instanceof Error ? error.message : String(error) }),
);
if (tsupImport.tsup === null) console.log(`[loader.test.ts] the CommonJS build test is skipped: tsup does not load here (${tsupImport.reason})`);

/** Stand-ins for binaries, as CommonJS modules `require` loads like a .node file. */
const fakes = mkdtempSync(join(tmpdir(), "blocksparse-loader-"));
afterAll(() => rmSync(fakes, { recursive: true, force: true }));
function fakeAddon(name: string, body: "addon" | "incomplete" | "throws"): string {
  const path = join(fakes, `${name}.cjs`);
  const exports = `{ ${NATIVE_FUNCTIONS.map((fn) => `${fn}() {}`).join(", ")}, which: ${JSON.stringify(name)} }`;
  const text = { addon: `module.exports = ${exports};`, incomplete: "module.exports = { init() {} };", throws: 'throw new Error("invalid ELF header");' }[body];
  writeFileSync(path, text);
  return path;
}
const platform = (path: string | null): AddonCandidate => ({ source: `the prebuilt binary (${PLATFORM_PACKAGE})`, path });
const local = (path: string | null): AddonCandidate => ({ source: "a build from source at install", path });
const override = (path: string): AddonCandidate => ({ source: "BLOCKSPARSE_CUDA_ADDON", path });

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

  test("the prebuilt binary wins over a build from source when both are there", () => {
    const load = loadFirstAddon([platform(fakeAddon("prebuilt", "addon")), local(fakeAddon("local", "addon"))]);
    expect(load.addon === null ? load.reason : load.path).toBe(join(fakes, "prebuilt.cjs"));
  });

  test("a prebuilt binary that fails to load or lacks functions falls through to the build from source", () => {
    for (const broken of ["throws", "incomplete"] as const) {
      const load = loadFirstAddon([platform(fakeAddon(`prebuilt-${broken}`, broken)), local(fakeAddon("local", "addon"))]);
      expect(load.addon === null ? load.reason : load.path).toBe(join(fakes, "local.cjs"));
    }
    const absent = loadFirstAddon([platform(null), platform(join(fakes, "missing.node")), local(fakeAddon("local", "addon"))]);
    expect(absent.addon === null ? absent.reason : absent.path).toBe(join(fakes, "local.cjs"));
  });

  test("when every binary fails, one reason names each one and why, and how to build from source", () => {
    const load = loadFirstAddon([platform(fakeAddon("bad-prebuilt", "throws")), local(fakeAddon("bad-local", "incomplete"))]);
    expect(load.addon).toBeNull();
    const reason = load.addon === null ? load.reason : "";
    expect(reason).toContain(`the prebuilt binary (${PLATFORM_PACKAGE}) failed to load (invalid ELF header)`);
    expect(reason).toContain("a build from source at install is not a compatible build (it lacks ");
    expect(reason).toContain(BUILD_FROM_SOURCE);
    expect(reason).not.toMatch(/\n/);
  });

  test("with no binary at all the reason says the platform package is not installed", () => {
    const load = loadFirstAddon([platform(null), local(join(fakes, "missing.node"))]);
    expect(load.addon === null ? load.reason : load.path).toMatch(/^the CUDA addon is not installed: /);
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

  test.skipIf(tsupImport.tsup === null)("the CommonJS build looks for the addon under a directory named with # or %", { timeout: 60_000 }, async () => {
    // Its shim of import.meta.url read "a#b" as ending at "a" (no addon found) and "c%d" as a malformed URL (a URIError).
    const tsup = tsupImport.tsup as typeof import("tsup");
    const { default: tsupConfig } = await import("../tsup.config");
    const packageDir = resolve(import.meta.dirname, "..");
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-cuda-cjs-"));
    try {
      const outDir = join(dir, "dist");
      await tsup.build({ ...(tsupConfig as object), entry: { index: join(packageDir, "src/index.ts") }, format: ["cjs"], dts: false, sourcemap: false, outDir, silent: true });
      for (const name of ["a#b", "c%d"]) {
        const root = join(dir, name);
        mkdirSync(join(root, "packages/backend-cuda"), { recursive: true });
        cpSync(outDir, join(root, "packages/backend-cuda/dist"), { recursive: true });
        symlinkSync(join(packageDir, "node_modules"), join(root, "packages/backend-cuda/node_modules"));
        const script = 'try { console.log(require("./dist/index.cjs").addonCandidates().at(-1).path); } catch (error) { console.log(String(error)); }';
        const child = spawnSync(process.execPath, ["-e", script], { cwd: join(root, "packages/backend-cuda"), encoding: "utf8", env: { ...process.env, BLOCKSPARSE_CUDA_ADDON: "" } });
        expect(child.stdout.trim(), child.stderr).toBe(join(root, "kernels-cuda/build/Release/blocksparse_cuda.node"));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
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

  test("BLOCKSPARSE_CUDA_DEVICE names a device index within int32, never one that CUDA would get wrapped", () => {
    expect(deviceIndexOf(undefined)).toBe(0);
    expect(deviceIndexOf("3")).toBe(3);
    expect(deviceIndexOf(String(2 ** 31 - 1))).toBe(2 ** 31 - 1);
    // 2^32 cast to a C int is 0: the first GPU, not the one asked for.
    for (const text of [String(2 ** 32), String(2 ** 31), "-1", "1.5", "gpu0"]) {
      expect(deviceIndexOf(text)).toBe(`BLOCKSPARSE_CUDA_DEVICE must be a device index, got '${text}'`);
    }
  });

  test("BLOCKSPARSE_CUDA_ADDON naming no file is said, not skipped in silence", () => {
    const missing = join(fakes, "no-such-build", "blocksparse_cuda.node");
    // Nothing else there: the reason names the path the user set, not only the missing platform package.
    const alone = loadFirstAddon([override(missing), platform(null), local(join(fakes, "missing.node"))]);
    expect(alone.addon).toBeNull();
    expect(alone.addon === null ? alone.reason : "").toContain(`BLOCKSPARSE_CUDA_ADDON names ${missing}, which does not exist`);
    // Another binary loads in its place: a warning says which, and why the one asked for was not used.
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    try {
      const fallen = loadFirstAddon([override(missing), local(fakeAddon("local", "addon"))]);
      expect(fallen.addon === null ? fallen.reason : fallen.path).toBe(join(fakes, "local.cjs"));
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0][0])).toBe(
        `BLOCKSPARSE_CUDA_ADDON names ${missing}, which does not exist; loaded a build from source at install (${join(fakes, "local.cjs")}) instead`,
      );
      expect(warn.mock.calls[0][1]).toEqual({ code: "BLOCKSPARSE_CUDA_ADDON" });
      // One that loads is used with no warning; a stale one is named with the functions it lacks.
      warn.mockClear();
      expect(loadFirstAddon([override(fakeAddon("mine", "addon")), local(fakeAddon("local", "addon"))])).toMatchObject({ path: join(fakes, "mine.cjs") });
      expect(warn).not.toHaveBeenCalled();
      const stale = loadFirstAddon([override(fakeAddon("stale", "incomplete"))]);
      expect(stale.addon === null ? stale.reason : "").toContain(
        `BLOCKSPARSE_CUDA_ADDON is not a compatible build (it lacks ${NATIVE_FUNCTIONS.filter((name) => name !== "init").slice(0, 3).join(", ")} and ${NATIVE_FUNCTIONS.length - 4} more`,
      );
    } finally {
      warn.mockRestore();
    }
  });

  test("BLOCKSPARSE_CUDA_DEVICE takes decimal digits only, and a device CUDA refuses is reported with the variable", () => {
    // Number() read these as devices 1, 10, 0 and 2.
    for (const text of ["0x1", "1e1", "  ", "0b10"]) expect(deviceIndexOf(text)).toBe(`BLOCKSPARSE_CUDA_DEVICE must be a device index, got '${text}'`);
    expect(deviceIndexOf("")).toBe(0); // set but empty: as unset
    expect(deviceIndexOf(" 2 ")).toBe(2);
    const addon = Object.fromEntries(NATIVE_FUNCTIONS.map((name) => [name, () => undefined])) as unknown as NativeAddon;
    addon.init = (index: number) => {
      throw new Error(`CUDA device index ${index} is out of range: 2 device(s)`);
    };
    const load = { addon, path: "stand-in" };
    expect(startOn(load, "5")).toEqual({ addon: null, reason: "BLOCKSPARSE_CUDA_DEVICE=5: CUDA device index 5 is out of range: 2 device(s)" });
    expect(startOn(load, undefined)).toEqual({ addon: null, reason: "CUDA device index 0 is out of range: 2 device(s)" });
    expect(startOn(load, "0x1")).toEqual({ addon: null, reason: "BLOCKSPARSE_CUDA_DEVICE must be a device index, got '0x1'" });
  });

  test("a removed backend is gone from the registry", () => {
    removeBackend("cuda");
    expect(listBackends()).not.toContain("cuda");
  });
});
