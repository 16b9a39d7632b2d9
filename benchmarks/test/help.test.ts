import { describe, expect, it } from "vitest";
import { type CliSpec, parseFlags, usageText } from "../src/flags";
import { runCli } from "./run_cli";

/** Every flag each CLI parses: --help must list exactly these (and -h, --help). */
const FLAGS: Record<string, string[]> = {
  "cli.ts": ["quick", "backend", "backend-module", "suites", "dtypes", "out", "update-results"],
  "ffn.ts": [
    "backend", "models", "widths", "tokens", "blocks", "densities", "dtype", "context", "heads", "torch", "profile", "quick",
    "dense-sampled", "dense-products", "autotune", "only", "graph", "graph-eager-optimizer", "out",
  ],
  "compare.ts": ["out", "backend", "small", "shape", "dtypes", "blocks", "densities"],
  "decode_graph.ts": ["backend", "model", "width", "hidden", "layers", "tokens", "blocks", "densities", "dtype", "iterations", "torch", "out"],
  "eager_step.ts": ["backend", "widths", "tokens", "block", "density", "steps", "warmup", "stand-in", "phases", "sync-each"],
  "generate.ts": ["backend", "sizes", "batch", "prompt", "new", "densities", "modes", "dtype", "repeats", "torch", "out"],
  "overhead.ts": ["backend", "dtype", "out", "child", "torch"],
  "attention.ts": ["backend", "shapes", "causal", "dtype", "iterations", "paths", "torch", "out"],
  "gpt2_train.ts": ["backend", "sizes", "batch", "context", "vocab", "densities", "blocks", "dtype", "graph", "torch", "torch-compile", "profile", "quick", "out"],
  "ddp_nccl.ts": [],
  "linear_shapes.ts": ["backend", "rows", "features", "widths", "dtype", "bias", "iterations", "torch", "out"],
  "cpu_compare.ts": ["repeats", "rounds", "out"],
  "cpu_addon.ts": ["repeats", "threads", "only"],
  "ffn_chart.ts": ["out"],
  "ncu_steps_cli.ts": ["steps"],
};

/** The flags a usage text lists, one per line that starts with one. */
const listedFlags = (usage: string) => [...usage.matchAll(/^ {2}(?:-h, )?--([\w-]+)/gm)].map((match) => match[1]);

describe.concurrent("--help of every benchmark CLI", () => {
  for (const [script, flags] of Object.entries(FLAGS)) {
    it(`${script} --help lists its flags and exits 0 before starting a backend`, async () => {
      const { code, stdout, stderr } = await runCli(script, ["--help"]);
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expect(stdout).toMatch(/^usage: /);
      expect(listedFlags(stdout).sort()).toEqual([...flags, "help"].sort());
      for (const line of stdout.split("\n").filter((l) => /^ {2}--/.test(l))) expect(line).toMatch(/^ {2}--\S+(?: VALUE)?(?: \(repeatable\))? {2,}\S/);
    }, 90_000);
  }

  it("-h is --help, and an unknown flag is still an error naming it", async () => {
    const short = await runCli("attention.ts", ["-h"]);
    expect(short.code).toBe(0);
    expect(short.stdout).toContain("--shapes VALUE");
    expect(short.stdout).toContain("(default: 16x16x512x64,4x16x2048x64,4x8x1024x128)");
    const unknown = await runCli("attention.ts", ["--bogus"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("Unknown option '--bogus'");
  }, 90_000);
});

describe("usageText", () => {
  const cli = {
    usage: "tsx src/x.ts [flags]",
    summary: "What x does.",
    positionals: "FILE: a file",
    flags: {
      out: { type: "string", description: "where to write", defaultText: "results/tmp" },
      iterations: { type: "string", default: "50", description: "timed calls" },
      torch: { type: "boolean", default: false, description: "also time PyTorch" },
      module: { type: "string", multiple: true, description: "a module to import" },
    },
  } satisfies CliSpec;

  it("prints the usage line, the summary, positionals, then one aligned line per flag with its default", () => {
    expect(usageText(cli)).toBe(
      [
        "usage: tsx src/x.ts [flags]",
        "What x does.",
        "FILE: a file",
        "",
        "flags (a switch is off unless given):",
        "  --out VALUE                  where to write (default: results/tmp)",
        "  --iterations VALUE           timed calls (default: 50)",
        "  --torch                      also time PyTorch",
        "  --module VALUE (repeatable)  a module to import",
        "  -h, --help                   print this help and exit",
        "",
      ].join("\n"),
    );
  });

  it("parseFlags parses with the same table: defaults, repeats, positionals, unknown flags refused", () => {
    const { values, positionals } = parseFlags(cli, ["--module", "a", "--module", "b", "--torch", "file.txt"]);
    expect(values).toEqual({ iterations: "50", torch: true, module: ["a", "b"] });
    expect(positionals).toEqual(["file.txt"]);
    expect(() => parseFlags(cli, ["--bogus"])).toThrow(expect.objectContaining({ code: "ERR_PARSE_ARGS_UNKNOWN_OPTION" }));
  });
});
