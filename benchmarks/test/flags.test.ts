import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { checkKeepsABlock, checkPythonImports, type CliSpec, densities, describeFailure, FlagError, flagItems, outputDirectory, parseFlags, positiveInteger, positiveIntegers, positiveNumbers } from "../src/flags";
import { cudaAvailability } from "@blocksparse/backend-cuda";
import { startBackend } from "../src/start_backend";

describe("flag lists", () => {
  it("reject an empty item or an empty list, naming the flag", () => {
    expect(() => flagItems("0.5,,0.25", "densities")).toThrow(/--densities: expected a comma-separated list with no empty item, got "0.5,,0.25"/);
    expect(() => flagItems("", "suites")).toThrow(FlagError);
    expect(() => positiveNumbers("1,", "batch")).toThrow(/--batch: expected a comma-separated list with no empty item/);
  });

  it("densities accept (0, 1] and reject 0, above 1 and non-numbers", () => {
    expect(densities("0.5, 0.25,1", "densities")).toEqual([0.5, 0.25, 1]);
    for (const bad of ["0", "1.5", "abc", "-0.5"]) expect(() => densities(bad, "densities")).toThrow(`--densities: "${bad}" is not a density in (0, 1]`);
  });

  it("positiveIntegers rejects fractions, zero and non-numbers", () => {
    expect(positiveIntegers("1,8,64", "batch")).toEqual([1, 8, 64]);
    for (const bad of ["1.5", "0", "abc"]) expect(() => positiveIntegers(bad, "context")).toThrow(`--context: "${bad}" is not a positive integer`);
  });

  it("numbers are decimal: hex, binary, octal and Infinity are refused, not read as Number() reads them", () => {
    expect(positiveIntegers("16,1e3", "tokens")).toEqual([16, 1000]);
    expect(positiveNumbers(".5,2.5", "batch")).toEqual([0.5, 2.5]);
    for (const bad of ["0x10", "0b11", "0o7"]) expect(() => positiveIntegers(bad, "tokens")).toThrow(`--tokens: "${bad}" is not a positive integer`);
    expect(() => positiveNumbers("Infinity", "batch")).toThrow('--batch: "Infinity" is not a positive number');
    expect(() => densities("0x1", "densities")).toThrow('--densities: "0x1" is not a density in (0, 1]');
  });

  it("positiveInteger takes one value: a list is an error naming the flag, not its first item", () => {
    expect(positiveInteger("512", "context")).toBe(512);
    expect(() => positiveInteger("512,1024", "context")).toThrow('--context: expected one positive integer, got the list "512,1024"');
    expect(() => positiveInteger("0", "iterations")).toThrow('--iterations: "0" is not a positive integer');
  });

  it("checkKeepsABlock refuses a density that keeps no block (nn would keep one: a denser layer than the table says)", () => {
    expect(() => checkKeepsABlock(0.1, 2, 2, "32x32", "a 64x64 weight")).toThrow(new FlagError("--densities: 0.1 keeps none of the 2x2 blocks of 32x32 in a 64x64 weight; one block is density 0.25: give at least that, or smaller blocks"));
    expect(() => checkKeepsABlock(0.125, 2, 2, "32x32", "a 64x64 weight")).not.toThrow();
    // Kept, but rounded far from the density asked for: a note says which density runs.
    const notes: string[] = [];
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((text) => notes.push(String(text)) > 0);
    try {
      checkKeepsABlock(0.1, 4, 2, "32x32", "a 128x64 weight");
      checkKeepsABlock(0.25, 4, 2, "32x32", "a 128x64 weight");
    } finally {
      spy.mockRestore();
    }
    expect(notes).toEqual(["note: --densities 0.1 keeps 1 of the 4x2 blocks of 32x32 in a 128x64 weight: density 0.125 runs\n"]);
  });

  it("checkPythonImports refuses --torch up front where python3 cannot import what the script needs", () => {
    expect(() => checkPythonImports("torch", ["blocksparse_no_such_module"])).toThrow(
      /^--torch: python3 cannot import blocksparse_no_such_module \(ModuleNotFoundError: No module named 'blocksparse_no_such_module'\); install blocksparse_no_such_module for python3, or leave out --torch$/,
    );
    expect(() => checkPythonImports("torch", ["json"], "blocksparse-no-such-python")).toThrow(/^--torch: cannot run blocksparse-no-such-python \(.*ENOENT/);
    expect(() => checkPythonImports("torch", ["json"])).not.toThrow();
  });

  it("refuse a value given twice in one list, as written or as the same number", () => {
    expect(() => flagItems("ffn,block,ffn", "models")).toThrow('--models: "ffn" repeats "ffn" in "ffn,block,ffn"; give each value once');
    expect(() => densities("0.5,0.25,.5", "densities")).toThrow('--densities: ".5" repeats "0.5" in "0.5,0.25,.5"; give each value once');
    expect(() => positiveIntegers("32,64,32", "blocks")).toThrow(/--blocks: "32" repeats "32"/);
  });
});

describe("describeFailure", () => {
  it("prints a flag's error as its message alone, anything else with its stack", () => {
    expect(describeFailure(new FlagError("--heads: bad"))).toBe("--heads: bad");
    const unknown = Object.assign(new TypeError("Unknown option '--help'"), { code: "ERR_PARSE_ARGS_UNKNOWN_OPTION" });
    expect(describeFailure(unknown)).toBe("Unknown option '--help'");
    expect(describeFailure(new Error("kernel failed"))).toMatch(/^Error: kernel failed\n\s+at /);
  });
});

describe("parseFlags", () => {
  const cli = {
    usage: "tsx src/x.ts [flags]",
    summary: "What x does.",
    flags: {
      tokens: { type: "string", default: "16", description: "tokens" },
      quick: { type: "boolean", default: false, description: "fewer steps" },
      module: { type: "string", multiple: true, description: "a module" },
    },
  } satisfies CliSpec;

  it("refuses a one-value flag given twice with different values, instead of keeping the last silently", () => {
    expect(() => parseFlags(cli, ["--tokens", "4", "--tokens=8"])).toThrow(new FlagError('--tokens: given twice ("4" and "8"); give it once'));
  });

  it("accepts a repeat that changes nothing, a repeated switch and a repeatable flag", () => {
    expect(parseFlags(cli, ["--tokens", "4", "--tokens", "4", "--quick", "--quick", "--module", "a", "--module", "b"]).values).toEqual({ tokens: "4", quick: true, module: ["a", "b"] });
  });

  it("skips the literal -- that `pnpm bench -- --flag` hands the script first", () => {
    expect(parseFlags(cli, ["--", "--tokens", "4", "--quick"]).values).toEqual({ tokens: "4", quick: true });
  });
});

describe("outputDirectory", () => {
  it("makes the directory with its parents, and names --out when the path is or lies under a file", () => {
    const root = mkdtempSync(join(tmpdir(), "bench-out-"));
    try {
      expect(statSync(outputDirectory(join(root, "a", "b"))).isDirectory()).toBe(true);
      const file = join(root, "file");
      writeFileSync(file, "");
      for (const path of [file, join(file, "below")]) {
        expect(() => outputDirectory(path)).toThrow(new FlagError(`--out: cannot make the output directory "${path}": it or a folder above it is a file`));
      }
      expect(() => outputDirectory(file, "dir")).toThrow(/^--dir: /);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  // node's recursive mkdirSync retried forever there (mkdir answers ENOENT under /proc): the CLI hung.
  it.runIf(existsSync("/proc/self"))("fails at once where mkdir cannot make a folder under one that exists (/proc)", () => {
    expect(() => outputDirectory("/proc/bench-out/run")).toThrow(/^--out: cannot make the output directory "\/proc\/bench-out\/run": ENOENT/);
  });
});

describe("startBackend", () => {
  it("refuses a backend name nobody registered with a FlagError naming --backend, not core's error from setBackend", async () => {
    await expect(startBackend("gpu")).rejects.toThrow(new FlagError('--backend: unknown backend "gpu", expected cuda, cpu, js or auto'));
  });

  // The CLIs default to cuda: on a machine without a GPU the message says which backends would run.
  it.runIf(!cudaAvailability().available)("refuses cuda where it is unavailable, naming the backends that run without a GPU", async () => {
    await expect(startBackend("cuda")).rejects.toThrow(/^--backend cuda: CUDA is unavailable: .*; without a GPU, --backend auto picks the native cpu backend \(or js\), --backend cpu or js names one$/s);
  });
});
