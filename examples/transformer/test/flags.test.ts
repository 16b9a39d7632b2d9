import { parseArgs } from "node:util";
import { describe, expect, it } from "vitest";
import { joinNegativeValues, withFlagHelp } from "../../shared/flags";

// The examples' shared flag parsing (examples/shared/flags.ts), tested here once for mnist, transformer and distil.
const FLAGS = { lr: { type: "string" }, density: { type: "string", multiple: true }, help: { type: "boolean", short: "h" } } as const;
const parse = (...argv: string[]) => withFlagHelp(FLAGS, argv, (args) => parseArgs({ args, options: FLAGS, strict: true, tokens: true }).values);

describe("the examples' flag parsing", () => {
  it("reads a negative number after a flag as its value, as --flag=-1 (parseArgs called it ambiguous)", () => {
    expect(parse("--lr", "-0.5")).toEqual({ lr: "-0.5" });
    expect(parse("--density", "-.5", "--density", "-1e3")).toEqual({ density: ["-.5", "-1e3"] });
  });

  it("joins a negative number only to the flag right before it, never after a flag's value, a boolean or --", () => {
    expect(joinNegativeValues(["--lr", "2", "-1"], FLAGS)).toEqual(["--lr", "2", "-1"]);
    expect(joinNegativeValues(["--help", "-1"], FLAGS)).toEqual(["--help", "-1"]);
    expect(joinNegativeValues(["--lr=-1", "--", "--lr", "-2"], FLAGS)).toEqual(["--lr=-1", "--", "--lr", "-2"]);
    expect(joinNegativeValues(["--unknown", "-2"], FLAGS)).toEqual(["--unknown", "-2"]);
  });

  it("says how to write a value a flag is missing, naming the flag", () => {
    expect(() => parse("--lr", "--help")).toThrow(new TypeError("--lr: missing its value ('--help' after it is read as a flag); write --lr VALUE, or --lr=VALUE for a value starting with a dash"));
    expect(() => parse("--lr", "-x")).toThrow(/^--lr: missing its value \('-x' after it is read as a flag\)/);
    expect(() => parse("--lr")).toThrow(new TypeError("--lr: missing its value; write --lr VALUE, or --lr=VALUE for a value starting with a dash"));
    expect(() => parse("--help=1")).toThrow(new TypeError("--help takes no value; write --help alone"));
  });

  it("names the flag an unknown one is closest to", () => {
    expect(() => parse("--l", "1")).toThrow(new TypeError("Unknown option '--l' (did you mean --lr?); --help lists the flags"));
    expect(() => parse("--help", "-1")).toThrow(new TypeError("Unknown option '-1'; --help lists the flags"));
  });
});
