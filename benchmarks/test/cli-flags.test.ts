import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { parseAttentionFlags } from "../src/attention_flags";
import { parseCompareFlags } from "../src/compare_flags";
import { parseCpuAddonFlags, productNames } from "../src/cpu_addon_flags";
import { parseCpuCompareFlags } from "../src/cpu_compare_flags";
import { parseDecodeGraphFlags } from "../src/decode_graph_flags";
import { parseEagerStepFlags } from "../src/eager_step_flags";
import { parseFfnFlags } from "../src/ffn_flags";
import { describeFailure, FlagError } from "../src/flags";
import { parseGenerateFlags } from "../src/generate_flags";
import { parseGpt2TrainFlags } from "../src/gpt2_train_flags";
import { parseNcuStepsFlags } from "../src/ncu_steps_flags";
import { startBackend } from "../src/start_backend";
import { runCli } from "./run_cli";

// Where a CLI that wrongly accepted its flags would write; nothing should land here.
const out = mkdtempSync(join(tmpdir(), "bench-cli-flags-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));
// A file where a CLI is told to write its directory.
const aFile = join(out, "a-file");
writeFileSync(aFile, "");

const ATTENTION = ["--backend", "js", "--shapes", "1x1x16x16", "--dtype", "float32", "--paths", "fused", "--out", out];
const FFN = ["--backend", "js", "--dtype", "float32", "--tokens", "16", "--densities", "0.5", "--quick", "--out", out];

/** The message a CLI prints for what `parse` throws: a FlagError (or parseArgs' error) alone, never a stack. */
function refusal(parse: () => unknown): string {
  try {
    parse();
  } catch (error) {
    const message = describeFailure(error);
    expect(message).not.toMatch(/^\s+at /m);
    return message;
  }
  throw new Error("the flags were accepted");
}

describe("benchmark CLIs' flag checks refuse a bad value naming the flag, before a backend starts", () => {
  it.each([
    ["attention.ts --iterations abc", () => parseAttentionFlags([...ATTENTION, "--iterations", "abc"]), /--iterations: "abc" is not a positive integer/],
    ["attention.ts --iterations 0", () => parseAttentionFlags([...ATTENTION, "--iterations", "0"]), /--iterations: "0" is not a positive integer/],
    ["attention.ts --causal no", () => parseAttentionFlags([...ATTENTION, "--causal", "no"]), /--causal: expected true or false, got "no"/],
    ["attention.ts --dtype bf16", () => parseAttentionFlags(["--backend", "js", "--dtype", "bf16"]), /--dtype: expected float32, float16 or bfloat16, got "bf16"/],
    ["attention.ts --bogus", () => parseAttentionFlags(["--bogus"]), /Unknown option '--bogus'/],
    ["attention.ts --out FILE (checked before the run, not when saving it)", () => parseAttentionFlags([...ATTENTION.slice(0, -2), "--out", aFile]), /--out: cannot make the output directory/],
    ["attention.ts --paths fused,fused (timed twice, two rows)", () => parseAttentionFlags([...ATTENTION.slice(0, -4), "--out", out, "--paths", "fused,fused"]), /--paths: "fused" repeats "fused"/],
    ["ffn.ts --models head --widths 64x100 --blocks 32", () => parseFfnFlags([...FFN, "--models", "head", "--widths", "64x100", "--blocks", "32"]), /--blocks: 32x32 blocks do not tile the head model's 100x64 weight \(--widths 64x100\)/],
    ["ffn.ts --models ffn,block --heads 3 (dModel 64)", () => parseFfnFlags([...FFN, "--models", "ffn,block", "--widths", "64x128", "--blocks", "32", "--heads", "3", "--context", "16"]), /--heads 3 does not divide the block model's dModel 64/],
    ["ffn.ts --blocks 32,32x32 (one block shape, timed twice)", () => parseFfnFlags([...FFN, "--models", "ffn", "--widths", "64x128", "--blocks", "32,32x32"]), /--blocks: "32x32" repeats "32" \(both are 32x32\) in "32,32x32"; give each once/],
    ["ffn.ts --widths 64x128,064x128", () => parseFfnFlags([...FFN, "--models", "ffn", "--widths", "64x128,064x128", "--blocks", "32"]), /--widths: "064x128" repeats "64x128" \(both are 64x128\)/],
    ["ffn.ts --tokens 16 --tokens 32", () => parseFfnFlags([...FFN, "--widths", "64x128", "--blocks", "32", "--models", "ffn", "--tokens", "32"]), /--tokens: given twice \("16" and "32"\); give it once/],
    ["ffn.ts --out FILE", () => parseFfnFlags([...FFN.slice(0, -2), "--widths", "64x128", "--blocks", "32", "--models", "ffn", "--out", aFile]), /--out: cannot make the output directory ".*a-file": it or a folder above it is a file/],
    ["ffn.ts --dtype valueOf", () => parseFfnFlags([...FFN.slice(0, 2), "--dtype", "valueOf", ...FFN.slice(4)]), /--dtype: expected float32, float16 or bfloat16, got "valueOf"/],
    ["eager_step.ts --block 33 against --widths 64x128", () => parseEagerStepFlags(["--backend", "js", "--widths", "64x128", "--tokens", "8", "--steps", "5", "--warmup", "5", "--block", "33"]), /--block 33 does not divide both widths of --widths 64x128/],
    ["eager_step.ts --stand-in --backend js", () => parseEagerStepFlags(["--backend", "js", "--stand-in"]), /^--stand-in replaces the CUDA addon: use it with --backend cuda$/],
    ["eager_step.ts --native-times --backend js", () => parseEagerStepFlags(["--backend", "js", "--native-times"]), /^--native-times times the CUDA addon's functions: use it with --backend cuda$/],
    ["eager_step.ts --tokens abc", () => parseEagerStepFlags(["--backend", "js", "--widths", "64x128", "--tokens", "abc"]), /--tokens: expected an integer >= 1, got "abc"/],
    ["eager_step.ts --steps 4 (five timed runs of steps / 5)", () => parseEagerStepFlags(["--backend", "js", "--widths", "64x128", "--tokens", "1", "--steps", "4", "--warmup", "0"]), /^--steps: expected an integer >= 5, got "4"$/],
    ["cpu_addon.ts --repeats abc (made no call and reported Infinity ms)", () => parseCpuAddonFlags(["--repeats", "abc"]), /^--repeats: "abc" is not a positive integer$/],
    ["cpu_addon.ts --threads 0x4", () => parseCpuAddonFlags(["--threads", "0x4"]), /^--threads: "0x4" is not a positive integer$/],
    ["ncu_steps_cli.ts --steps abc (a stack trace)", () => parseNcuStepsFlags(["summary.txt", "--steps", "abc"]), /^--steps: "abc" is not a positive integer$/],
    ["ncu_steps_cli.ts with two files", () => parseNcuStepsFlags(["a.txt", "b.txt"]), /\(got 2 files\)$/],
    ["cpu_compare.ts --rounds abc (ran zero rounds and wrote an empty table)", () => parseCpuCompareFlags(["--rounds", "abc", "--out", out]), /^--rounds: "abc" is not a positive integer$/],
    ["gpt2_train.ts --blocks 48 (the patcher threw after the dense model was timed)", () => parseGpt2TrainFlags(["--backend", "js", "--sizes", "tiny", "--blocks", "48", "--out", out]), /--blocks: 48 does not divide gpt2 tiny's feed-forward widths 64 and 256/],
    ["gpt2_train.ts --sizes constructor", () => parseGpt2TrainFlags(["--backend", "js", "--sizes", "constructor", "--out", out]), /--sizes: "constructor" is not one of/],
    ["gpt2_train.ts --dtype toString", () => parseGpt2TrainFlags(["--backend", "js", "--dtype", "toString", "--out", out]), /--dtype: expected float32, float16 or bfloat16, got "toString"/],
    ["compare.ts --densities 0.01 at --small (a pattern of no block: RangeError)", () => parseCompareFlags(["--backend", "js", "--small", "--blocks", "64", "--densities", "0.01", "--out", out]), /--densities: 0.01 keeps none of the 4x4 blocks of 64x64 in the 256x256 weight; one block is density 0.063/],
    ["compare.ts --dtypes toString", () => parseCompareFlags(["--backend", "js", "--small", "--dtypes", "toString", "--out", out]), /--dtypes: unknown "toString", expected float32, float16 or bfloat16/],
    // `in` found these on Object.prototype: generate.ts ran a default-sized model reported as size "toString".
    ["generate.ts --sizes toString", () => parseGenerateFlags(["--backend", "js", "--sizes", "toString", "--batch", "1", "--prompt", "1", "--new", "2", "--repeats", "1", "--modes", "eager"]), /--sizes: "toString" is not one of small, medium, large, xl/],
    ["generate.ts --modes eager,hasOwnProperty", () => parseGenerateFlags(["--backend", "js", "--sizes", "small", "--modes", "eager,hasOwnProperty"]), /--modes: "hasOwnProperty" is not one of eager, static, graph/],
    ["generate.ts --densities 1 (timed the dense model twice)", () => parseGenerateFlags(["--backend", "js", "--sizes", "small", "--densities", "1"]), /--densities: 1 is the dense model, which always runs; give densities below 1, got "1"/],
    // Sizes past the host's memory failed inside randn with an out-of-memory stack that named no flag, after the backend started.
    ["ffn.ts --widths 65536x65536 --tokens 65536", () => parseFfnFlags([...FFN.slice(0, 4), "--tokens", "65536", ...FFN.slice(6), "--models", "ffn", "--widths", "65536x65536", "--blocks", "32"]), /^--widths 65536x65536 and --tokens 65536 needs \d+\.\d GiB for the ffn model's input, activations and weights in float32, and this machine has .*; use smaller --widths or --tokens$/],
    ["gpt2_train.ts --batch 100000 --context 100000", () => parseGpt2TrainFlags(["--backend", "js", "--sizes", "tiny", "--batch", "100000", "--context", "100000", "--out", out]), /^--batch 100000, --context 100000 and --vocab \d+ needs .* GiB for gpt2 tiny's logits and activations/],
    ["attention.ts --shapes 1000x1000x1000x1000", () => parseAttentionFlags([...ATTENTION.slice(0, 2), "--shapes", "1000x1000x1000x1000", ...ATTENTION.slice(4)]), /^--shapes 1000x1000x1000x1000 needs .* GiB for q, k, v and the output in float32/],
    ["generate.ts --prompt 1020 --new 10 (found once the model was built, with its stack)", () => parseGenerateFlags(["--backend", "js", "--sizes", "small", "--prompt", "1020", "--new", "10", "--modes", "eager"]), /^--prompt 1020 and --new 10 run 1029 positions, past GPT-2's 1024$/],
    ["decode_graph.ts --model conv", () => parseDecodeGraphFlags(["--backend", "js", "--model", "conv", "--out", out]), /^--model: expected linear or ffn, got "conv"$/],
    ["decode_graph.ts --iterations 0", () => parseDecodeGraphFlags(["--backend", "js", "--iterations", "0", "--out", out]), /^--iterations: "0" is not a positive integer$/],
    // Parsed only after the backend started: BlockSparseLinear threw with its stack once the dense case was timed.
    ["decode_graph.ts --blocks 48 --width 64", () => parseDecodeGraphFlags(["--backend", "js", "--width", "64", "--blocks", "48", "--out", out]), /^--blocks: 48 does not divide the linear layers' 64x64 weight \(--width 64\)$/],
    ["decode_graph.ts --model ffn --hidden 96 --blocks 64", () => parseDecodeGraphFlags(["--backend", "js", "--model", "ffn", "--width", "64", "--hidden", "96", "--blocks", "64", "--out", out]), /^--blocks: 64 does not divide the ffn layers' 96x64 weight \(--width 64, --hidden 96\)$/],
    ["decode_graph.ts --densities 0.01 (no block of a 64x64 weight)", () => parseDecodeGraphFlags(["--backend", "js", "--width", "64", "--blocks", "32", "--densities", "0.01", "--out", out]), /^--densities: 0.01 keeps none of the 2x2 blocks of 32x32 in the linear layers' 64x64 weight/],
    ["decode_graph.ts --tokens abc", () => parseDecodeGraphFlags(["--backend", "js", "--tokens", "abc", "--out", out]), /^--tokens: "abc" is not a positive integer$/],
    // nn keeps one block of 2304: timed at density 0.00043 and reported as 0.0001.
    ["generate.ts --densities 0.0001", () => parseGenerateFlags(["--backend", "js", "--sizes", "small", "--densities", "0.0001", "--modes", "eager"]), /^--densities: 0.0001 keeps none of the 96x24 blocks of 32x32 in gpt2 small's 3072x768 feed-forward weights/],
    // The dense model ignores the density, but a NaN given was accepted without a word.
    ["eager_step.ts --block 0 --density NaN", () => parseEagerStepFlags(["--backend", "js", "--widths", "8x16", "--tokens", "1", "--block", "0", "--steps", "5", "--warmup", "0", "--density", "NaN"]), /^--density: expected a density in \(0, 1\], got "NaN"$/],
    // One shape timed twice, as two rows.
    ["attention.ts --shapes 1x1x16x16,01x1x16x16", () => parseAttentionFlags([...ATTENTION.slice(0, 2), "--shapes", "1x1x16x16,01x1x16x16", ...ATTENTION.slice(4)]), /^--shapes: "01x1x16x16" repeats "1x1x16x16" \(both are 1x1x16x16\)/],
    ["attention.ts --shapes 1e1x1x16x16", () => parseAttentionFlags([...ATTENTION.slice(0, 2), "--shapes", "1e1x1x16x16", ...ATTENTION.slice(4)]), /^--shapes: "1e1x1x16x16" is not batch x heads x length x headDim/],
    // One token: every loss is 0, and the check of the first loss against ln(1) = 0 ended the run with its stack.
    ["gpt2_train.ts --vocab 1", () => parseGpt2TrainFlags(["--backend", "js", "--sizes", "tiny", "--vocab", "1", "--out", out]), /^--vocab: expected at least 2 tokens, got "1" \(with one, every loss is 0/],
    // Checked only once the backend had started (CUDA's start, on a GPU).
    ["ffn.ts --dense-sampled sometimes", () => parseFfnFlags([...FFN, "--models", "ffn", "--widths", "64x128", "--blocks", "32", "--dense-sampled", "sometimes"]), /^--dense-sampled: expected auto, never or always, got "sometimes"$/],
    ["ffn.ts --dense-products 1", () => parseFfnFlags([...FFN, "--models", "ffn", "--widths", "64x128", "--blocks", "32", "--dense-products", "1"]), /^--dense-products: expected auto, never or always, got "1"$/],
    // Matched no product: timed nothing and printed the header alone, exit 0.
    ["cpu_addon.ts --only nothing", () => parseCpuAddonFlags(["--only", "nothing"]), /^--only: "nothing" is in no product's name; the names are: dense 256x1024x1024; bsrLinear b32 d0.25 256x1024x1024;/],
  ] as [string, () => unknown, RegExp][])("%s", (_, parse, message) => {
    expect(refusal(parse)).toMatch(message);
  });

  // The weights are drawn in float32 on the host whatever --dtype says: counted at bfloat16's size (ffn.ts) or not at
  // all (gpt2_train.ts, whose token embedding is vocab x width), runs that fit that count failed inside randn with an
  // out-of-memory stack. Sized from this machine's memory: the old count fitted it, the weights in float32 do not.
  it("ffn.ts and gpt2_train.ts count the weights in float32 against the host's memory", () => {
    const hidden = Math.ceil((0.1875 * totalmem()) / 1024); // 2 weights x 1024 x hidden: 0.75x the memory in bfloat16, 1.5x in float32
    const ffn = refusal(() => parseFfnFlags(["--backend", "js", "--dtype", "bfloat16", "--tokens", "1", "--only", "dense", "--models", "ffn", "--widths", `1024x${hidden}`, "--out", out]));
    expect(ffn).toMatch(new RegExp(`^--widths 1024x${hidden} and --tokens 1 needs \\d+\\.\\d GiB for the ffn model's input and activations in bfloat16 and weights in float32, and this machine has`));
    const vocab = Math.ceil(totalmem() / 128); // the logits: 2 bytes x vocab, 1/64 of the memory; the embedding: 64 x 4 bytes x vocab, twice it
    const gpt2 = refusal(() => parseGpt2TrainFlags(["--backend", "js", "--sizes", "tiny", "--batch", "1", "--context", "1", "--vocab", String(vocab), "--out", out]));
    expect(gpt2).toMatch(new RegExp(`^--batch 1, --context 1 and --vocab ${vocab} needs \\d+\\.\\d GiB for gpt2 tiny's logits and activations in bfloat16 and its weights in float32, and this machine has`));
    // The smallest vocabulary passes.
    expect(parseGpt2TrainFlags(["--backend", "js", "--sizes", "tiny", "--batch", "1", "--context", "1", "--vocab", "2", "--out", out])).toMatchObject({ vocab: 2 });
  });

  it("the largest generate.ts run GPT-2's positions hold passes (1024 positions: the last new token is never fed back)", () => {
    expect(parseGenerateFlags(["--backend", "js", "--sizes", "small", "--prompt", "1020", "--new", "5", "--modes", "eager"])).toMatchObject({ prompt: 1020, fresh: 5 });
  });

  it("attention.ts writes under benchmarks/results/tmp by default, wherever it runs (it wrote results/attention under the current folder)", () => {
    expect(parseAttentionFlags(ATTENTION.slice(0, -2)).outDir).toMatch(/benchmarks[\\/]results[\\/]tmp[\\/]attention$/);
  });

  it("--backend gpu: an unknown backend is a FlagError naming the flag (linear_shapes.ts, overhead.ts and the others)", async () => {
    const failure = await startBackend("gpu").catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(FlagError);
    expect((failure as Error).message).toMatch(/^--backend: unknown backend "gpu", expected cuda, cpu, js or auto/);
  });

  it("cpu_addon.ts --only matches the names it prints (\"bsrLinear 256x1024x1024\" matched the filter, not the printed name, and printed nothing)", () => {
    expect(productNames()).toContain("bsrLinear b32 d0.25 256x1024x1024");
    expect(productNames()).toContain("decode bsrLinear d0.25 batch 1");
    expect(parseCpuAddonFlags(["--only", "b32"])[0].only).toBe("b32");
    expect(refusal(() => parseCpuAddonFlags(["--only", "bsrLinear 256x1024x1024"]))).toMatch(/^--only: "bsrLinear 256x1024x1024" is in no product's name/);
  });

  it("decode_graph.ts parses its lists before the backend starts", () => {
    expect(parseDecodeGraphFlags(["--backend", "js", "--model", "ffn", "--width", "64", "--hidden", "128", "--tokens", "1,8", "--blocks", "32,64", "--densities", "0.5", "--out", out])).toMatchObject({
      tokenCounts: [1, 8], blocks: [32, 64], densities: [0.5],
    });
  });

  it("the smallest values the flags allow pass: one token, no warm-up, five steps, the dense model", () => {
    expect(parseEagerStepFlags(["--backend", "js", "--widths", "8x16", "--tokens", "1", "--block", "0", "--steps", "5", "--warmup", "0"])).toMatchObject({
      dModel: 8, hidden: 16, tokens: 1, block: 0, steps: 5, warmup: 0,
    });
  });
});

/** A script's real command line, once per script: a refusal is its message alone on stderr, exit 1, nothing on stdout. */
function expectRefused(result: { code: number; stdout: string; stderr: string }, message: RegExp): void {
  expect(result.stderr).toMatch(message);
  expect(result.code).toBe(1);
  expect(result.stderr).not.toMatch(/^\s+at /m);
  expect(result.stderr).not.toMatch(/dense: /);
  expect(result.stdout).toBe("");
}

describe.concurrent("each benchmark CLI's command line: one process per script", () => {
  it.each([
    ["generate.ts", ["--backend", "js", "--sizes", "small", "--modes", "eager,hasOwnProperty"], /^--modes: "hasOwnProperty" is not one of eager, static, graph\n$/],
    ["compare.ts", ["--backend", "js", "--small", "--dtypes", "toString", "--out", out], /^--dtypes: unknown "toString", expected float32, float16 or bfloat16\n$/],
    ["cpu_addon.ts", ["--repeats", "abc"], /^--repeats: "abc" is not a positive integer\n$/],
    ["ncu_steps_cli.ts", ["summary.txt", "--steps", "abc"], /^--steps: "abc" is not a positive integer\n$/],
    ["cpu_compare.ts", ["--rounds", "abc", "--out", out], /^--rounds: "abc" is not a positive integer\n$/],
    // An empty file printed an empty table (exit 0) with --steps, and stepTable's stack without.
    ["ncu_steps_cli.ts", [aFile, "--steps", "2"], /^.*a-file: no kernel with gpu__time_duration.sum in the summary/],
    ["ncu_steps_cli.ts", [aFile], /^.*a-file: no kernel with gpu__time_duration.sum in the summary/],
    // parseArgs' error thrown at the module's top level: its stack.
    ["ddp_nccl.ts", ["--bogus"], /^Unknown option '--bogus'/],
    ["ddp_nccl.ts", ["a", "b"], /^expected at most one OUT directory, got 2 arguments\n$/],
    // Every case is a captured replay beside eager calls: captureGraph threw with its stack on js.
    ["decode_graph.ts", ["--backend", "js", "--width", "64", "--hidden", "128", "--layers", "1", "--tokens", "1", "--blocks", "32", "--densities", "0.5", "--dtype", "float32", "--iterations", "2", "--out", out], /^--backend js: the js backend cannot record graphs, and every case is timed as a captured replay; run it where cuda starts\n$/],
    // Graphs alone on a backend without them: the model was built and a table of empty cells printed, exit 0.
    ["generate.ts", ["--backend", "js", "--sizes", "small", "--batch", "1", "--repeats", "1", "--prompt", "2", "--new", "2", "--modes", "graph"], /^--modes graph: the js backend cannot record graphs \(captureGraph needs cuda\); add eager or static\n$/],
    // Timed eager without a word, its table saying "eager".
    ["gpt2_train.ts", ["--backend", "js", "--sizes", "tiny", "--quick", "--graph", "--out", out], /^--graph: the js backend cannot record graphs \(captureGraph needs cuda\); leave out --graph to time eager steps\n$/],
    ["linear_shapes.ts", ["--backend", "js", "--rows", "100000", "--features", "100000", "--widths", "100000", "--out", out], /^--rows 100000, --features 100000 and --widths 100000 needs .* GiB for x, the weight and the output in float32/],
    // Checked in the fresh child process that measures start-up, and reported by its parent.
    ["overhead.ts", ["--backend", "gpu", "--dtype", "float32", "--out", out], /--backend: unknown backend "gpu"[\s\S]*the fresh process measuring start-up failed \(exit 1\); its error is above/],
  ] as [string, string[], RegExp][])("%s refuses a bad flag with its message alone and exit 1", async (script, args, message) => {
    expectRefused(await runCli(script, args), message);
  }, 90_000);

  // ffn.ts's one process: its flag checks are tested in-process above, and this refusal goes through the same catch.
  it("ffn.ts --graph on a backend without graphs (js) is refused before a case runs, not with captureGraph's stack", async () => {
    expectRefused(
      await runCli("ffn.ts", [...FFN, "--models", "ffn", "--widths", "64x128", "--blocks", "32", "--graph"]),
      /^--graph: the js backend cannot record graphs \(captureGraph needs cuda\); leave out --graph to time eager steps\n$/,
    );
  }, 90_000);

  // cli.ts exits 2 with its usage for a bad flag; --dtypes was read after --out was made and the backend started.
  it("cli.ts --dtypes toString is refused before --out is made or a backend starts", async () => {
    const fresh = join(out, "bench-not-made");
    const { code, stdout, stderr } = await runCli("cli.ts", ["--backend", "js", "--quick", "--dtypes", "toString", "--out", fresh]);
    expect(stderr).toMatch(/^--dtypes: unknown "toString", expected some of float32, float16, bfloat16\nusage: pnpm bench/);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(existsSync(fresh)).toBe(false);
  }, 90_000);

  it("eager_step.ts --backend auto names the backend that ran, not 'auto'", async () => {
    const { code, stdout } = await runCli("eager_step.ts", ["--backend", "auto", "--widths", "8x16", "--tokens", "1", "--block", "0", "--steps", "5", "--warmup", "0"]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^(cpu|js) 8x16 tokens 1 dense: [\d.]+ us\/step/);
  }, 90_000);

  it("eager_step.ts times one token per step without warm-up (it asked for 5 of each)", async () => {
    const { code, stdout, stderr } = await runCli("eager_step.ts", ["--backend", "js", "--widths", "8x16", "--tokens", "1", "--block", "0", "--steps", "5", "--warmup", "0"]);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout).toMatch(/^js 8x16 tokens 1 dense: [\d.]+ us\/step/);
  }, 90_000);
});
