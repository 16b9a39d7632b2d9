/**
 * CudaBackend's public methods on a stand-in addon (no GPU needed, test/stand_in_addon.ts): what a disposed backend
 * refuses before the addon is reached, and the ValueErrors its setters throw for arguments of any kind.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BackendError, BsrPattern, ValueError } from "@blocksparse/core";
import { describe, expect, test, vi } from "vitest";
import { CudaBackend, type CudaBuffer } from "../src/backend";
import { AUTOTUNE_CACHE_FORMAT, AUTOTUNE_CACHE_VERSION, AUTOTUNE_LOCK_WAIT_MS, readAutotuneCache, serializeAutotuneCache } from "../src/autotune_cache";
import type { AutotuneRecord } from "../src/native";
import { environmentSwitch } from "../src/environment";
import { STAND_IN_DEVICE, standInAddon, standInCalls } from "./stand_in_addon";

vi.mock("../src/loader", async (importOriginal) => {
  const { standInStart } = await import("./stand_in_addon");
  return { ...(await importOriginal<typeof import("../src/loader")>()), startCuda: standInStart };
});

describe("CudaBackend's public methods on a stand-in addon", () => {
  test("a disposed backend refuses the process-wide switches and pattern uploads, reaching nothing native", () => {
    const backend = new CudaBackend();
    const known = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 1 });
    backend.pattern(known);
    backend.dispose();
    standInCalls.length = 0;
    const fresh = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 2 });
    const calls: [string, () => unknown][] = [
      ["setCublasEnabled", () => backend.setCublasEnabled(false)],
      ["setDenseProductMode", () => backend.setDenseProductMode("never")],
      ["setDenseSampledMode", () => backend.setDenseSampledMode("always")],
      // A new pattern was uploaded and held by no one (dispose had run); a known one gave its freed handle.
      ["pattern (new)", () => backend.pattern(fresh)],
      ["pattern (known)", () => backend.pattern(known)],
    ];
    for (const [what, call] of calls) expect(call, what).toThrow(BackendError);
    for (const [what, call] of calls) expect(call, what).toThrow("cuda: the backend was disposed");
    expect(standInCalls).toEqual([]);
    expect(backend.memory().patterns).toBe(0);
    backend.dispose(); // twice: nothing more to do
    expect(standInCalls).toEqual([]);
  });

  test("dispose releases everything even when a release fails, throws the failure once, and never frees twice", () => {
    const backend = new CudaBackend();
    const first = backend.allocate("float32", 4) as CudaBuffer;
    backend.allocate("float32", 4);
    backend.pattern(BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 4 }));
    const free = standInAddon.free;
    let failed = 0;
    standInAddon.free = ((handle: number) => {
      if (handle === first.handle) {
        failed++;
        throw new Error("device fault");
      }
      return free(handle as never);
    }) as typeof free;
    standInCalls.length = 0;
    try {
      let thrown: unknown;
      try {
        backend.dispose();
      } catch (error) {
        thrown = error;
      }
      expect(thrown).toBeInstanceOf(BackendError);
      expect((thrown as Error).message).toContain("1 release failed; the first: device fault");
      // The other buffer, the pattern and the cache were still released.
      expect(standInCalls.filter((name) => name === "free")).toHaveLength(1);
      expect(standInCalls).toContain("freePattern");
      expect(standInCalls).toContain("releaseCache");
      standInCalls.length = 0;
      backend.dispose(); // disposed: nothing freed twice
      expect(standInCalls).toEqual([]);
      expect(failed).toBe(1);
      expect(() => backend.allocate("float32", 4)).toThrow("cuda: the backend was disposed");
    } finally {
      standInAddon.free = free;
    }
  });

  test("an allocation whose poison fill fails is given back: the error goes on, nothing is counted or held", () => {
    const backend = new CudaBackend();
    const fillBits = vi.spyOn(standInAddon, "fillBits").mockImplementationOnce(() => {
      throw Object.assign(new Error("fillBits failed: an illegal memory access was encountered"), { code: "ERR_CUDA" });
    });
    try {
      backend.poisonAllocations = true;
      const before = backend.memory();
      standInCalls.length = 0;
      expect(() => backend.allocate("bfloat16", 8)).toThrow("an illegal memory access was encountered");
      // The fill (the spy, which the stand-in's call list does not see) ran between the two.
      expect(fillBits).toHaveBeenCalledTimes(1);
      expect([...standInCalls]).toEqual(["alloc", "free"]);
      const after = backend.memory();
      expect(after.bytesInUse).toBe(before.bytesInUse);
      expect(after.buffers).toBe(before.buffers);
    } finally {
      fillBits.mockRestore();
      backend.dispose();
    }
  });

  test("the setters name an argument of any kind in a ValueError, never a TypeError from writing the message", () => {
    const backend = new CudaBackend();
    try {
      const pattern = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 3 });
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const cases: [() => unknown, string][] = [
        [() => backend.setDenseProductMode(1n as never), "setDenseProductMode: mode must be one of auto, never, always, got 1"],
        [() => backend.setDenseSampledMode(cyclic as never), "setDenseSampledMode: mode must be one of auto, never, always, got object"],
        [() => backend.setDenseProductMode("Never" as never), 'setDenseProductMode: mode must be one of auto, never, always, got "Never"'],
        [() => backend.setMemoryLimit(Symbol("bytes") as never), "setMemoryLimit: expected a positive whole number of bytes or null, got Symbol(bytes)"],
        [() => backend.setMemoryLimit(10n as never), "setMemoryLimit: expected a positive whole number of bytes or null, got 10"],
        [() => backend.sampledPlan(pattern, Symbol("tokens") as never, "float16"), "sampledPlan: tokens must be a positive whole number, got Symbol(tokens)"],
        [() => backend.setAutotune("yes" as never), 'setAutotune: on must be a boolean, got "yes"'],
        [() => backend.allocate("float64" as never, 4), 'cuda: cannot allocate elements of dtype "float64"'],
        [() => backend.allocate(undefined as never, 4), "cuda: cannot allocate elements of dtype undefined"],
      ];
      const buffer = backend.allocate("float32", 2);
      cases.push(
        [() => backend.write(buffer, null as never), "cuda: write expects the float32 storage array of 2 elements, got null"],
        [() => backend.write(buffer, [1, 2] as never), "cuda: write expects the float32 storage array of 2 elements, got an array"],
        [() => backend.write(buffer, Int32Array.of(1, 2)), "cuda: write expects the float32 storage array of 2 elements, got Int32Array(2)"],
      );
      for (const [call, message] of cases) {
        expect(call).toThrow(ValueError);
        expect(call).toThrow(message);
      }
      expect(backend.setDenseProductMode("auto")).toBe("auto");
    } finally {
      backend.dispose();
    }
  });

  test("a switch in the environment other than 1 or 0 is a warning naming it, never read as the default in silence", () => {
    const saved = { autotune: process.env.BLOCKSPARSE_CUDA_AUTOTUNE, warmUp: process.env.BLOCKSPARSE_CUDA_WARMUP };
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    const setAutotune = vi.spyOn(standInAddon, "setAutotune");
    try {
      process.env.BLOCKSPARSE_CUDA_AUTOTUNE = "true";
      process.env.BLOCKSPARSE_CUDA_WARMUP = "false";
      const backend = new CudaBackend();
      backend.dispose();
      const warnings = warn.mock.calls.filter(([, options]) => (options as { code?: string } | undefined)?.code === "BLOCKSPARSE_CUDA_ENVIRONMENT");
      expect(warnings.map(([message]) => String(message))).toEqual([
        "BLOCKSPARSE_CUDA_AUTOTUNE must be 1 or 0, got 'true'; using the default (0)",
        "BLOCKSPARSE_CUDA_WARMUP must be 1 or 0, got 'false'; using the default (1)",
      ]);
      expect(setAutotune).not.toHaveBeenCalledWith(true); // the default: off (the warm-up turns it off and back)
      expect(backend.warmUpMs).not.toBeNull(); // the default: on
      // 1 and 0 (around spaces too) and empty say nothing.
      warn.mockClear();
      setAutotune.mockClear();
      process.env.BLOCKSPARSE_CUDA_AUTOTUNE = " 1 ";
      process.env.BLOCKSPARSE_CUDA_WARMUP = "0";
      const tuned = new CudaBackend();
      tuned.dispose();
      expect(warn).not.toHaveBeenCalled();
      expect(setAutotune.mock.calls[0]).toEqual([true]);
      expect(tuned.warmUpMs).toBeNull();
      expect(environmentSwitch("BLOCKSPARSE_ALLOW_TF32", false, "")).toBe(false);
      expect(environmentSwitch("BLOCKSPARSE_ALLOW_TF32", false, "yes")).toBe(false);
      expect(warn).toHaveBeenCalledTimes(1);
    } finally {
      setAutotune.mockRestore();
      warn.mockRestore();
      for (const [name, value] of [["BLOCKSPARSE_CUDA_AUTOTUNE", saved.autotune], ["BLOCKSPARSE_CUDA_WARMUP", saved.warmUp]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });

  const WRITE_EVENTS = ["exit", "SIGINT", "SIGTERM", "SIGHUP"] as const;
  /**
   * Runs `use` on a fresh backend in a temporary directory, then removes the exit and signal listeners it added and the
   * directory. `exitListeners(event)` lists the listeners added for `event` ("exit" unless named).
   */
  function withCacheDirectory(
    use: (backend: CudaBackend, dir: string, exitListeners: (event?: (typeof WRITE_EVENTS)[number]) => ((...args: unknown[]) => void)[]) => void,
  ): void {
    const backend = new CudaBackend();
    const dir = realpathSync(mkdtempSync(join(tmpdir(), "blocksparse-autotune-host-")));
    const cwd = process.cwd();
    // "exit" and the signals, through one signature (the overloads take one kind of event each).
    const listenersOf = process.listeners.bind(process) as (event: string) => ((...args: unknown[]) => void)[];
    const before = new Map(WRITE_EVENTS.map((event) => [event, listenersOf(event)]));
    const added = (event: (typeof WRITE_EVENTS)[number] = "exit") => listenersOf(event).filter((listener) => !before.get(event)?.includes(listener));
    try {
      use(backend, dir, added);
    } finally {
      process.chdir(cwd);
      for (const event of WRITE_EVENTS) for (const listener of added(event)) process.removeListener(event as NodeJS.Signals, listener);
      backend.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test("BLOCKSPARSE_CUDA_AUTOTUNE_CACHE is written when a signal ends the process, which then ends as the signal's default says", () => {
    withCacheDirectory((backend, dir, listeners) => {
      const file = join(dir, "cache.json");
      backend.useAutotuneCache(file);
      expect(listeners("exit")).toHaveLength(1);
      for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) expect(listeners(signal), signal).toHaveLength(1);
      const kill = vi.spyOn(process, "kill").mockImplementation(() => true);
      try {
        // With no listener of the program's own, the signal is raised again after the write (its default: the end).
        const [onSigint] = listeners("SIGINT");
        onSigint("SIGINT");
        expect(readAutotuneCache(file).device).toEqual({ name: "stand-in", computeCapability: "9.0" });
        expect(kill.mock.calls).toEqual([[process.pid, "SIGINT"]]);
        // The write happens once: the exit listener and the other signals' are gone.
        for (const event of WRITE_EVENTS) expect(listeners(event), event).toHaveLength(0);
        // With a listener of the program's own for the signal, that listener decides: nothing is raised.
        rmSync(file);
        kill.mockClear();
        backend.useAutotuneCache(file);
        const own = () => {};
        process.on("SIGTERM", own);
        try {
          const [onSigterm] = listeners("SIGTERM").filter((listener) => listener !== own);
          onSigterm("SIGTERM");
          expect(existsSync(file)).toBe(true);
          expect(kill).not.toHaveBeenCalled();
        } finally {
          process.removeListener("SIGTERM", own);
        }
      } finally {
        kill.mockRestore();
      }
    });
  });

  test("BLOCKSPARSE_CUDA_AUTOTUNE_CACHE naming a file from another GPU is a warning, not left out in silence", () => {
    withCacheDirectory((backend, dir) => {
      const file = join(dir, "cache.json");
      writeFileSync(file, serializeAutotuneCache({ name: "NVIDIA A100-SXM4-80GB", computeCapability: "8.0" }, []));
      const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
      try {
        backend.useAutotuneCache(file);
        expect(warn.mock.calls).toEqual([
          [
            `autotune cache ${file}: measured on another kind of GPU than this stand-in (compute capability 9.0); tuning from scratch, and the file is rewritten with this GPU's choices at exit`,
            { code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE" },
          ],
        ]);
        // A file of this GPU says nothing.
        warn.mockClear();
        writeFileSync(file, serializeAutotuneCache(STAND_IN_DEVICE, []));
        backend.useAutotuneCache(file);
        expect(warn).not.toHaveBeenCalled();
      } finally {
        warn.mockRestore();
      }
    });
  });

  test("BLOCKSPARSE_CUDA_AUTOTUNE_CACHE as a relative path is written at exit where it was read, after a change of directory", () => {
    withCacheDirectory((backend, dir, exitListeners) => {
      mkdirSync(join(dir, "run"));
      mkdirSync(join(dir, "elsewhere"));
      process.chdir(join(dir, "run"));
      backend.useAutotuneCache("cache.json");
      process.chdir(join(dir, "elsewhere"));
      const [writeAtExit] = exitListeners();
      writeAtExit();
      expect(existsSync(join(dir, "elsewhere", "cache.json"))).toBe(false);
      expect(readAutotuneCache(join(dir, "run", "cache.json")).device).toEqual({ name: "stand-in", computeCapability: "9.0" });
    });
  });

  /** A choice as the addon reports it, for a shape of `m` tokens (bsrLinear, or bsrLinearActivation's with "activation"). */
  function tuned(m: number, variant: number, epilogue: AutotuneRecord["epilogue"] = "none"): AutotuneRecord {
    return {
      product: "bsrLinear",
      dtype: "bfloat16",
      blockShape: [64, 64],
      m,
      rows: 1024,
      cols: 1024,
      nnzBlocks: 64,
      bias: false,
      epilogue,
      route: `wgmma variant ${variant}`,
      choice: { dense: false, path: "wgmma", variant, splits: 0 },
      timings: [{ route: `wgmma variant ${variant}`, ms: 0.01 }],
    };
  }

  test("loadAutotune hands each choice to the addon with its product, route and fused epilogue as the addon numbers them", () => {
    withCacheDirectory((backend, dir) => {
      const file = join(dir, "cache.json");
      const backward: AutotuneRecord = { ...tuned(4096, 6, "activationBackward"), product: "bsrMatmul", choice: { dense: true, path: "auto", variant: -1, splits: 0 } };
      writeFileSync(file, serializeAutotuneCache(STAND_IN_DEVICE, [tuned(4096, 14), tuned(4096, 6, "activation"), backward]));
      const imported = vi.spyOn(standInAddon, "importAutotune").mockReturnValue(true);
      try {
        expect(backend.loadAutotune(file)).toEqual({ imported: 3, records: 3, sameDevice: true });
        // product, dtype code, block, m, rows, cols, nnzBlocks, bias, dense, path, variant + 1, splits, epilogue
        const calls = imported.mock.calls.map((args) => [args[0], ...args.slice(9)]);
        expect(calls).toEqual([
          [0, false, 2, 15, 0, 0],
          [0, false, 2, 7, 0, 1],
          [1, true, 0, 0, 0, 2],
        ]);
      } finally {
        imported.mockRestore();
      }
    });
  });

  test("loadAutotune refuses a file holding a record no call could use, importing none of it", () => {
    withCacheDirectory((backend, dir) => {
      const file = join(dir, "cache.json");
      const decodedDx: AutotuneRecord = { ...tuned(8, 0), product: "bsrMatmul", choice: { dense: false, path: "decode", variant: 0, splits: 0 } };
      writeFileSync(file, serializeAutotuneCache(STAND_IN_DEVICE, [tuned(4096, 14), decodedDx]));
      const imported = vi.spyOn(standInAddon, "importAutotune").mockReturnValue(true);
      try {
        expect(() => backend.loadAutotune(file)).toThrow(/cache\.json: records\.1\.choice\.path: the decoding path runs bsrLinear .*not bsrMatmul/);
        expect(imported).not.toHaveBeenCalled();
      } finally {
        imported.mockRestore();
      }
    });
  });

  test("BLOCKSPARSE_CUDA_AUTOTUNE_CACHE whose lock another writer holds past the wait: written at exit all the same, with a warning", () => {
    withCacheDirectory((backend, dir, exitListeners) => {
      const file = join(dir, "cache.json");
      backend.useAutotuneCache(file);
      writeFileSync(`${file}.lock`, "a writer that hangs\n");
      const records = vi.spyOn(standInAddon, "autotuneRecords").mockReturnValue([tuned(4096, 14)]);
      const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
      try {
        const start = Date.now();
        for (const listener of exitListeners()) listener();
        const waited = Date.now() - start;
        expect(waited).toBeGreaterThanOrEqual(AUTOTUNE_LOCK_WAIT_MS);
        expect(waited).toBeLessThan(AUTOTUNE_LOCK_WAIT_MS + 1000);
        expect(readAutotuneCache(file).records.map((r) => r.m)).toEqual([4096]);
        expect(warn.mock.calls).toEqual([
          [
            `autotune cache ${file}: written without its lock (another writer held ${file}.lock for more than 2 s); choices another process wrote at the same moment may be lost`,
            { code: "BLOCKSPARSE_CUDA_AUTOTUNE_CACHE" },
          ],
        ]);
        // The lock is its owner's: left in place.
        expect(readFileSync(`${file}.lock`, "utf8")).toBe("a writer that hangs\n");
      } finally {
        warn.mockRestore();
        records.mockRestore();
      }
    });
  });

  test("BLOCKSPARSE_CUDA_AUTOTUNE_CACHE naming a file that is not a cache of this version leaves it as it is at exit", () => {
    withCacheDirectory((backend, dir, exitListeners) => {
      const records = vi.spyOn(standInAddon, "autotuneRecords").mockReturnValue([tuned(4096, 14)]);
      const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
      try {
        const newer = JSON.stringify({ ...JSON.parse(serializeAutotuneCache(STAND_IN_DEVICE, [])), version: AUTOTUNE_CACHE_VERSION + 1, layout: "newer" });
        const contents: [string, string][] = [
          ["weights.bin", "not JSON: another program's data\n"],
          ["config.json", `${JSON.stringify({ format: "someone-else", version: 1 })}\n`],
          ["newer.json", newer],
        ];
        for (const [name, text] of contents) {
          const file = join(dir, name);
          writeFileSync(file, text);
          warn.mockClear();
          backend.useAutotuneCache(file);
          expect(String(warn.mock.calls[0]?.[0])).toContain("the file is left as it is");
        }
        for (const listener of exitListeners()) listener();
        for (const [name, text] of contents) expect(readFileSync(join(dir, name), "utf8"), name).toBe(text);
        // A cache of this format and version with a bad record is this package's own: rewritten at exit.
        const damaged = join(dir, "damaged.json");
        const valid = JSON.parse(serializeAutotuneCache(STAND_IN_DEVICE, [tuned(8, 1)]));
        writeFileSync(damaged, JSON.stringify({ ...valid, records: [{ ...valid.records[0], m: -8 }] }));
        warn.mockClear();
        backend.useAutotuneCache(damaged);
        expect(String(warn.mock.calls[0]?.[0])).toMatch(/records\.0\.m: .*rewritten with this process's choices at exit/);
        for (const listener of exitListeners()) listener();
        expect(readAutotuneCache(damaged).records.map((r) => r.m)).toEqual([4096]);
        expect(readAutotuneCache(damaged).format).toBe(AUTOTUNE_CACHE_FORMAT);
        // An earlier version's cache (its timings host-bound) is this package's too: not loaded, rewritten at exit.
        const outdated = join(dir, "outdated.json");
        writeFileSync(outdated, JSON.stringify({ ...JSON.parse(serializeAutotuneCache(STAND_IN_DEVICE, [tuned(8, 1)])), version: 1 }));
        const imported = vi.spyOn(standInAddon, "importAutotune");
        warn.mockClear();
        backend.useAutotuneCache(outdated);
        expect(imported).not.toHaveBeenCalled();
        imported.mockRestore();
        expect(String(warn.mock.calls[0]?.[0])).toMatch(/outdated\.json: version 1, written by an earlier version.*rewritten with this process's choices at exit/);
        for (const listener of exitListeners()) listener();
        expect(readAutotuneCache(outdated).version).toBe(AUTOTUNE_CACHE_VERSION);
        expect(readAutotuneCache(outdated).records.map((r) => r.m)).toEqual([4096]);
      } finally {
        warn.mockRestore();
        records.mockRestore();
      }
    });
  });

  test("BLOCKSPARSE_CUDA_AUTOTUNE_CACHE shared by two processes: the exit write keeps the other's choices for shapes this one lacks", () => {
    withCacheDirectory((backend, dir, exitListeners) => {
      const file = join(dir, "shared.json");
      backend.useAutotuneCache(file); // absent at start
      // Meanwhile another process sharing the file wrote its choices: one shape this process also tuned, one it did not,
      // and the same shape's product with its activation fused (a key of its own).
      writeFileSync(file, serializeAutotuneCache(STAND_IN_DEVICE, [tuned(2048, 14), tuned(512, 7), tuned(2048, 6, "activation")]));
      const records = vi.spyOn(standInAddon, "autotuneRecords").mockReturnValue([tuned(2048, 0)]);
      try {
        for (const listener of exitListeners()) listener();
      } finally {
        records.mockRestore();
      }
      const written = readAutotuneCache(file).records.map((r) => [r.m, r.choice.variant, r.epilogue]);
      expect(written).toEqual([
        [2048, 0, "none"], // this process's own choice wins for a shape both tuned
        [512, 7, "none"],
        [2048, 6, "activation"],
      ]);
      // Another GPU's choices are not kept beside this one's.
      writeFileSync(file, serializeAutotuneCache({ name: "NVIDIA A100-SXM4-80GB", computeCapability: "8.0" }, [tuned(512, 7)]));
      for (const listener of exitListeners()) listener();
      expect(readAutotuneCache(file).records).toEqual([]);
      expect(readAutotuneCache(file).device.name).toBe("stand-in");
    });
  });
});
