import { describe, expect, it } from "vitest";
import { ATTENTION_CLI } from "../src/attention_flags";
import { COMPARE_CLI } from "../src/compare_flags";
import { CPU_ADDON_CLI } from "../src/cpu_addon_flags";
import { CPU_COMPARE_CLI } from "../src/cpu_compare_flags";
import { DECODE_GRAPH_CLI } from "../src/decode_graph_flags";
import { EAGER_STEP_CLI } from "../src/eager_step_flags";
import { FFN_CLI } from "../src/ffn_flags";
import { type CliSpec, parseFlags, usageText } from "../src/flags";
import { GENERATE_CLI } from "../src/generate_flags";
import { GPT2_TRAIN_CLI } from "../src/gpt2_train_flags";
import { NCU_STEPS_CLI } from "../src/ncu_steps_flags";
import { OVERHEAD_CLI } from "../src/overhead_flags";
import { TC_AUDIT_CLI } from "../src/tc_audit_flags";
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
  "eager_step.ts": ["backend", "widths", "tokens", "block", "density", "steps", "warmup", "stand-in", "phases", "sync-each", "native-times"],
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
  "tc_audit_cli.ts": ["within"],
};

/** The flags a usage text lists, one per line that starts with one. */
const listedFlags = (usage: string) => [...usage.matchAll(/^ {2}(?:-h, )?--([\w-]+)/gm)].map((match) => match[1]);

/** The tables the scripts parse with, importable without running them: their --help is checked in-process. */
const SPECS: Record<string, CliSpec> = {
  "attention.ts": ATTENTION_CLI,
  "compare.ts": COMPARE_CLI,
  "cpu_addon.ts": CPU_ADDON_CLI,
  "cpu_compare.ts": CPU_COMPARE_CLI,
  "decode_graph.ts": DECODE_GRAPH_CLI,
  "eager_step.ts": EAGER_STEP_CLI,
  "ffn.ts": FFN_CLI,
  "generate.ts": GENERATE_CLI,
  "gpt2_train.ts": GPT2_TRAIN_CLI,
  "ncu_steps_cli.ts": NCU_STEPS_CLI,
  "overhead.ts": OVERHEAD_CLI,
  "tc_audit_cli.ts": TC_AUDIT_CLI,
};

function expectUsage(usage: string, flags: string[]): void {
  expect(usage).toMatch(/^usage: /);
  expect(listedFlags(usage).sort()).toEqual([...flags, "help"].sort());
  for (const line of usage.split("\n").filter((l) => /^ {2}--/.test(l))) expect(line).toMatch(/^ {2}--\S+(?: VALUE)?(?: \(repeatable\))? {2,}\S/);
}

describe("--help of every benchmark CLI", () => {
  for (const [script, spec] of Object.entries(SPECS)) {
    it(`${script}'s flag table lists its flags, each with a line`, () => expectUsage(usageText(spec), FLAGS[script]));
  }

  it("attention.ts's usage shows each default", () => {
    expect(usageText(ATTENTION_CLI)).toContain("--shapes VALUE");
    expect(usageText(ATTENTION_CLI)).toContain("(default: 16x16x512x64,4x16x2048x64,4x8x1024x128)");
  });
});

// The scripts whose table is not importable, and whose command line no other test starts: --help in a process.
describe.concurrent("--help of the other benchmark CLIs, as run", () => {
  for (const script of Object.keys(FLAGS).filter((name) => !(name in SPECS))) {
    it(`${script} --help lists its flags and exits 0 before starting a backend`, async () => {
      const { code, stdout, stderr } = await runCli(script, ["--help"]);
      expect(stderr).toBe("");
      expect(code).toBe(0);
      expectUsage(stdout, FLAGS[script]);
    }, 90_000);
  }
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
