import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runCli } from "./run_cli";

// Where a CLI that wrongly accepted its flags would write; nothing should land here.
const out = mkdtempSync(join(tmpdir(), "bench-cli-flags-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

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
  ])("%s", async (_, script, args, message) => {
    const { code, stdout, stderr } = await runCli(script, args);
    expect(stderr).toMatch(message);
    expect(code).toBe(1);
    expect(stderr).not.toMatch(/^\s+at /m);
    expect(stderr).not.toMatch(/dense: /);
    expect(stdout).toBe("");
  }, 90_000);
});
