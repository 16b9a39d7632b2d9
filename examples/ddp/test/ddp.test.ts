import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, expect, it } from "vitest";
import { LAUNCHER_SOURCE, runNode } from "../../../packages/distributed/test/helpers";

const out = mkdtempSync(join(tmpdir(), "blocksparse-ddp-example-"));
// A folder where --save expects a file, and a file where it expects a folder: both used to fail only after training.
mkdirSync(join(out, "a-folder"));
writeFileSync(join(out, "a-file"), "");
afterAll(() => rmSync(out, { recursive: true, force: true }));

it("the example trains on two ranks through the launcher: replicas identical, the clusters learned, a checkpoint from rank 0", async () => {
  const checkpoint = join(out, "model.safetensors");
  const result = await runNode(["--import", "tsx", LAUNCHER_SOURCE, "--nproc-per-node", "2", "src/train.mjs", "--steps", "30", "--save", checkpoint], {
    cwd: resolve(import.meta.dirname, ".."),
  });
  expect(result.code, result.stderr).toBe(0);
  expect(result.stdout).toMatch(/2 replicas identical/);
  const accuracy = Number(/accuracy on 256 held-out points: ([\d.]+)%/.exec(result.stdout)?.[1]);
  expect(accuracy).toBeGreaterThan(90);
  expect(existsSync(checkpoint)).toBe(true);
});

// `pnpm demo --steps 3` appends the flags to the demo script (`pnpm demo -- --steps 3`, after a literal "--"): with
// --steps 40 in the script the first failed with "--steps: given twice ('40' and '3')", the second with "Unexpected
// argument '--steps'".
it.each([[["--steps", "3"]], [["--", "--steps", "3"]]])("the demo script takes the script's flags after it, as pnpm demo %j passes them", async (extra) => {
  const script: string = JSON.parse(readFileSync(resolve(import.meta.dirname, "..", "package.json"), "utf8")).scripts.demo;
  const [launcher, ...args] = script.split(" ");
  expect(launcher).toBe("blocksparse-run");
  const result = await runNode(["--import", "tsx", LAUNCHER_SOURCE, ...args, ...extra], { cwd: resolve(import.meta.dirname, "..") });
  expect(result.code, result.stderr).toBe(0);
  // Three steps: step 0 and the last, step 2, reported.
  expect(result.stdout).toMatch(/^step 0: .*\nstep 2: .*\naccuracy on 256 held-out points: [\d.]+%; 2 replicas identical\n$/);
});

it.each([
  [["--steps", "abc"], /--steps: expected a positive integer, got 'abc'/],
  [["--steps=-1"], /--steps: expected a positive integer, got '-1'/],
  // parseArgs refused a value starting with a dash as "ambiguous": a negative number is the flag's value.
  [["--steps", "-1"], /--steps: expected a positive integer, got '-1'/],
  [["--steps", "--backend", "cpu"], /--steps: missing its value \('--backend' after it is read as a flag\); write --steps VALUE, or --steps=VALUE for a value starting with a dash/],
  [["--backend", "gloo"], /--backend: expected cpu or nccl, got 'gloo'/],
  // Number() read it as 16: only decimal is a number here.
  [["--steps", "0x10"], /--steps: expected a positive integer, got '0x10'/],
  // parseArgs keeps the last value of a flag given twice; the first was dropped without a word.
  [["--steps", "5", "--steps", "6"], /--steps: given twice \('5' and '6'\); give it once/],
  [["--step", "5"], /Unknown option '--step' \(did you mean --steps\?\)/],
  // Every name starts with "": dashes alone were "did you mean --steps?".
  [["---"], /^TypeError: Unknown option '---'; --help lists the flags$/m],
  // An empty name was read as the current folder: "--save : <cwd> is a folder".
  [["--save="], /^RangeError: --save: expected a file name such as model\.safetensors, got ''$/m],
  [["--save", join(out, "missing", "model.safetensors")], /--save .*: the folder .*missing does not exist/],
  [["--save", join(out, "a-folder")], /--save .*a-folder: .*a-folder is a folder; expected a file name such as .*a-folder\/model\.safetensors/],
  [["--save", join(out, "a-file", "model.safetensors")], /--save .*: .*a-file is not a folder/],
])("the example rejects %j with the flag's name and what it accepts, before it trains, without a stack trace", async (args, message) => {
  // Through the launcher for the first case (a rank's refusal ends the job with its message) and --save (checked once
  // the rank is known); the rest run the script alone, which checks its flags before it joins a group, at a third of
  // the time.
  const launched = (args[0] === "--steps" && args[1] === "abc") || args[0] === "--save";
  const launcher = launched ? [LAUNCHER_SOURCE, "--nproc-per-node", "2"] : [];
  const result = await runNode(["--import", "tsx", ...launcher, "src/train.mjs", ...args], {
    cwd: resolve(import.meta.dirname, ".."),
  });
  expect(result.code).toBe(1);
  expect(result.stderr).toMatch(message);
  expect(result.stderr).not.toMatch(/^\s+at /m);
  expect(result.stdout).not.toMatch(/step 0/);
});
