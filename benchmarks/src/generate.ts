/**
 * GPT-2 generation as a user calls it: `model.generate(ids, { maxNewTokens })` on a randomly initialised GPT-2 of
 * a Hugging Face size, in the dtype, greedy, every sequence running all its steps. Three ways: eager with the
 * growing cache (`graph: false`), eager with the static cache (`graph: false, staticCache: true`) and the captured
 * step (`graph: true`, the default on cuda); each with dense layers and with the feed-forward layers patched block-sparse (32x32 blocks, each
 * density). The time per token is (time of N new tokens - time of 1) / (N - 1): the prompt's forward cancels. The
 * captured run's tokens are checked equal to the static eager run's first. With --torch, Hugging Face transformers'
 * GPT2LMHeadModel of the same size (python/generate_torch.py) is timed in the same run: `generate` with its dynamic
 * and static caches, and its decoding step written out over a static cache and captured in a CUDA graph.
 *
 *   tsx src/generate.ts [--backend cuda] [--sizes small,medium] [--batch 1,8] [--prompt 32] [--new 64]
 *     [--densities 0.25] [--modes eager,static,graph] [--dtype bfloat16] [--repeats 3] [--torch] [--out DIR]
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { getBackendInstance, randint, type Tensor } from "@blocksparse/core";
import { type GenerateOptions, GPT2_FFN_LAYERS, GPT2LMHeadModel } from "@blocksparse/models";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { describeFailure, FlagError } from "./flags";
import { type Mode, MODES, N_POSITIONS, parseGenerateFlags, SIZES } from "./generate_flags";
import { describeMachine, gitState, repoRoot } from "./machine";
import { plural } from "./report";
import { startBackend } from "./start_backend";
import { summarize } from "./stats";

interface Row {
  size: string;
  batch: number;
  density: number;
  mode: Mode;
  msPerToken: number;
}

interface TorchRow {
  size: string;
  batch: number;
  mode: string;
  msPerToken: number | null;
  error?: string;
}

function rows(t: Tensor): number[] {
  return Array.from(t.dataSync());
}

async function main(): Promise<void> {
  const { values, dtype, sizes, batches, prompt, fresh, repeats, densities, asked, outDir } = parseGenerateFlags();
  const started = await startBackend(values.backend);
  // The captured step needs a backend that records graphs (cuda): elsewhere it is left out, and refused when it is all
  // that was asked (the run built the model and printed a table of empty cells).
  const modes = (asked as Mode[]).filter((mode) => mode !== "graph" || getBackendInstance(started.backend).graphs !== undefined);
  if (modes.length === 0) throw new FlagError(`--modes graph: the ${started.backend} backend cannot record graphs (captureGraph needs cuda); add eager or static`);
  const results: Row[] = [];
  for (const size of sizes) {
    const config = { model_type: "gpt2", vocab_size: 50257, n_positions: N_POSITIONS, ...SIZES[size], resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
    for (const density of densities) {
      const model = new GPT2LMHeadModel(config, { seed: 1 });
      if (density < 1) new BlockSparseModelPatcher().addPattern(GPT2_FFN_LAYERS, { density }).patchModel(model, { disposeReplaced: true });
      model.to(dtype).eval();
      for (const batch of batches) {
        const ids = randint(0, config.vocab_size, [batch, prompt], { seed: 3 });
        const time = (options: GenerateOptions, tokens: number): number => {
          const start = performance.now();
          model.generate(ids, { ...options, maxNewTokens: tokens }).dispose();
          return performance.now() - start;
        };
        if (modes.includes("graph")) {
          // The captured step makes the static eager step's tokens.
          const staticTokens = model.generate(ids, { ...MODES.static, maxNewTokens: 8 });
          const graphTokens = model.generate(ids, { ...MODES.graph, maxNewTokens: 8 });
          if (rows(staticTokens).join() !== rows(graphTokens).join()) throw new Error(`${size} batch ${batch} density ${density}: the captured step's tokens differ from the static cache's`);
          staticTokens.dispose();
          graphTokens.dispose();
        }
        for (const mode of modes) {
          const options = MODES[mode];
          time(options, 4); // warm-up: kernels, patterns, the allocator
          const perToken = Array.from({ length: repeats }, () => (time(options, fresh) - time(options, 1)) / (fresh - 1));
          const msPerToken = summarize(perToken).median;
          results.push({ size, batch, density, mode, msPerToken });
          process.stderr.write(`${size} batch ${batch} ${density === 1 ? "dense" : `d=${density}`} ${mode}: ${msPerToken.toFixed(3)} ms/token\n`);
        }
        ids.dispose();
      }
      for (const p of model.parameters()) p.dispose();
    }
  }
  let torchRows: TorchRow[] = [];
  if (values.torch) {
    const script = join(repoRoot, "benchmarks", "python", "generate_torch.py");
    const flags = ["--sizes", sizes.join(","), "--batch", batches.join(","), "--prompt", String(prompt), "--new", String(fresh), "--dtype", dtype, "--repeats", String(repeats)];
    const run = spawnSync("python3", [script, ...flags], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
    if (run.status !== 0) throw new Error(`generate_torch.py failed (exit ${run.status}): ${run.stdout}`);
    torchRows = JSON.parse(run.stdout) as TorchRow[];
  }
  const machine = describeMachine(started.gpu).name;
  const cell = (r: Row | undefined) => (r === undefined ? "" : r.msPerToken.toFixed(3));
  const torchCell = (size: string, batch: number, mode: string) => {
    const t = torchRows.find((r) => r.size === size && r.batch === batch && r.mode === mode);
    return t === undefined ? "" : t.msPerToken === null ? "n/a" : t.msPerToken.toFixed(3);
  };
  const lines = [
    `# GPT-2 generation, ms per token (${dtype}, greedy)`,
    "",
    `Machine: ${machine}. Commit ${gitState().commit}. Randomly initialised GPT-2 of Hugging Face's sizes, a prompt of ${plural(prompt, "token")} per sequence, ${fresh} new ones; ms per token = (time of ${fresh} new tokens - time of 1) / ${fresh - 1}, the median of ${repeats}. Block-sparse rows: the feed-forward layers (c_fc, c_proj) patched to 32x32 blocks at the density.`,
    "",
    `| size | batch | layers | eager | static cache | captured (graph: true) | eager / captured |${values.torch ? " HF generate | HF generate, static cache | PyTorch captured step |" : ""}`,
    `| --- | --- | --- | --- | --- | --- | --- |${values.torch ? " --- | --- | --- |" : ""}`,
  ];
  for (const size of sizes) {
    for (const batch of batches) {
      for (const density of densities) {
        const of = (mode: Mode) => results.find((r) => r.size === size && r.batch === batch && r.density === density && r.mode === mode);
        const eager = of("eager");
        const graph = of("graph");
        const ratio = eager && graph ? (eager.msPerToken / graph.msPerToken).toFixed(2) : "";
        const torch = values.torch ? (density === 1 ? ` ${torchCell(size, batch, "generate")} | ${torchCell(size, batch, "generate-static")} | ${torchCell(size, batch, "captured")} |` : " | | |") : "";
        lines.push(`| ${size} | ${batch} | ${density === 1 ? "dense" : `FFN d=${density}`} | ${cell(eager)} | ${cell(of("static"))} | ${cell(graph)} | ${ratio} |${torch}`);
      }
    }
  }
  const errors = torchRows.filter((r) => r.error !== undefined);
  if (errors.length > 0) lines.push("", ...errors.map((r) => `- PyTorch ${r.size} batch ${r.batch} ${r.mode}: ${r.error}`));
  const report = `${lines.join("\n")}\n`;
  process.stdout.write(report);
  if (outDir !== undefined) {
    writeFileSync(join(outDir, "generate.md"), report);
    writeFileSync(join(outDir, "generate.json"), `${JSON.stringify({ machine, dtype, prompt, new: fresh, rows: results, torch: values.torch ? torchRows : undefined }, null, 1)}\n`);
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
});
