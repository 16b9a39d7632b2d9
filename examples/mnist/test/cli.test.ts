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
    [["--lr", "abc"], /--lr: expected a positive number, got 'abc'/],
    [["--epochs=-1"], /--epochs: expected a positive integer, got '-1'/],
    [["--hidden", "48"], /--hidden: expected a positive multiple of 32 \(the block height\), got 48; try 32 or 64/],
    [["--batch-size", "0"], /--batch-size: expected a positive integer, got '0'/],
    [["--density", "0.5,1.5"], /--density: expected densities in \(0, 1\], comma-separated, got '1.5'/],
    [["--regrow", "magnitude"], /--regrow: expected none, random or rigl, got 'magnitude'/],
    [["--density", "0.5,,0.25"], /--density: expected densities in \(0, 1\], comma-separated, got ''/],
    [["--density", ","], /--density: expected densities in \(0, 1\], comma-separated, got ''/],
    [["--train-size", "100", "--batch-size", "128"], /--batch-size: expected at most the 100 training digits \(--train-size\), got 128/],
    [["--test-size", "9000"], /--train-size \+ --test-size: expected at most 10000 digits in all \(the mnist package's\), got 8000 \+ 9000/],
    // Number() read these as 2, 1000 and 1: only decimal is a number here.
    [["--epochs", "0x2"], /--epochs: expected a positive integer, got '0x2'/],
    [["--seed", "0b11"], /--seed: expected an integer from -4294967295 to 4294967295, got '0b11'/],
    // The run derives seed x 1000 + epoch: a larger seed failed after the header, naming another number.
    [["--seed", "10000000000000"], /--seed: expected an integer from -4294967295 to 4294967295, got '10000000000000'/],
    // The same model trained twice, two identical rows in the table.
    [["--density", "0.5,.5"], /--density: '.5' repeats '0.5'; give each value once/],
    [["--density", "0x1"], /--density: expected densities in \(0, 1\], comma-separated, got '0x1'/],
    [["--lr", "0o1"], /--lr: expected a positive number, got '0o1'/],
    // parseArgs keeps the last value of a flag given twice; the first was dropped without a word.
    [["--epochs", "1", "--epochs", "2"], /--epochs: given twice \('1' and '2'\); give it once/],
    [["--backend=js", "--backend", "cpu"], /--backend: given twice \('js' and 'cpu'\); give it once/],
    // These ran without a word and moved no pattern (or trained no sparse epoch): a static run reported as the one asked for.
    [["--regrow-every", "25"], /--regrow-every: moves patterns only with --regrow random or rigl \(--regrow is none\)/],
    [["--regrow-fraction", "0.3"], /--regrow-fraction: moves patterns only with --regrow random or rigl \(--regrow is none\)/],
    // 0 moved no block: the RigL model trained as the static one, under a header saying its patterns moved.
    [["--regrow", "rigl", "--regrow-fraction", "0"], /--regrow-fraction: expected a number in \(0, 1\] \(--regrow none keeps the patterns\), got '0'/],
    [
      ["--regrow", "rigl", "--train-size", "640", "--epochs", "1"],
      /--regrow-every: 50 steps between updates, but the patterns stop moving at step 7 \(3\/4 of the 10 sparse training steps\), so they would never move; use --regrow-every 6 or less, or more --epochs/,
    ],
    // It took seconds to fail with "rand: cannot allocate ... float32 values", naming no flag.
    [["--hidden", "10000000"], /--hidden: 10000000 makes [\d,]+ parameters, which need at least \d+ GiB to train, and this machine has [\d.]+ GiB; use a smaller --hidden/],
    [["--patch-from", "trained", "--epochs", "1"], /--patch-from trained: the first epoch trains the dense model the others are patched from, so --epochs 1 leaves none to train sparse; use --epochs 2 or more/],
    // Core's "importBackendModules: specifiers must be an array of non-empty strings" named no flag.
    [["--backend-module", ""], /--backend-module: expected a package name or a path, got ''/],
    [["--backend="], /--backend: expected a backend's name \(cuda, cpu, js or one --backend-module registers\), got ''/],
    [["--backend", " "], /--backend: expected a backend's name .*, got ' '/],
  ])("rejects %j naming the flag and what it accepts, before a backend starts or a line is printed", (args, message) => {
    expect(refusalOf(engine, () => parseOptions(args))).toMatch(message);
  });

  it("names the flag a misspelled one is closest to", () => {
    expect(refusalOf(engine, () => parseOptions(["--epoch", "2"]))).toMatch(/Unknown option '--epoch' \(did you mean --epochs\?\); --help lists the flags/);
  });
});

// Each case starts a process (about a second, more on a loaded machine).
describe("the demo's command line", { timeout: 30_000 }, () => {
  it("refuses a bad flag with its message alone, one line on stderr, exit 1, before a backend starts or a line is printed", async () => {
    const result = await demo("--lr", "abc");
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("RangeError: --lr: expected a positive number, got 'abc'\n");
    expect(result.stdout).toBe("");
  });

  it("prints its usage for --help and exits 0", async () => {
    const result = await demo("--help");
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^Train an MLP on MNIST dense and block-sparse, and compare them\.\n[\s\S]*\n {2}--regrow-fraction X /);
    expect(result.stderr).toBe("");
  });

  it("counts the weight bytes in the dtype the models ran in, and says which", async () => {
    const result = await demo("--backend", "js", "--dtype", "float16", "--epochs", "1", "--train-size", "64", "--test-size", "64", "--hidden", "32", "--density", "0.5");
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/block-sparse: the kept blocks' float16 values plus their int32 indices/);
    // One epoch is "1 epoch" (the header said "1 epochs").
    expect(result.stdout).toMatch(/: 64 training and 64 test digits, 1 epoch, batch /);
    // Whole blocks move 0.5 of fc2's single block to 1: said before the run.
    expect(result.stderr).toMatch(/note: --density 0.5 keeps 1 block of fc2 \(32x32 in 1 block of 32x32\): fc2 runs at density 1\n/);
  });

  // nn keeps one block of a layer whatever the density: fc2 at --hidden 32 is one 32x32 block, so it trained dense
  // while the table named 0.01.
  it("refuses a --density under which a layer keeps no block, in one line naming the layer and the density that would run", async () => {
    const result = await demo("--backend", "js", "--hidden", "32", "--density", "0.5,0.04");
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      "RangeError: --density: 0.04 keeps no block of fc2 (32x32 in 1 block of 32x32); nn keeps one anyway, so fc2 would run at density 1, not 0.04: give at least 1, or a larger --hidden",
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
