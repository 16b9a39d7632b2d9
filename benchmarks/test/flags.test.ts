import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type CliSpec, densities, describeFailure, FlagError, flagItems, outputDirectory, parseFlags, positiveInteger, positiveIntegers, positiveNumbers } from "../src/flags";
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
});

describe("startBackend", () => {
  it("refuses a backend name nobody registered with a FlagError naming --backend, not core's error from setBackend", async () => {
    await expect(startBackend("gpu")).rejects.toThrow(new FlagError('--backend: unknown backend "gpu", expected cuda, cpu, js or auto'));
  });
});
