/**
 * A language model's training step as a user writes it: models' GPT2LMHeadModel (random weights, Hugging Face's
 * initialisation) on a batch of token windows, cross-entropy over the whole vocabulary (50257 by default: an output
 * width off 16-byte alignment), backward, AdamW, in mixed precision (parameters in --dtype, float32 master weights
 * and moments in the optimizer). Dense, then with the feed-forward layers (every block's mlp.c_fc and mlp.c_proj)
 * block-sparse at each density. Before timing, each model's first loss is checked against the same model (the same
 * weights) run in float32. With --graph the whole step (forward, backward and AdamW made `capturable`) is captured
 * once and replayed; with --torch, Hugging Face's GPT2LMHeadModel (float32 parameters under autocast, fused AdamW,
 * the same loss on the same shapes; python/gpt2_train_torch.py) is timed in the same run, captured too with --graph
 * where PyTorch can capture it. --torch-compile also times the model under torch.compile (eager steps of the compiled
 * model, what nanoGPT-style scripts run). --profile writes where an eager step's time goes, kernel by kernel
 * (synchronized after each kernel: for finding costs, not for headline figures), to gpt2-train-profile.md.
 *
 *   tsx src/gpt2_train.ts [--backend cuda] [--sizes small,medium] [--batch 8] [--context 1024] [--vocab 50257]
 *     [--densities 0.25] [--blocks 32] [--dtype bfloat16] [--graph] [--torch] [--torch-compile] [--profile]
 *     [--quick] [--out DIR]
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { backward } from "@blocksparse/autograd";
import { type CapturedGraph, type FloatDType, captureGraph, getBackendInstance, randint, type Tensor, tidy } from "@blocksparse/core";
import { GPT2LMHeadModel } from "@blocksparse/models";
import { AdamW, crossEntropy, parameterCount } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { describeFailure, FlagError } from "./flags";
import { parseGpt2TrainFlags, SIZES, saneTolerance } from "./gpt2_train_flags";
import { profilePerRun, profileTable } from "./kernel_profile";
import { describeMachine, gitState, repoRoot } from "./machine";
import { type TimingPlan, measure } from "./measure";
import { startBackend } from "./start_backend";
import { type BenchDType, type Check, TOLERANCE } from "./validate";

interface Row {
  size: string;
  batch: number;
  context: number;
  vocab: number;
  dtype: string;
  /** 0 for the dense model. */
  block: number;
  density: number;
  parameters: number;
  medianMs: number;
  q1Ms: number;
  q3Ms: number;
  /** Our dense step / this step. */
  speedupVsDense?: number;
  /** PyTorch's step / ours (> 1: ours is faster). */
  vsTorch?: number;
  /** PyTorch's step under torch.compile / ours. */
  vsTorchCompiled?: number;
  checks: Check[];
  /** --profile: the eager step's kernels, a markdown table. */
  profile?: string;
}

interface TorchRow {
  size: string;
  batch: number;
  context: number;
  vocab: number;
  medianMs: number;
  graph: boolean;
  /** Timed under torch.compile. */
  compiled: boolean;
  torch: string;
  transformers: string;
  /** transformers' attention implementation (sdpa, eager, ...). */
  attention: string | null;
}

function buildModel(size: string, vocab: number, context: number, block: number, density: number): GPT2LMHeadModel {
  const config = { model_type: "gpt2", vocab_size: vocab, n_positions: context, ...SIZES[size], resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
  const model = new GPT2LMHeadModel(config, { seed: 1 });
  if (block > 0) {
    new BlockSparseModelPatcher().addPattern(/\.mlp\.c_(fc|proj)$/, { density, blockShape: [block, block] }).patchModel(model, { disposeReplaced: true });
  }
  return model;
}

function runCase(
  size: string,
  shape: { batch: number; context: number; vocab: number },
  block: number,
  density: number,
  dtype: BenchDType,
  options: { plan: TimingPlan; synchronize: () => void; graph: boolean; profile: boolean },
): Row {
  const { batch, context, vocab } = shape;
  const model = buildModel(size, vocab, context, block, density);
  const ids = randint(0, vocab, [batch, context], { seed: 11 });
  const targets = randint(0, vocab, [batch, context], { seed: 12 });
  const lossOf = (): Tensor => crossEntropy(model.forward(ids), targets);
  // The check: the first loss in the compute dtype against the same weights in float32 (and a sane value at
  // initialisation: near ln(vocab)).
  const float32Loss = tidy(() => lossOf().item());
  model.to(dtype as FloatDType);
  const lowLoss = tidy(() => lossOf().item());
  const relError = Math.abs(lowLoss - float32Loss) / Math.abs(float32Loss);
  const checks: Check[] = [
    { what: `first loss ${lowLoss.toFixed(4)} against float32's ${float32Loss.toFixed(4)}`, relError, tolerance: TOLERANCE[dtype], ok: relError <= TOLERANCE[dtype] },
    {
      what: `first loss ${float32Loss.toFixed(4)} near ln(vocab) = ${Math.log(vocab).toFixed(3)}`,
      relError: Math.abs(float32Loss - Math.log(vocab)) / Math.log(vocab),
      tolerance: saneTolerance(batch * context),
      ok: Math.abs(float32Loss - Math.log(vocab)) <= saneTolerance(batch * context) * Math.log(vocab),
    },
  ];
  const failed = checks.filter((c) => !c.ok);
  if (failed.length > 0) throw new Error(`gpt2 ${size} ${block === 0 ? "dense" : `${block}x${block} d=${density}`}: ${failed.map((c) => c.what).join("; ")}`);
  const optimizer = new AdamW(model.parameters(), { lr: 1e-4, weightDecay: 0, capturable: options.graph });
  let graph: CapturedGraph<Tensor> | undefined;
  try {
    const step = (): Tensor => {
      optimizer.zeroGrad();
      const loss = lossOf();
      backward(loss);
      optimizer.step();
      return loss;
    };
    const eager = (): Tensor => tidy(step);
    const run = options.graph
      ? (): Tensor => {
          if (graph === undefined) {
            eager().dispose(); // the optimizer's state, then the capture
            graph = captureGraph(step);
          }
          return graph.replay().clone();
        }
      : eager;
    const measured = measure(
      { name: `gpt2 ${size} step`, run, validate: (loss) => [{ what: "step's loss is finite", relError: 0, tolerance: 0, ok: Number.isFinite(loss.item()) }], dispose: (loss) => loss.dispose(), synchronize: options.synchronize },
      options.plan,
    );
    let profile: string | undefined;
    if (options.profile) {
      const kernels = profilePerRun(getBackendInstance(), options.synchronize, 2, eager);
      profile = profileTable(kernels, `gpt2 ${size} ${block === 0 ? "dense" : `${block}x${block} d=${density}`}, eager step (synchronized per kernel)`);
    }
    const s = measured.summary;
    return { size, batch, context, vocab, dtype, block, density: block === 0 ? 1 : density, parameters: parameterCount(model), medianMs: s.median, q1Ms: s.q1, q3Ms: s.q3, checks: [...checks, ...measured.checks], profile };
  } finally {
    if (graph) {
      graph.dispose();
      graph.result.dispose();
    }
    optimizer.dispose();
    for (const p of model.parameters()) p.dispose();
    ids.dispose();
    targets.dispose();
  }
}

function runTorch(cases: { size: string; batch: number; context: number; vocab: number }[], dtype: string, graph: boolean, compile: boolean): TorchRow[] {
  const script = join(repoRoot, "benchmarks", "python", "gpt2_train_torch.py");
  const sizes = Object.fromEntries(cases.map((c) => [c.size, SIZES[c.size]]));
  const args = [script, "--dtype", dtype, ...(graph ? ["--graph"] : []), ...(compile ? ["--compile"] : []), "--cases", JSON.stringify(cases), "--sizes", JSON.stringify(sizes)];
  const result = spawnSync("python3", args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (result.status !== 0) throw new Error(`gpt2_train_torch.py failed (exit ${result.status}): ${result.stdout}`);
  return JSON.parse(result.stdout) as TorchRow[];
}

async function main(): Promise<void> {
  const { values, dtype, sizes, batch, context, vocab, densities, blocks, outDir } = parseGpt2TrainFlags();
  const started = await startBackend(values.backend);
  const plan: TimingPlan = values.quick
    ? { warmup: 2, minRepeats: 3, maxRepeats: 8, budgetMs: 200, minSampleMs: 0 }
    : { warmup: 3, minRepeats: 8, maxRepeats: 30, budgetMs: 2000, minSampleMs: 0 };
  // Refused, as ffn.ts refuses it: the run was timed eager without a word.
  if (values.graph && getBackendInstance().graphs === undefined) {
    throw new FlagError(`--graph: the ${getBackendInstance().name} backend cannot record graphs (captureGraph needs cuda); leave out --graph to time eager steps`);
  }
  const graph = values.graph;
  const rows: Row[] = [];
  for (const size of sizes) {
    const shape = { batch, context, vocab };
    const dense = runCase(size, shape, 0, 1, dtype, { plan, synchronize: started.synchronize, graph, profile: values.profile });
    dense.speedupVsDense = 1;
    rows.push(dense);
    process.stderr.write(`gpt2 ${size} dense: ${dense.medianMs.toFixed(2)} ms per step\n`);
    for (const block of blocks) {
      for (const density of densities) {
        const row = runCase(size, shape, block, density, dtype, { plan, synchronize: started.synchronize, graph, profile: values.profile });
        row.speedupVsDense = dense.medianMs / row.medianMs;
        rows.push(row);
        process.stderr.write(`  ${block}x${block} d=${density}: ${row.medianMs.toFixed(2)} ms (${row.speedupVsDense.toFixed(2)}x dense)\n`);
      }
    }
  }
  let torchGraph = false;
  let torchRows: TorchRow[] = [];
  const withCompiled = values["torch-compile"];
  if (values.torch || withCompiled) {
    torchRows = runTorch(sizes.map((size) => ({ size, batch, context, vocab })), dtype, graph, withCompiled);
    for (const r of rows) {
      const t = torchRows.find((x) => x.size === r.size && !x.compiled);
      if (t) {
        r.vsTorch = t.medianMs / r.medianMs;
        torchGraph = t.graph;
      }
      const c = torchRows.find((x) => x.size === r.size && x.compiled);
      if (c) r.vsTorchCompiled = c.medianMs / r.medianMs;
    }
  }
  const torchLine = (t: TorchRow) =>
    `- PyTorch ${t.torch}, transformers ${t.transformers} (attention: ${t.attention ?? "unknown"}), ${t.size}${t.compiled ? ", torch.compile" : ""}${t.graph ? ", captured" : ""}: ${t.medianMs.toFixed(2)} ms per step`;
  const machine = describeMachine(started.gpu).name;
  const lines = [
    // float32 is no mixed precision: the parameters are the master weights.
    `# GPT-2 training steps (${dtype === "float32" ? "float32" : `${dtype} mixed precision`})`,
    "",
    `Machine: ${machine}. Backend ${started.backend}. Commit ${gitState().commit}. Step = forward + cross-entropy over the vocabulary + backward + AdamW (${dtype === "float32" ? "float32 throughout" : "float32 master weights and moments"}), batch ${batch} x context ${context}, vocabulary ${vocab}; ${graph ? "the whole step captured (captureGraph) and replayed" : "eager"}. Block-sparse rows: every block's mlp.c_fc and mlp.c_proj.`,
    ...(torchRows.length > 0 ? [`vs PyTorch = Hugging Face GPT2LMHeadModel's step (autocast ${dtype}, fused AdamW, ${torchGraph ? "captured with torch.cuda.graph" : "eager"}) / ours${withCompiled ? "; vs torch.compile = the same model compiled (torch.compile, default mode, eager steps) / ours" : ""}.`] : []),
    "",
    `| size | block | density | parameters | ms per step (median) | speed-up vs our dense | vs PyTorch |${withCompiled ? " vs torch.compile |" : ""}`,
    `| --- | --- | --- | --- | --- | --- | --- |${withCompiled ? " --- |" : ""}`,
    ...rows.map(
      (r) =>
        `| ${r.size} | ${r.block === 0 ? "dense" : `${r.block}x${r.block}`} | ${r.density} | ${r.parameters.toLocaleString("en-US")} | ${r.medianMs.toFixed(2)} | ${r.speedupVsDense?.toFixed(2) ?? ""} | ${r.vsTorch?.toFixed(2) ?? ""} |${withCompiled ? ` ${r.vsTorchCompiled?.toFixed(2) ?? ""} |` : ""}`,
    ),
    ...(torchRows.length > 0 ? ["", ...torchRows.map(torchLine)] : []),
    "",
  ];
  writeFileSync(join(outDir, "gpt2-train.md"), lines.join("\n"));
  const profiles = rows.flatMap((r) => (r.profile === undefined ? [] : [r.profile]));
  if (profiles.length > 0) writeFileSync(join(outDir, "gpt2-train-profile.md"), `${profiles.join("\n\n")}\n`);
  writeFileSync(
    join(outDir, "gpt2-train.json"),
    `${JSON.stringify({ machine, backend: started.backend, ...gitState(), date: new Date().toISOString(), dtype, batch, context, vocab, graph, rows: rows.map(({ profile, ...r }) => r), torch: torchRows }, null, 1)}\n`,
  );
  process.stdout.write(lines.join("\n"));
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exitCode = 1;
});
