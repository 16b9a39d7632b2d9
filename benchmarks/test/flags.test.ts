import { describe, expect, it } from "vitest";
import { describeFailure, densities, FlagError, flagItems, positiveInteger, positiveIntegers, positiveNumbers } from "../src/flags";

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
