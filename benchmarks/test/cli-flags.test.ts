import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "./run_cli";

// Where a CLI that wrongly accepted its flags would write; nothing should land here.
const out = mkdtempSync(join(tmpdir(), "bench-cli-flags-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));
// A file where a CLI is told to write its directory.
const aFile = join(out, "a-file");
writeFileSync(aFile, "");

// Tiny cases on js, so that a CLI that let a bad value through ends in seconds (and fails the test) instead of timing for minutes.
const ATTENTION = ["--backend", "js", "--shapes", "1x1x16x16", "--dtype", "float32", "--paths", "fused", "--out", out];
const FFN = ["--backend", "js", "--dtype", "float32", "--tokens", "16", "--densities", "0.5", "--quick", "--out", out];

describe.concurrent("benchmark CLIs refuse a bad value naming the flag, before any case runs", () => {
  it.each([
    ["attention.ts --iterations abc", "attention.ts", [...ATTENTION, "--iterations", "abc"], /--iterations: "abc" is not a positive integer/],
    ["attention.ts --iterations 0", "attention.ts", [...ATTENTION, "--iterations", "0"], /--iterations: "0" is not a positive integer/],
    ["attention.ts --causal no", "attention.ts", [...ATTENTION, "--causal", "no"], /--causal: expected true or false, got "no"/],
    ["attention.ts --dtype bf16", "attention.ts", ["--backend", "js", "--dtype", "bf16"], /--dtype: expected float32, float16 or bfloat16, got "bf16"/],
    ["overhead.ts --dtype bf16", "overhead.ts", ["--backend", "js", "--dtype", "bf16", "--out", out], /--dtype: expected float32, float16 or bfloat16, got "bf16"/],
    ["ffn.ts --models head --widths 64x100 --blocks 32", "ffn.ts", [...FFN, "--models", "head", "--widths", "64x100", "--blocks", "32"], /--blocks: 32x32 blocks do not tile the head model's 100x64 weight \(--widths 64x100\)/],
    ["ffn.ts --models ffn,block --heads 3 (dModel 64)", "ffn.ts", [...FFN, "--models", "ffn,block", "--widths", "64x128", "--blocks", "32", "--heads", "3", "--context", "16"], /--heads 3 does not divide the block model's dModel 64/],
    ["ffn.ts --blocks 32,32x32 (one block shape, timed twice)", "ffn.ts", [...FFN, "--models", "ffn", "--widths", "64x128", "--blocks", "32,32x32"], /--blocks: "32x32" repeats "32" \(both are 32x32\) in "32,32x32"; give each once/],
    ["ffn.ts --widths 64x128,064x128", "ffn.ts", [...FFN, "--models", "ffn", "--widths", "64x128,064x128", "--blocks", "32"], /--widths: "064x128" repeats "64x128" \(both are 64x128\)/],
    ["ffn.ts --tokens 16 --tokens 32", "ffn.ts", [...FFN, "--widths", "64x128", "--blocks", "32", "--models", "ffn", "--tokens", "32"], /--tokens: given twice \("16" and "32"\); give it once/],
    ["ffn.ts --out FILE", "ffn.ts", ["--backend", "js", "--dtype", "float32", "--tokens", "16", "--densities", "0.5", "--quick", "--widths", "64x128", "--blocks", "32", "--models", "ffn", "--out", aFile], /--out: cannot make the output directory ".*a-file": it or a folder above it is a file/],
    ["attention.ts --out FILE (checked before the run, not when saving it)", "attention.ts", [...ATTENTION.slice(0, -2), "--iterations", "2", "--out", aFile], /--out: cannot make the output directory/],
    ["linear_shapes.ts --backend gpu", "linear_shapes.ts", ["--backend", "gpu", "--rows", "2", "--features", "8", "--widths", "8", "--out", out], /--backend: unknown backend "gpu", expected cuda, cpu, js or auto/],
    ["overhead.ts --backend gpu (in its fresh child process)", "overhead.ts", ["--backend", "gpu", "--dtype", "float32", "--out", out], /--backend: unknown backend "gpu"[\s\S]*the fresh process measuring start-up failed \(exit 1\); its error is above/],
    ["eager_step.ts --block 33 against --widths 64x128", "eager_step.ts", ["--backend", "js", "--widths", "64x128", "--tokens", "8", "--steps", "5", "--warmup", "5", "--block", "33"], /--block 33 does not divide both widths of --widths 64x128/],
    ["eager_step.ts --stand-in --backend js (a top-level check, not a stack trace)", "eager_step.ts", ["--backend", "js", "--stand-in"], /^--stand-in replaces the CUDA addon: use it with --backend cuda\n$/],
    ["cpu_addon.ts --repeats abc (made no call and reported Infinity ms)", "cpu_addon.ts", ["--repeats", "abc"], /^--repeats: "abc" is not a positive integer\n$/],
    ["cpu_addon.ts --threads 0x4", "cpu_addon.ts", ["--threads", "0x4"], /^--threads: "0x4" is not a positive integer\n$/],
    ["ncu_steps_cli.ts --steps abc (a stack trace)", "ncu_steps_cli.ts", ["summary.txt", "--steps", "abc"], /^--steps: "abc" is not a positive integer\n$/],
    ["cpu_compare.ts --rounds abc (ran zero rounds and wrote an empty table)", "cpu_compare.ts", ["--rounds", "abc", "--out", out], /^--rounds: "abc" is not a positive integer\n$/],
    ["gpt2_train.ts --blocks 48 (the patcher threw after the dense model was timed)", "gpt2_train.ts", ["--backend", "js", "--sizes", "tiny", "--batch", "1", "--context", "8", "--vocab", "64", "--quick", "--blocks", "48", "--out", out], /--blocks: 48 does not divide gpt2 tiny's feed-forward widths 64 and 256/],
    ["compare.ts --densities 0.01 at --small (a pattern of no block: RangeError)", "compare.ts", ["--backend", "js", "--small", "--blocks", "64", "--densities", "0.01", "--out", out], /--densities: 0.01 keeps none of the 4x4 blocks of 64x64 in the 256x256 weight; one block is density 0.063/],
    // `in` found these on Object.prototype: generate.ts ran a default-sized model reported as size "toString".
    ["generate.ts --sizes toString", "generate.ts", ["--backend", "js", "--sizes", "toString", "--batch", "1", "--prompt", "1", "--new", "2", "--repeats", "1", "--modes", "eager"], /--sizes: "toString" is not one of small, medium, large, xl/],
    ["generate.ts --modes eager,hasOwnProperty (checked before the backend starts)", "generate.ts", ["--backend", "js", "--sizes", "small", "--modes", "eager,hasOwnProperty"], /--modes: "hasOwnProperty" is not one of eager, static, graph/],
    ["generate.ts --densities 1 (timed the dense model twice)", "generate.ts", ["--backend", "js", "--sizes", "small", "--densities", "1"], /--densities: 1 is the dense model, which always runs; give densities below 1, got "1"/],
    ["gpt2_train.ts --sizes constructor", "gpt2_train.ts", ["--backend", "js", "--sizes", "constructor", "--out", out], /--sizes: "constructor" is not one of/],
    ["gpt2_train.ts --dtype toString", "gpt2_train.ts", ["--backend", "js", "--dtype", "toString", "--out", out], /--dtype: expected float32, float16 or bfloat16, got "toString"/],
    ["ffn.ts --dtype valueOf", "ffn.ts", [...FFN.slice(0, 2), "--dtype", "valueOf", ...FFN.slice(4)], /--dtype: expected float32, float16 or bfloat16, got "valueOf"/],
    ["compare.ts --dtypes toString", "compare.ts", ["--backend", "js", "--small", "--dtypes", "toString", "--out", out], /--dtypes: unknown "toString", expected float32, float16 or bfloat16/],
    ["attention.ts --paths fused,fused (timed twice, two rows)", "attention.ts", [...ATTENTION.slice(0, -4), "--out", out, "--paths", "fused,fused"], /--paths: "fused" repeats "fused"/],
    ["eager_step.ts --tokens abc", "eager_step.ts", ["--backend", "js", "--widths", "64x128", "--tokens", "abc"], /--tokens: expected an integer >= 1, got "abc"/],
    ["eager_step.ts --steps 4 (five timed runs of steps / 5)", "eager_step.ts", ["--backend", "js", "--widths", "64x128", "--tokens", "1", "--steps", "4", "--warmup", "0"], /^--steps: expected an integer >= 5, got "4"\n$/],
  ])("%s", async (_, script, args, message) => {
    const { code, stdout, stderr } = await runCli(script, args);
    expect(stderr).toMatch(message);
    expect(code).toBe(1);
    expect(stderr).not.toMatch(/^\s+at /m);
    expect(stderr).not.toMatch(/dense: /);
    expect(stdout).toBe("");
  }, 90_000);
});

describe("benchmark CLIs take the smallest values their flags allow", () => {
  it("eager_step.ts times one token per step without warm-up (it asked for 5 of each)", async () => {
    const { code, stdout, stderr } = await runCli("eager_step.ts", ["--backend", "js", "--widths", "8x16", "--tokens", "1", "--block", "0", "--steps", "5", "--warmup", "0"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(/^js 8x16 tokens 1 dense: [\d.]+ us\/step/);
  }, 90_000);
});
