import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";
import { engine } from "@blocksparse/core";
import { afterAll, describe, expect, it } from "vitest";
import { runNode } from "../../../packages/distributed/test/helpers";
import { refusalOf } from "../../shared/cli_testing";
import { parseOptions } from "../src/options";

const folder = mkdtempSync(join(tmpdir(), "blocksparse-distil-cli-"));
afterAll(() => rmSync(folder, { recursive: true, force: true }));

/** `tsx src/<script> <args>` in this example's folder, workspace packages from their sources. */
const tsx = (script: string, ...args: string[]) => runNode(["--import", "tsx", join("src", script), ...args], { cwd: resolve(import.meta.dirname, "..") });

// The flag checks main.ts runs first, called in-process: the command line itself is tested below.
describe("main.ts's flags", () => {
  it.each([
    [["--lr", "0"], /--lr: expected a positive number, got '0'/],
    [["--distil-density", "2"], /--distil-density: expected a density in \(0, 1\], got '2'/],
    [["--seed", "1.5"], /--seed: expected an integer from -4294967295 to 4294967295, got '1.5'/],
    [["--seed", "abc"], /--seed: expected an integer from -4294967295 to 4294967295, got 'abc'/],
    // The validation windows take seed + 7919: every run failed with "seed: expected a safe integer".
    [["--seed", "9007199254740991"], /--seed: expected an integer from -4294967295 to 4294967295, got '9007199254740991'/],
    // Static and RigL trained twice at 0.25, four rows for one density.
    [["--density", "0.25", "--density", "0.1,0.25"], /--density: '0.25' repeats '0.25'; give each value once/],
    [["--lr=-1"], /--lr: expected a positive number, got '-1'/],
    // A second --density adds to the first rather than dropping it (the 1.5 went unchecked and unused).
    [["--density", "1.5", "--density", "0.5", "--lr", "0"], /--density: expected numbers in \(0, 1\], got '1.5,0.5'/],
    // An Object.prototype name passed the check and every run then failed on an undefined width.
    [["--size", "constructor"], /--size: expected one of tiny, small, gpt2, got 'constructor'/],
    [["--size", "toString"], /--size: expected one of tiny, small, gpt2, got 'toString'/],
    [["--steps", "Auto"], /--steps: expected a positive integer or auto, got 'Auto'/],
    // Number() read these as 2, 1 and 1: only decimal is a number here.
    [["--steps", "0x2"], /--steps: expected a positive integer or auto, got '0x2'/],
    [["--density", "0b1"], /--density: expected numbers in \(0, 1\], got '0b1'/],
    [["--lr", "0o1"], /--lr: expected a positive number, got '0o1'/],
    // parseArgs keeps the last value of a flag given twice; the first was dropped without a word.
    [["--steps", "1", "--steps", "2"], /--steps: given twice \('1' and '2'\); give it once/],
    [["--mode=sparse", "--mode", "distil"], /--mode: given twice \('sparse' and 'distil'\); give it once/],
    // Number.isInteger(1e300) is true: a thousand-digit count of validation windows or recovery steps ran without end.
    [["--eval-batches", "1e300"], /--eval-batches: expected a positive integer, got '1e300'/],
    [["--recovery-steps", "1e20"], /--recovery-steps: expected a positive integer, got '1e20'/],
    [["--backend="], /--backend: expected a backend's name \(cuda, cpu or js\), got ''/],
    // The other experiment's flags ran without a word: --density 0.1 under --mode distil recovered a model at 0.5.
    [["--mode", "distil", "--density", "0.1"], /--density: used only by --mode sparse or all \(--mode is distil\); leave --density out, or use --mode all/],
    [["--mode", "distil", "--rigl-every", "5"], /--rigl-every: used only by --mode sparse or all \(--mode is distil\); leave --rigl-every out, or use --mode all/],
    [["--mode", "sparse", "--distil-density", "0.25"], /--distil-density: used only by --mode distil or all \(--mode is sparse\); leave --distil-density out, or use --mode all/],
    [["--mode", "sparse", "--recovery-lr", "3e-4"], /--recovery-lr: used only by --mode distil or all \(--mode is sparse\); leave --recovery-lr out, or use --mode all/],
  ])("rejects %j naming the flag and what it accepts, before a backend starts or a line is printed", (args, message) => {
    expect(refusalOf(engine, () => parseOptions(args))).toMatch(message);
  });

  it("names the flag a misspelled one is closest to", () => {
    expect(refusalOf(engine, () => parseOptions(["--step", "2"]))).toMatch(/Unknown option '--step' \(did you mean --steps\?\); --help lists the flags/);
  });
});

// Each case starts a process (about a second, more on a loaded machine).
describe("main.ts's command line", { timeout: 30_000 }, () => {
  it("refuses a bad flag with its message alone, one line on stderr, exit 1, before a backend starts or a line is printed", async () => {
    const result = await tsx("main.ts", "--lr", "0");
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("RangeError: --lr: expected a positive number, got '0'\n");
    expect(result.stdout).toBe("");
  });

  it("prints its usage for --help and exits 0", async () => {
    const result = await tsx("main.ts", "--help");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^A GPT-2 language model on Moby Dick \(BPE tokens\)[\s\S]*\n {2}--seed N /);
    expect(result.stderr).toBe("");
  });

  it("a text too short for the context fails once, naming the flags, before any model trains", async () => {
    const result = await tsx("main.ts", "--backend", "js", "--max-chars", "500");
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/--context 32 with --max-chars 500: the validation split has 26 tokens, too few for windows of 33; use a shorter --context or a larger --max-chars/);
    expect(result.stdout).not.toMatch(/dense/);
  });

  // nn keeps one block of a layer whatever the density: the tiny size's feed-forward layers hold 16 blocks of 32x32, so
  // 0.01 trained them at 0.0625 while the table named 0.01; its attention output (4 blocks) kept 1 at --distil-density 0.1.
  it.each([
    [
      ["--density", "0.25,0.01"],
      "RangeError: --density: 0.01 keeps no block of transformer.h.0.mlp.c_fc (256x64 in 16 blocks of 32x32); nn keeps one anyway, so transformer.h.0.mlp.c_fc would run at density 0.063, not 0.01: give at least 0.063, or a larger --size",
    ],
    [
      ["--mode", "distil", "--patch", "ffn+attn", "--distil-density", "0.1"],
      "RangeError: --distil-density: 0.1 keeps no block of transformer.h.0.attn.c_proj (64x64 in 4 blocks of 32x32); nn keeps one anyway, so transformer.h.0.attn.c_proj would run at density 0.25, not 0.1: give at least 0.25, or a larger --size",
    ],
  ])("refuses %j under which a patched layer keeps no block, in one line naming the layer and the density that would run", async (args, message) => {
    const result = await tsx("main.ts", "--backend", "js", "--max-chars", "20000", ...args);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(message);
    expect(result.stdout).toBe("");
  });

  it("a --tokenizer folder without tokenizer.json is named with the flag, before any model trains", async () => {
    const result = await tsx("main.ts", "--backend", "js", "--tokenizer", join(folder, "missing"));
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^Error: --tokenizer .*missing: loadTokenizer: cannot read .*tokenizer\.json/);
    expect(result.stdout).toBe("");
  });

  // Node's mkdirSync(path, { recursive: true }) retries a folder under /proc without end where mkdir says ENOENT (as root).
  it.skipIf(!existsSync("/proc/self"))("an --out under /proc fails at once, naming the flag, rather than hang", async () => {
    const result = await runNode(["--import", "tsx", join("src", "main.ts"), "--backend", "js", "--out", "/proc/blocksparse-no-folder/results"], {
      cwd: resolve(import.meta.dirname, ".."),
      timeoutMs: 20_000,
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^Error: --out \/proc\/blocksparse-no-folder\/results: cannot write there \((ENOENT|EACCES)/m);
    expect(result.stdout).toBe("");
  });

  // pnpm -F runs the demo in examples/distil: "Wrote results/..." named a folder the user's shell (at the root) did not have.
  it("names the files an --out relative to the example's folder wrote by their absolute paths", async () => {
    const out = join(folder, "results");
    const result = await tsx("main.ts", "--backend", "js", "--mode", "distil", "--steps", "1", "--eval-batches", "1", "--curve-points", "1", "--max-chars", "20000", "--out", relative(resolve(import.meta.dirname, ".."), out));
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`Wrote ${join(out, "gpt2-moby-dick-distil.md")} and .json`);
    expect(existsSync(join(out, "gpt2-moby-dick-distil.json"))).toBe(true);
  });

  it("an --out it cannot write fails before the first model trains, not after", async () => {
    const file = join(folder, "a-file");
    writeFileSync(file, "");
    const result = await tsx("main.ts", "--out", join(file, "results"));
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/--out .*a-file\/results: cannot write there \(ENOTDIR/);
    expect(result.stdout).not.toMatch(/dense/);
  });
});

describe("summary.ts", { timeout: 30_000 }, () => {
  it("names a missing or unreadable result file, without a stack trace", async () => {
    const corrupt = join(folder, "corrupt.json");
    writeFileSync(corrupt, "{not json");
    for (const file of [join(folder, "missing.json"), corrupt]) {
      const result = await tsx("summary.ts", file);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(new RegExp(`^${file}: cannot read it as JSON`));
      expect(result.stderr).not.toMatch(/^\s+at /m);
    }
  });

  it("refuses a file given twice, two files of one seed and a file without the sparse experiment, rather than average them", async () => {
    const row = { experiment: "sparse", model: "dense", density: 1, steps: 10, completedSteps: 10, status: "done", validationLoss: 6, curve: [], seconds: 1, msPerStep: 1 };
    const write = (name: string, seed: number, rows: unknown[]) => {
      const file = join(folder, name);
      writeFileSync(file, JSON.stringify({ options: { seed }, rows }));
      return file;
    };
    const seed1 = write("seed1.json", 1, [row]);
    const again = write("seed1-again.json", 1, [row]);
    const distil = write("distil.json", 2, [{ ...row, experiment: "distil" }]);
    // Each was counted as one more seed, in the means and in "mean of N seeds"; the distil file gave an empty table.
    for (const [files, message] of [
      [[seed1, seed1], `${seed1}: given twice; give one file per seed`],
      [[seed1, again], `${again}: seed 1 again (${seed1} has it too); give one file per seed`],
      [[seed1, distil], `${distil}: no rows of the sparse experiment (a run of --mode distil?); give the files of --mode sparse or all runs`],
    ] as const) {
      const result = await tsx("summary.ts", ...files);
      expect(result.code).toBe(1);
      expect(result.stderr.trim()).toBe(message);
      expect(result.stdout).toBe("");
    }
  });

  it("prints its usage for --help instead of reading a file of that name", async () => {
    const result = await tsx("summary.ts", "--help");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^usage: tsx src\/summary.ts RUN.json/);
  });
});
