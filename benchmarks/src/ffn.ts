/**
 * The training step a user writes, at realistic shapes: a transformer FFN (Linear -> GELU ->
 * Linear, both block-sparse or both dense), a whole TransformerBlock with its FFN
 * block-sparse, or a language model's output layer alone ("head": one Linear from dModel to
 * "hidden" outputs, e.g. 768x50257 for GPT-2's vocabulary), forward + backward + AdamW, in mixed precision (parameters in the compute
 * dtype, float32 master weights and optimizer state). Each model's first step is checked
 * (the FFN's and the head's output rows against float64 math on the host; the block's output against the
 * same block run in float32), then timed. With --torch, PyTorch's dense step for the same
 * model (nn.Linear + GELU + AdamW under autocast) is timed in the same run by
 * python/ffn_torch.py.
 *
 *   tsx src/ffn.ts [--backend cuda|js] [--models ffn,block,head] [--widths 1024x4096,4096x4096]
 *     [--tokens 2048,8192] [--blocks 32,64,128,32x64] [--densities 0.5,0.25,0.1] [--dtype bfloat16]
 *     [--context 512] [--heads 16] [--torch] [--profile] [--out results/ffn] [--quick]
 *     [--dense-sampled auto|never|always] [--dense-products auto|never|always] [--autotune] [--only both|dense|sparse]
 *     [--graph] [--graph-eager-optimizer]
 * --profile prints, per case, where a step's time goes kernel by kernel (synchronized: each entry includes
 * the host's launch and a round trip, ~20 us on an H200, so small kernels read high; for device times use
 * scripts/gpu-step-kernels.sh, which runs this script under Nsight Compute).
 * --dense-sampled forces the route of the weight gradient on cuda (the block kernels, or cuBLAS's
 * dense product with the blocks sampled from it); auto is the backend's own choice. --dense-products does the
 * same for bsrLinear and bsrMatmul (the block kernels, or cuBLAS over W's blocks scattered into a dense scratch).
 * --only runs the dense model or the block-sparse ones alone (no speed-up column without the dense one;
 * for profilers: scripts/gpu-step-kernels.sh).
 * --autotune turns on the cuda backend's first-use autotuning of the block-sparse products (the
 * validation step, untimed, tunes each shape; the records are printed to stderr at the end).
 * --graph records each model's whole training step once with captureGraph (forward, backward and AdamW made with
 * `capturable: true`, after a first eager step at lr 0) and times replay(): one launch instead of a host call per
 * kernel (cuda's CUDA graphs). With --graph-eager-optimizer only forward and backward are recorded, and AdamW (not
 * capturable) runs eagerly after each replay, as before the optimizer could be captured.
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { backward } from "@blocksparse/autograd";
import { type CapturedGraph, type FloatDType, captureGraph, cast, getBackendInstance, memory, randn, type Tensor, tensor, tidy } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, GELU, Linear, type Module, Sequential, TransformerBlock, parameterCount } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { writeStepCharts } from "./ffn_chart";
import { describeMachine, gitState, repoRoot } from "./machine";
import { startBackend } from "./start_backend";
import { profilePerRun, profileTable } from "./kernel_profile";
import { type TimingPlan, measure } from "./measure";
import { pickRows } from "./reference";
import { type BenchDType, type Check, TOLERANCE, compareToReference, spreadIndices } from "./validate";
import { describeFailure, FlagError } from "./flags";
import { type ModelKind, parseFfnFlags } from "./ffn_flags";

export interface FfnCase {
  model: ModelKind;
  dModel: number;
  hidden: number;
  tokens: number;
  dtype: BenchDType;
  /** The block's rows; 0 for the dense model. */
  block: number;
  /** The block's columns where they differ from its rows. */
  blockCols?: number;
  density: number;
  parameters: number;
  medianMs: number;
  q1Ms: number;
  q3Ms: number;
  /** Dense step time / this step time, both ours (1 for the dense model). */
  speedupVsDense?: number;
  /** PyTorch's dense step time / ours (> 1: ours is faster). */
  vsTorchDense?: number;
  checks: Check[];
}

const SEED = 2026;

function buildModel(kind: ModelKind, dModel: number, hidden: number, block: [number, number] | null, density: number, heads: number): Module {
  const layer = (inF: number, outF: number, seed: number): Module =>
    block === null ? new Linear(inF, outF, { seed }) : new BlockSparseLinear(inF, outF, { density, blockShape: block, seed });
  if (kind === "ffn") return new Sequential(layer(dModel, hidden, SEED + 1), new GELU("tanh"), layer(hidden, dModel, SEED + 2));
  if (kind === "head") return layer(dModel, hidden, SEED + 4);
  const model = new TransformerBlock({ dModel, nHeads: heads, mlpRatio: hidden / dModel, seed: SEED + 3 });
  if (block !== null) {
    new BlockSparseModelPatcher().addPattern(/^mlp\.fc[12]$/, { density, blockShape: block }).patchModel(model, { disposeReplaced: true });
  }
  return model;
}

/** A layer's weight and bias as dense host arrays. */
function denseLayer(m: Module): { w: Float32Array; b: Float32Array } {
  const w = m instanceof BlockSparseLinear ? tidy(() => Float32Array.from(cast(m.toDense(), "float32").dataSync())) : Float32Array.from((m as Linear).weight.value.dataSync());
  const bias = (m as Linear | BlockSparseLinear).bias;
  return { w, b: Float32Array.from(bias ? bias.value.dataSync() : new Float32Array()) };
}

/** float64 rows of one layer: x W^T + b on the host. */
function headReferenceRows(model: Module, xHost: Float32Array, dModel: number, width: number, rows: number[]): Float64Array {
  const { w, b } = denseLayer(model);
  const out = new Float64Array(rows.length * width);
  rows.forEach((row, r) => {
    for (let j = 0; j < width; j++) {
      let s = b[j] ?? 0;
      for (let k = 0; k < dModel; k++) s += xHost[row * dModel + k] * w[j * dModel + k];
      out[r * width + j] = s;
    }
  });
  return out;
}

/** float64 FFN rows: gelu_tanh(x W1^T + b1) W2^T + b2 on the host, from the weights as dense arrays. */
function ffnReferenceRows(model: Sequential, xHost: Float32Array, dModel: number, hidden: number, rows: number[]): Float64Array {
  const [first, , second] = model.children();
  const l1 = denseLayer(first);
  const l2 = denseLayer(second);
  const out = new Float64Array(rows.length * dModel);
  const h = new Float64Array(hidden);
  rows.forEach((row, r) => {
    for (let j = 0; j < hidden; j++) {
      let s = l1.b[j] ?? 0;
      for (let k = 0; k < dModel; k++) s += xHost[row * dModel + k] * l1.w[j * dModel + k];
      h[j] = 0.5 * s * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (s + 0.044715 * s * s * s)));
    }
    for (let i = 0; i < dModel; i++) {
      let s = l2.b[i] ?? 0;
      for (let j = 0; j < hidden; j++) s += h[j] * l2.w[i * hidden + j];
      out[r * dModel + i] = s;
    }
  });
  return out;
}

function runCase(
  kind: ModelKind,
  dModel: number,
  hidden: number,
  tokens: number,
  block: [number, number] | null,
  density: number,
  dtype: BenchDType,
  options: {
    heads: number;
    context: number;
    plan: TimingPlan;
    synchronize: () => void;
    setPoison: (on: boolean) => void;
    profile: boolean;
    graph: boolean;
    graphEagerOptimizer: boolean;
  },
): FfnCase {
  const model = buildModel(kind, dModel, hidden, block, density, options.heads);
  const shape = kind === "block" ? [tokens / options.context, options.context, dModel] : [tokens, dModel];
  const outShape = kind === "head" ? [tokens, hidden] : shape;
  const outWidth = outShape[outShape.length - 1];
  const xHost = Float32Array.from(tidy(() => randn([tokens * dModel], { seed: SEED }).dataSync()));
  const rows = spreadIndices(tokens, 4);
  // The float64 reference reads the float32 weights as the low-precision model will hold them.
  const reference =
    kind === "ffn"
      ? ffnReferenceRows(model.to(dtype as FloatDType).to("float32") as Sequential, roundTo(xHost, dtype), dModel, hidden, rows)
      : kind === "head"
        ? headReferenceRows(model.to(dtype as FloatDType).to("float32"), roundTo(xHost, dtype), dModel, hidden, rows)
        : undefined;
  const float32Out = kind === "block" ? tidy(() => Float32Array.from((model as TransformerBlock).forward(tensor(xHost, shape)).dataSync())) : undefined;
  model.to(dtype as FloatDType);
  const x = tidy(() => cast(tensor(xHost, shape), dtype as FloatDType));
  const dy = tidy(() => cast(randn(outShape, { seed: SEED + 7, std: 1 / Math.sqrt(tokens) }), dtype as FloatDType));
  const lr = 1e-4;
  const wholeStep = options.graph && !options.graphEagerOptimizer;
  const optimizer = new AdamW(model.parameters(), { lr, weightDecay: 0, capturable: wholeStep });
  let graph: CapturedGraph<Tensor> | undefined;
  try {
    const forwardBackward = (): Tensor => {
      optimizer.zeroGrad();
      const out = model.forward(x);
      backward(out, dy);
      return out;
    };
    const eager = (): Tensor => {
      const y = tidy(forwardBackward);
      optimizer.step();
      return y;
    };
    const trainingStep = (): Tensor => {
      const out = forwardBackward();
      optimizer.step();
      return out;
    };
    const recorded = wholeStep ? trainingStep : forwardBackward;
    // With --graph, forward and backward are recorded after one eager pass (kernels load, patterns upload; no
    // update, so the weights are still the ones the reference used). The checked first step is a replay of a
    // graph recorded with poisoned allocations (its fills inside), then dropped; the timed steps replay a graph
    // recorded without them. A step returns the graph's output shared, so the caller may dispose its handle.
    let checked = false;
    const replayStep = (g: CapturedGraph<Tensor>): Tensor => {
      const y = g.replay().clone();
      if (!wholeStep) optimizer.step();
      return y;
    };
    const run = !options.graph
      ? eager
      : (): Tensor => {
          if (!checked) {
            checked = true;
            if (wholeStep) {
              // The optimizer's state is made by an eager step; at lr 0 (no weight decay) it leaves the weights
              // the reference used.
              optimizer.lr = 0;
              tidy(trainingStep).dispose();
              optimizer.lr = lr;
            } else {
              tidy(forwardBackward).dispose();
            }
            const first = captureGraph(recorded);
            const y = replayStep(first);
            first.dispose();
            first.result.dispose();
            return y;
          }
          graph ??= captureGraph(recorded);
          return replayStep(graph);
        };
    const validate = (y: Tensor): Check[] => {
      const got = y.dataSync();
      if (reference) return [compareToReference(`${kind === "head" ? "head" : "FFN"} output rows ${rows.join(", ")}`, pickRows(got, outWidth, rows), reference, TOLERANCE[dtype] * 2)];
      return [compareToReference("block output vs the float32 block", got, float32Out as Float32Array, TOLERANCE[dtype] * 2)];
    };
    const measured = measure({ name: `${kind} step`, run, validate, dispose: (y) => y.dispose(), synchronize: options.synchronize, setPoison: options.setPoison }, options.plan);
    if (options.profile) {
      const profile = profilePerRun(getBackendInstance(), options.synchronize, 3, run);
      const label = `${kind} ${dModel}x${hidden} tokens ${tokens} ${block === null ? "dense" : `${block.join("x")} d=${density}`}, per step`;
      process.stderr.write(`\n${profileTable(profile, label)}\n`);
    }
    const s = measured.summary;
    return { model: kind, dModel, hidden, tokens, dtype, block: block?.[0] ?? 0, ...(block !== null && block[1] !== block[0] ? { blockCols: block[1] } : {}), density: block === null ? 1 : density, parameters: parameterCount(model), medianMs: s.median, q1Ms: s.q1, q3Ms: s.q3, checks: measured.checks };
  } finally {
    if (graph) {
      graph.dispose();
      graph.result.dispose();
    }
    optimizer.dispose();
    for (const p of model.parameters()) p.dispose();
    x.dispose();
    dy.dispose();
  }
}

/** Host values rounded to `dtype` and widened back, as the device will hold them. */
function roundTo(values: Float32Array, dtype: BenchDType): Float32Array {
  if (dtype === "float32") return values;
  return tidy(() => Float32Array.from(cast(cast(tensor(values, [values.length]), dtype), "float32").dataSync()));
}

interface TorchRow {
  model: ModelKind;
  dModel: number;
  hidden: number;
  tokens: number;
  medianMs: number;
}

function runTorch(
  cases: { model: string; dModel: number; hidden: number; tokens: number }[],
  dtype: string,
  context: number,
  heads: number,
  graph: boolean,
  outFile: string,
): TorchRow[] {
  const script = join(repoRoot, "benchmarks", "python", "ffn_torch.py");
  const args = [script, "--dtype", dtype, "--context", String(context), "--heads", String(heads), ...(graph ? ["--graph"] : []), "--out", outFile, "--cases", JSON.stringify(cases)];
  const result = spawnSync("python3", args, {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (result.status !== 0) throw new Error(`ffn_torch.py failed (exit ${result.status}): ${result.stdout}`);
  return JSON.parse(result.stdout) as TorchRow[];
}

function markdown(
  rows: FfnCase[],
  meta: { machine: string; backend: string; commit: string; dtype: string; torch: boolean; denseSampled: string; denseProducts: string; autotune: boolean; graph: boolean; graphEagerOptimizer: boolean },
  charts: string[] = [],
): string {
  const lines = [
    `# Training steps: ${[...new Set(rows.map((r) => r.model))].join(", ")} (${meta.dtype === "float32" ? "float32" : `${meta.dtype} mixed precision`})`,
    "",
    `Machine: ${meta.machine}. Backend ${meta.backend}. Commit ${meta.commit}. Step = forward + backward + AdamW (${meta.dtype === "float32" ? "float32 throughout" : "float32 master weights and state"}).${meta.denseSampled === "auto" ? "" : ` Weight gradients forced to the ${meta.denseSampled === "always" ? "dense-product" : "block-kernel"} route.`}${meta.denseProducts === "auto" ? "" : ` bsrLinear and bsrMatmul forced to the ${meta.denseProducts === "always" ? "dense-product" : "block-kernel"} route.`}${meta.autotune ? " Block-sparse products autotuned on first use." : ""}${meta.graph ? (meta.graphEagerOptimizer ? " Forward and backward replayed as one captured graph (captureGraph), AdamW after each replay." : " The whole step (forward, backward and AdamW with capturable: true) replayed as one captured graph (captureGraph).") : ""}`,
    `speed-up = our dense step / this step (> 1: faster than dense); vs PyTorch = PyTorch's dense step (${meta.dtype === "float32" ? "float32, TF32 off" : "autocast"}${meta.graph && !meta.graphEagerOptimizer ? ", captured the same way: torch.cuda.graph with AdamW(capturable=True)" : ", eager"}) / this step.`,
    "",
    "| model | dModel x hidden | tokens | block | density | parameters | ms (median) | speed-up vs our dense | vs PyTorch dense |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.model} | ${r.dModel}x${r.hidden} | ${r.tokens} | ${r.block === 0 ? "dense" : `${r.block}x${r.blockCols ?? r.block}`} | ${r.density} | ${r.parameters.toLocaleString("en-US")} | ${r.medianMs.toFixed(3)} | ${r.speedupVsDense?.toFixed(2) ?? ""} | ${r.vsTorchDense?.toFixed(2) ?? ""} |`,
    );
  }
  if (charts.length > 0) lines.push("", ...charts.map((file) => `![${file}](charts/${file})`));
  return `${lines.join("\n")}\n`;
}

async function main(): Promise<void> {
  const { values, dtype, models, context, heads, widthPairs, tokenCounts, shapes, densities, only, denseSampled: route, denseProducts: productRoute, outDir } = parseFfnFlags();
  const started = await startBackend(values.backend);
  const backend = getBackendInstance();
  // Refused before any case runs: captureGraph threw from inside the first timed case, with its stack.
  if (values.graph && backend.graphs === undefined) {
    throw new FlagError(`--graph: the ${backend.name} backend cannot record graphs (captureGraph needs cuda); leave out --graph to time eager steps`);
  }
  const tuning = backend as { setAutotune?: (on: boolean) => boolean; autotuneRecords?: () => { product: string; epilogue?: string; m: number; rows: number; cols: number; nnzBlocks: number; blockShape: number[]; route: string; timings: { route: string; ms: number }[] }[] };
  if (values.autotune) {
    if (typeof tuning.setAutotune !== "function") throw new FlagError(`--autotune: the ${backend.name} backend does not tune its products`);
    tuning.setAutotune.call(backend, true);
  }
  if (route !== "auto") {
    const setMode = (backend as { setDenseSampledMode?: (mode: string) => string }).setDenseSampledMode;
    if (typeof setMode !== "function") throw new FlagError(`--dense-sampled ${route}: the ${backend.name} backend has one route for the weight gradient`);
    setMode.call(backend, route);
  }
  if (productRoute !== "auto") {
    const setMode = (backend as { setDenseProductMode?: (mode: string) => string }).setDenseProductMode;
    if (typeof setMode !== "function") throw new FlagError(`--dense-products ${productRoute}: the ${backend.name} backend has one route for bsrLinear and bsrMatmul`);
    setMode.call(backend, productRoute);
  }
  const plan: TimingPlan = values.quick
    ? { warmup: 2, minRepeats: 3, maxRepeats: 10, budgetMs: 100, minSampleMs: 5 }
    : { warmup: 3, minRepeats: 10, maxRepeats: 40, budgetMs: 400, minSampleMs: 10 };
  const options = { heads, context, plan, synchronize: started.synchronize, setPoison: (on: boolean) => {
      backend.poisonAllocations = on;
    },
    profile: values.profile, graph: values.graph, graphEagerOptimizer: values["graph-eager-optimizer"] };
  const rows: FfnCase[] = [];
  const machine = describeMachine(started.gpu).name;
  const meta = { machine, backend: started.backend, commit: gitState().commit, dtype, torch: values.torch, denseSampled: route, denseProducts: productRoute, autotune: values.autotune, graph: values.graph, graphEagerOptimizer: values["graph-eager-optimizer"] };
  // Written after every case, so that a run cut short keeps what it measured.
  const save = () => {
    writeFileSync(join(outDir, "ffn.json"), `${JSON.stringify({ ...meta, date: new Date().toISOString(), rows }, null, 1)}\n`);
    const charts = writeStepCharts(rows, join(outDir, "charts"), values.graph ? "captured" : "");
    writeFileSync(join(outDir, "ffn.md"), markdown(rows, meta, charts));
  };
  for (const model of models) {
    for (const [dModel, hidden] of widthPairs) {
      for (const tokens of tokenCounts) {
        let dense: FfnCase | undefined;
        if (only !== "sparse") {
          dense = runCase(model, dModel, hidden, tokens, null, 1, dtype, options);
          dense.speedupVsDense = 1;
          rows.push(dense);
          save();
          process.stderr.write(`${model} ${dModel}x${hidden} tokens ${tokens} dense: ${dense.medianMs.toFixed(3)} ms\n`);
        }
        if (only === "dense") continue;
        for (const block of shapes) {
          for (const density of densities) {
            const row = runCase(model, dModel, hidden, tokens, block, density, dtype, options);
            if (dense) row.speedupVsDense = dense.medianMs / row.medianMs;
            rows.push(row);
            save();
            process.stderr.write(`  ${block.join("x")} d=${density}: ${row.medianMs.toFixed(3)} ms${row.speedupVsDense === undefined ? "" : ` (${row.speedupVsDense.toFixed(2)}x dense)`}, live tensors ${memory().numTensors}\n`);
          }
        }
      }
    }
  }
  if (values.torch) {
    const keys = [...new Map(rows.map((r) => [`${r.model}/${r.dModel}/${r.hidden}/${r.tokens}`, { model: r.model, dModel: r.dModel, hidden: r.hidden, tokens: r.tokens }])).values()];
    // PyTorch's step is captured as ours is when the whole step is (its own CUDA graph and capturable AdamW).
    const torchGraph = values.graph && !values["graph-eager-optimizer"];
    const torchRows = runTorch(keys, dtype, context, heads, torchGraph, join(outDir, "torch.json"));
    for (const r of rows) {
      const t = torchRows.find((x) => x.model === r.model && x.dModel === r.dModel && x.hidden === r.hidden && x.tokens === r.tokens);
      if (t) r.vsTorchDense = t.medianMs / r.medianMs;
    }
  }
  save();
  if (values.autotune && typeof tuning.autotuneRecords === "function") {
    for (const r of tuning.autotuneRecords.call(backend)) {
      const timings = r.timings.map((t) => `${t.route} ${(t.ms * 1000).toFixed(1)} us`).join("; ");
      const fused = r.epilogue !== undefined && r.epilogue !== "none" ? ` + ${r.epilogue}` : "";
      const density = (r.nnzBlocks * r.blockShape[0] * r.blockShape[1]) / (r.rows * r.cols);
      process.stderr.write(`autotune ${r.product}${fused} ${r.rows}x${r.cols} ${r.blockShape.join("x")} d=${density.toFixed(2)} m=${r.m}: ${r.route} (${timings})\n`);
    }
  }
  process.stdout.write(markdown(rows, meta));
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exitCode = 1;
});
