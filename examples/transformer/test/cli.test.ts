import { resolve } from "node:path";
import { engine } from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import { runNode } from "../../../packages/distributed/test/helpers";
import { refusalOf } from "../../shared/cli_testing";
import { parseOptions } from "../src/options";

/** `tsx src/main.ts <args>` in this example's folder, workspace packages from their sources. */
const demo = (...args: string[]) => runNode(["--import", "tsx", "src/main.ts", ...args], { cwd: resolve(import.meta.dirname, "..") });

// The flag checks main.ts runs first, called in-process: the command line itself is tested once, below.
describe("the demo's flags", () => {
  it.each([
    [["--steps", "0"], /--steps: expected a positive integer, got '0'/],
    [["--lr", "abc"], /--lr: expected a positive number, got 'abc'/],
    [["--block", "0x0"], /--block: expected ROWSxCOLS of positive integers such as 32x32, got '0x0'/],
    // A side past 2^53 was rounded, and the refusal named a block shape of 100000000000000000000x1.
    [["--block", "99999999999999999999x1"], /^RangeError: --block: expected ROWSxCOLS of positive integers such as 32x32, got '99999999999999999999x1'$/],
    [["--heads", "3"], /--heads: 3 heads do not divide --d-model 64/],
    [["--block", "24x24"], /--d-model: 64 \(feed-forward 64 x 256\) is not divisible by the block shape 24x24 \(--block\); use a multiple of 24 \(48 or 72\)/],
    // A multiple of the larger side alone (48) is not divisible by 32: the width must be a multiple of both.
    [["--block", "48x32", "--d-model", "48"], /--d-model: 48 \(feed-forward 48 x 192\) is not divisible by the block shape 48x32 \(--block\); use a multiple of 96 \(96 is the smallest\)/],
    [["--lr=-0.5"], /--lr: expected a positive number, got '-0.5'/],
    // parseArgs refused a value starting with a dash as "ambiguous": a negative number is the flag's value.
    [["--lr", "-0.5"], /--lr: expected a positive number, got '-0.5'/],
    [["--steps", "-1", "--sample-length", "-.5"], /--steps: expected a positive integer, got '-1'/],
    [["--lr", "--steps", "2"], /--lr: missing its value \('--steps' after it is read as a flag\); write --lr VALUE, or --lr=VALUE for a value starting with a dash/],
    [["--seed"], /--seed: missing its value; write --seed VALUE/],
    // Generation slides past the context, one forward pass a character: a billion ran for days or out of memory.
    [["--sample-length", "1000000000"], /--sample-length: expected an integer from 0 to 10000 \(characters generated\), got 1000000000/],
    [["--context", "200000"], /--context: 200000 leaves no window in the validation text's \d+ characters; use at most \d+/],
    [["--density", "0.5,,0.25"], /--density: expected densities in \(0, 1\], comma-separated, got ''/],
    // The validation batches take seed x 7919 + i: a larger seed failed after the header, naming another number.
    [["--seed", "1700000000000"], /--seed: expected an integer from -4294967295 to 4294967295, got '1700000000000'/],
    [["--density", "0.25,0.5,0.250"], /--density: '0.250' repeats '0.25'; give each value once/],
    // Number() read these as 2, 1 and 1: only decimal is a number here.
    [["--steps", "0x2"], /--steps: expected a positive integer, got '0x2'/],
    [["--density", "0b1"], /--density: expected densities in \(0, 1\], comma-separated, got '0b1'/],
    [["--lr", "0o1"], /--lr: expected a positive number, got '0o1'/],
    // parseArgs keeps the last value of a flag given twice; the first was dropped without a word.
    [["--steps", "1", "--steps", "2"], /--steps: given twice \('1' and '2'\); give it once/],
    [["--block=16x16", "--block", "32x32"], /--block: given twice \('16x16' and '32x32'\); give it once/],
    // A million blocks took minutes to build, then ran out of memory; a huge batch failed with "Invalid typed array length".
    [["--layers", "100000000"], /--layers 100000000, --d-model 64, --batch-size 8, --context 64: training needs at least \d+ GiB .* and this machine has \d+(\.\d)? GiB; use a smaller --layers or --d-model/],
    [["--batch-size", "100000000000"], /--batch-size 100000000000, --context 64: training needs at least \d+ GiB .*; use a smaller --batch-size, --context or --layers/],
    // Core's "importBackendModules: specifiers must be an array of non-empty strings" named no flag.
    [["--backend-module", ""], /--backend-module: expected a package name or a path, got ''/],
    [["--backend="], /--backend: expected a backend's name \(cuda, cpu, js or one --backend-module registers\), got ''/],
    [["--backend", " "], /--backend: expected a backend's name .*, got ' '/],
  ])("rejects %j naming the flag and what it accepts, before a backend starts or a line is printed", (args, message) => {
    expect(refusalOf(engine, () => parseOptions(args))).toMatch(message);
  });

  it("names the flag a misspelled one is closest to", () => {
    expect(refusalOf(engine, () => parseOptions(["--step", "2"]))).toMatch(/Unknown option '--step' \(did you mean --steps\?\); --help lists the flags/);
  });
});

// Each case starts a process (about a second, more on a loaded machine).
describe("the demo's command line", { timeout: 30_000 }, () => {
  it("refuses a bad flag with its message alone, one line on stderr, exit 1, before a backend starts or a line is printed", async () => {
    const result = await demo("--steps", "0");
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("RangeError: --steps: expected a positive integer, got '0'\n");
    expect(result.stdout).toBe("");
  });

  it("prints its usage for --help and exits 0", async () => {
    const result = await demo("--help");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^Train a small character-level transformer on Moby Dick, dense and with block-sparse feed-forward layers\.\n[\s\S]*\n {2}--sample-length N /);
    expect(result.stderr).toBe("");
  });

  // nn keeps one block of a layer whatever the density: the feed-forward layers the pattern patches (256x64 at the
  // default --d-model) hold 4 blocks of 64x64, so 0.1 trained them at 0.25 while the table named 0.1.
  it("refuses a --density under which a patched layer keeps no block, in one line naming the layer and the density that would run", async () => {
    const result = await demo("--backend", "js", "--block", "64x64", "--density", "0.25,0.1");
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      "RangeError: --density: 0.1 keeps no block of blocks.0.mlp.fc1 (256x64 in 4 blocks of 64x64); nn keeps one anyway, so blocks.0.mlp.fc1 would run at density 0.25, not 0.1: give at least 0.25, or a larger --d-model or a smaller --block",
    );
    expect(result.stdout).toBe("");
  });

  it("says why a --backend cannot start and which backends can", async () => {
    const result = await demo("--backend-module", "./test/fixtures/broken-backend.ts", "--backend", "broken");
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/--backend broken: Backend 'broken' failed to start: no device here/);
    expect(result.stderr).toMatch(/--backend broken cannot run here; these can: .*\bjs\b/);
    expect(result.stdout).toBe("");
  });
});
