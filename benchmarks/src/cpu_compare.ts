/**
 * The native cpu backend against the machine's BLAS, side by side: dense matmul against NumPy
 * (OpenBLAS), the three block-sparse products against that dense rate and SciPy's BSR product,
 * batch-1 bsrLinear against dense batch 1 and against the time to read its weights at the memory
 * bandwidth measured here. The machine may be shared, so ours and NumPy's calls alternate in
 * rounds (ours, then NumPy's, R times): a figure is the best of its rounds, each round's best is
 * kept, and "ours ÷ theirs" is also given round by round (two figures from the same minute). Each
 * of our products is first checked against the js backend on the same inputs. NumPy and SciPy run
 * when `python3 -c "import numpy, scipy"` works, else a line says they were skipped.
 *
 *   tsx src/cpu_compare.ts [--repeats N] [--rounds R] [--out DIR]   (writes DIR/<machine>/cpu-comparison.{json,md})
 */
import "@blocksparse/backend-cpu";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { cpuAvailability, cpuBackend } from "@blocksparse/backend-cpu";
import { BsrPattern, type Tensor, bsrLinear, bsrMatmul, matmul, randn, sampledMatmul, setBackend, tidy } from "@blocksparse/core";
import { describeMachine, gitState, repoRoot } from "./machine";
import { copyBandwidth } from "./copy_bandwidth";
import { COMPARISON_HEAD, vsOurDense } from "./cpu_compare_table";
import { parseCpuCompareFlags } from "./cpu_compare_flags";
import { describeFailure, FlagError, outputDirectory } from "./flags";
import { ValidationError } from "./measure";
import { plural } from "./report";
import { compareMaxRelative } from "./validate";

/** A bad flag's message alone, exit 1: checked at the top level, before minutes of timing, with no caller to catch it. */
function refuse(error: unknown): never {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
}

const [repeats, rounds, outDir] = (() => {
  try {
    const args = parseCpuCompareFlags();
    const checked = [args.repeats, args.rounds] as const;
    // Made now, not after the run: an --out that cannot be written fails before minutes of timing.
    const dir = outputDirectory(join(resolve(args.out ?? join(repoRoot, "benchmarks", "results")), describeMachine().name), "out");
    const cpu = cpuAvailability();
    if (!cpu.available) throw new FlagError(`the native cpu backend this compares is unavailable: ${cpu.reason ?? "no reason given"}`);
    return [...checked, dir] as const;
  } catch (error) {
    return refuse(error);
  }
})();
const DENSE_SHAPES: [number, number, number][] = [
  [256, 1024, 1024],
  [2048, 1024, 4096],
];
const BLOCK = 32;
const DENSITY = 0.25;
const DECODE = 4096;
// Layers of the batch-1 stack: their weights (8 x 16 MiB block-sparse, 8 x 64 MiB dense) are more
// than the last-level cache, so each layer reads its weights from memory, as in a model's decode step.
const LAYERS = 8;

// Read between calls of a cold-cache measurement, so the weights come from memory: 512 MiB, more
// than the last-level caches (cpuid reports 508 MiB of L3 on the 2-core cloud machine these figures
// come from; its two cores sit on different L3 slices, so every thread must stream it: a product does).
const FLUSH_COLUMNS = 16384;
let flushWeights: Tensor | undefined;
let flushInput: Tensor | undefined;
const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** Evicts the weights from every core's caches, then idles 5 ms so the thread pool's workers sleep, as between requests. */
function flushCaches(): void {
  flushWeights ??= randn([FLUSH_COLUMNS, DECODE * 2], { seed: 99 });
  flushInput ??= randn([1, DECODE * 2], { seed: 98 });
  matmul(flushInput, flushWeights, { transposeB: true }).dispose();
  Atomics.wait(sleeper, 0, 0, 5);
}

/** Best of N calls; with `cold`, the caches are flushed (untimed) before each call. */
function bestMs(run: () => Tensor, cold = false): number {
  run().dispose();
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < repeats; i++) {
    if (cold) flushCaches();
    const start = performance.now();
    // The cpu backend is synchronous: the output is complete when the op returns. Reading it back
    // (a copy NumPy's figure does not include) is measured apart, by readBackMs.
    const out = run();
    best = Math.min(best, performance.now() - start);
    out.dispose();
  }
  return best;
}

/** Best of N passes through every layer back to back, per layer. */
function bestLayerMs(layers: (() => Tensor)[]): number {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i <= repeats; i++) {
    const start = performance.now();
    const outs = layers.map((layer) => layer());
    const ms = (performance.now() - start) / layers.length;
    if (i > 0) best = Math.min(best, ms);
    for (const out of outs) out.dispose();
  }
  return best;
}

/**
 * Our products against js's on the same float32 inputs: max |ours - js| / max |js| (a few 1e-7 from summation order).
 * NaN or infinity on either side, or an error past this, stops the run before anything is timed as if it were right.
 */
const JS_TOLERANCE = 1e-4;

/** max |ours - js| / max |js| over the whole output; throws ValidationError when the products disagree. */
function checkAgainstJs(what: string, run: () => Tensor, inputs: Tensor[], runJs: (moved: Tensor[]) => Tensor): number {
  return tidy(() => {
    const check = compareMaxRelative(`${what} against js`, run().dataSync(), runJs(inputs.map((t) => t.to("js"))).dataSync(), JS_TOLERANCE);
    if (!check.ok) throw new ValidationError(what, [check]);
    return check.relError;
  });
}

/** Best time to read a result back (dataSync: a copy into new memory). */
function readBackMs(out: Tensor): number {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    out.dataSync();
    best = Math.min(best, performance.now() - start);
  }
  return best;
}

interface Row {
  what: string;
  M: number;
  K: number;
  N: number;
  flop: number;
  /** Best over every round. */
  ms: number;
  gflops: number;
  /** Each round's best. */
  roundMs: number[];
  checkError?: number;
}

function row(what: string, [M, K, N]: [number, number, number], flop: number, ms: number, checkError?: number): Row {
  return { what, M, K, N, flop, ms, gflops: flop / (ms * 1e6), roundMs: [ms], ...(checkError === undefined ? {} : { checkError }) };
}

interface PythonResult {
  numpy?: string;
  scipy?: string;
  blas?: string;
  dense: { M: number; K: number; N: number; ms: number }[];
  bsr: { M: number; K: number; N: number; ms: number; nnzBlocks: number }[];
  stack: { M: number; K: number; N: number; layers: number; ms: number }[];
}

function python(spec: object): { result?: PythonResult; skipped?: string } {
  const probe = spawnSync("python3", ["-c", "import numpy, scipy"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) return { skipped: `python3 with numpy and scipy not found (${probe.error?.message ?? probe.stderr.trim().split("\n").pop()})` };
  const env = { ...process.env };
  // Let OpenBLAS pick its kernels for this CPU.
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const run = spawnSync("python3", [join(repoRoot, "benchmarks", "cpu_compare.py"), JSON.stringify(spec)], { encoding: "utf8", env, maxBuffer: 1 << 24 });
  if (run.status !== 0) return { skipped: `cpu_compare.py failed: ${run.stderr.trim().split("\n").pop()}` };
  return { result: JSON.parse(run.stdout) as PythonResult };
}

/** The batch-1 inputs, made once for every round. */
interface DecodeInputs {
  x: Tensor;
  w: Tensor;
  pattern: BsrPattern;
  values: Tensor;
  denseLayers: Tensor[];
  sparseLayers: { pattern: BsrPattern; values: Tensor }[];
}

function decodeInputs(): DecodeInputs {
  const pattern = BsrPattern.random([DECODE, DECODE], { blockShape: [BLOCK, BLOCK], density: DENSITY, seed: 8 });
  const sparseLayers = Array.from({ length: LAYERS }, (_, i) => {
    const layerPattern = BsrPattern.random([DECODE, DECODE], { blockShape: [BLOCK, BLOCK], density: DENSITY, seed: 20 + i });
    return { pattern: layerPattern, values: randn([layerPattern.nnzBlocks, BLOCK, BLOCK], { seed: 40 + i }) };
  });
  return {
    x: randn([1, DECODE], { seed: 6 }),
    w: randn([DECODE, DECODE], { seed: 7 }),
    pattern,
    values: randn([pattern.nnzBlocks, BLOCK, BLOCK], { seed: 9 }),
    denseLayers: Array.from({ length: LAYERS }, (_, i) => randn([DECODE, DECODE], { seed: 60 + i })),
    sparseLayers,
  };
}

/** One round of our products; the first round also checks them against js and times read-backs. */
function measureOurs(first: boolean, decode: DecodeInputs, readBacks: { shape: [number, number]; ms: number }[]): Row[] {
  const rows: Row[] = [];
  for (const shape of DENSE_SHAPES) {
    const [M, K, N] = shape;
    tidy(() => {
      const x = randn([M, K], { seed: 1 });
      const wDense = randn([K, N], { seed: 2 });
      const small = first && M <= 256;
      const check = small ? checkAgainstJs("dense matmul", () => matmul(x, wDense), [x, wDense], ([a, b]) => matmul(a, b)) : undefined;
      rows.push(row("dense matmul", shape, 2 * M * N * K, bestMs(() => matmul(x, wDense)), check));
      if (first) readBacks.push({ shape: [M, N], ms: readBackMs(matmul(x, wDense)) });
      const pattern = BsrPattern.random([N, K], { blockShape: [BLOCK, BLOCK], density: DENSITY, seed: 3 });
      const values = randn([pattern.nnzBlocks, BLOCK, BLOCK], { seed: 4 });
      const dy = randn([M, N], { seed: 5 });
      const flop = 2 * M * pattern.nnzBlocks * BLOCK * BLOCK;
      rows.push(row(`bsrLinear b${BLOCK} d${DENSITY}`, shape, flop, bestMs(() => bsrLinear(x, values, pattern)), small ? checkAgainstJs("bsrLinear", () => bsrLinear(x, values, pattern), [x, values], ([a, v]) => bsrLinear(a, v, pattern)) : undefined));
      rows.push(row(`bsrMatmul b${BLOCK} d${DENSITY}`, shape, flop, bestMs(() => bsrMatmul(dy, values, pattern)), small ? checkAgainstJs("bsrMatmul", () => bsrMatmul(dy, values, pattern), [dy, values], ([d, v]) => bsrMatmul(d, v, pattern)) : undefined));
      rows.push(row(`sampledMatmul b${BLOCK} d${DENSITY}`, shape, flop, bestMs(() => sampledMatmul(dy, x, pattern)), small ? checkAgainstJs("sampledMatmul", () => sampledMatmul(dy, x, pattern), [dy, x], ([d, a]) => sampledMatmul(d, a, pattern)) : undefined));
    });
  }
  // Batch 1: y = x W^T with W [4096, 4096], dense and at density 0.25.
  const { x, w, pattern, values, denseLayers, sparseLayers } = decode;
  const decodeShape: [number, number, number] = [1, DECODE, DECODE];
  const denseFlop = 2 * DECODE * DECODE;
  const sparseFlop = 2 * pattern.nnzBlocks * BLOCK * BLOCK;
  rows.push(row("dense x·Wᵀ, batch 1", decodeShape, denseFlop, bestMs(() => matmul(x, w, { transposeB: true }))));
  rows.push(row("dense x·Wᵀ, batch 1, cold cache", decodeShape, denseFlop, bestMs(() => matmul(x, w, { transposeB: true }), true)));
  rows.push(row(`dense x·Wᵀ, batch 1, ${LAYERS}-layer stack`, decodeShape, denseFlop, bestLayerMs(denseLayers.map((layer) => () => matmul(x, layer, { transposeB: true })))));
  const check = first ? checkAgainstJs("bsrLinear", () => bsrLinear(x, values, pattern), [x, values], ([a, v]) => bsrLinear(a, v, pattern)) : undefined;
  rows.push(row(`bsrLinear b${BLOCK} d${DENSITY}, batch 1`, decodeShape, sparseFlop, bestMs(() => bsrLinear(x, values, pattern)), check));
  rows.push(row(`bsrLinear b${BLOCK} d${DENSITY}, batch 1, cold cache`, decodeShape, sparseFlop, bestMs(() => bsrLinear(x, values, pattern), true)));
  rows.push(
    row(
      `bsrLinear b${BLOCK} d${DENSITY}, batch 1, ${LAYERS}-layer stack`,
      decodeShape,
      sparseFlop,
      bestLayerMs(sparseLayers.map((layer) => () => bsrLinear(x, layer.values, layer.pattern))),
    ),
  );
  return rows;
}

/** Folds a later round into the first: best over rounds, each round's best kept. */
function mergeRound(into: Row[], round: Row[]): void {
  round.forEach((r, i) => {
    const kept = into[i];
    kept.roundMs.push(r.ms);
    if (r.ms < kept.ms) {
      kept.ms = r.ms;
      kept.gflops = r.gflops;
    }
  });
}

function main(): void {
  setBackend("cpu");
  const build = cpuBackend().build;
  const readBacks: { shape: [number, number]; ms: number }[] = [];
  const decode = decodeInputs();
  const pythonRounds: PythonResult[] = [];
  let skipped: string | undefined;
  let rows: Row[] = [];
  for (let round = 0; round < rounds; round++) {
    const ours = measureOurs(round === 0, decode, readBacks);
    if (round === 0) rows = ours;
    else mergeRound(rows, ours);
    // SciPy's BSR product takes seconds a call and trails ours by far more than the noise: first round only.
    const reference = python({
      repeats,
      dense: [...DENSE_SHAPES, [1, DECODE, DECODE]],
      bsr: round === 0 ? DENSE_SHAPES.map(([M, K, N]) => [M, K, N, BLOCK, DENSITY]) : [],
      stack: [[1, DECODE, DECODE, LAYERS]],
    });
    if (reference.result) pythonRounds.push(reference.result);
    else skipped = reference.skipped;
    console.error(`round ${round + 1}/${rounds} done`);
  }
  const bandwidth = copyBandwidth(repeats);
  const weightBytes = decode.pattern.nnzBlocks * BLOCK * BLOCK * 4;

  const machine = describeMachine();
  const { commit, dirty } = gitState();
  const record = { date: new Date().toISOString(), commit, dirty, machine, build, repeats, rounds, copyBandwidthBytesPerSecond: bandwidth, weightBytes, rows, readBacks, reference: { skipped, rounds: pythonRounds } };
  writeFileSync(join(outDir, "cpu-comparison.json"), `${JSON.stringify(record, null, 2)}\n`);

  type Shaped = { M: number; K: number; N: number; ms: number };
  const matches = (e: Shaped, r: Row) => e.M === r.M && e.K === r.K && e.N === r.N;
  // NumPy's dense time for a row, round by round (undefined where none).
  const numpyRounds = (r: Row) => pythonRounds.map((p) => (r.what.endsWith("stack") ? p.stack : p.dense).find((e) => matches(e, r))?.ms);
  const scipyBsr = (r: Row) => pythonRounds[0]?.bsr.find((e) => matches(e, r));
  const condition = (r: Row) => (r.what.endsWith("cold cache") ? "cold" : r.what.endsWith("stack") ? "stack" : "warm");
  const denseOf = (r: Row) => rows.find((d) => d.what.startsWith("dense") && d.M === r.M && d.K === r.K && d.N === r.N && condition(d) === condition(r));
  const ms = (value: number) => value.toFixed(3);
  const versions = pythonRounds[0];
  const lines = [
    `# The native cpu backend against NumPy and SciPy (${machine.cpuModel}, ${plural(machine.cpuCores, "core")})`,
    "",
    `${record.date}, commit ${commit.slice(0, 12)}${dirty ? " (dirty)" : ""}; micro-kernel ${build.isa} (${build.tileRows}x${build.tileCols}), ${plural(build.threads, "thread")}; float32.`,
    `${plural(rounds, "round")}, each ours then NumPy's, best of ${plural(repeats, "call")} per figure per round (\`pnpm -F @blocksparse/benchmarks exec tsx src/cpu_compare.ts --rounds ${rounds} --repeats ${repeats}\`); the machine is shared, so a figure is the best of its rounds, and each round's best is listed beside it.`,
    "Times are the product alone (the cpu backend is synchronous, so its output is complete when the op returns), like NumPy's `x @ w`; reading a result back is measured apart, below.",
    `GFLOP/s count the non-zero work (2·M·nnz·R·C for the block-sparse products). "vs our dense" is our dense product's time over this one's (same shape, same cache condition). "ours ÷ theirs" is best against best, then round by round (the same minute). "vs js" is max |ours − js| / max |js| on the same inputs.`,
    skipped && !versions ? `NumPy/SciPy skipped: ${skipped}.` : `NumPy ${versions?.numpy} (${versions?.blas}), SciPy ${versions?.scipy}, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset; SciPy's BSR product in the first round only.`,
    "",
    ...COMPARISON_HEAD,
  ];
  for (const r of rows) {
    const numpy = r.what.startsWith("dense") && condition(r) !== "cold" ? numpyRounds(r) : [];
    const numpyBest = numpy.some((v) => v !== undefined) ? Math.min(...numpy.filter((v): v is number => v !== undefined)) : undefined;
    const scipy = r.what.startsWith("bsrLinear b") && r.M > 1 ? scipyBsr(r) : undefined;
    const theirMs = numpyBest ?? scipy?.ms;
    const dense = denseOf(r);
    const relative = vsOurDense(r, dense);
    const perRound = numpyBest === undefined ? "-" : r.roundMs.map((ours, i) => (numpy[i] === undefined ? "-" : `${((numpy[i] as number) / ours).toFixed(2)}x`)).join(" / ");
    lines.push(
      `| ${r.what} | ${r.M}×${r.K}×${r.N} | ${ms(r.ms)} | ${r.roundMs.map(ms).join(" / ")} | ${r.gflops.toFixed(1)} | ${relative} | ${theirMs === undefined ? "-" : ms(theirMs)} | ${numpyBest === undefined ? "-" : numpy.map((v) => (v === undefined ? "-" : ms(v))).join(" / ")} | ${theirMs === undefined ? "-" : (r.flop / (theirMs * 1e6)).toFixed(1)} | ${theirMs === undefined ? "-" : `${(theirMs / r.ms).toFixed(2)}x`} | ${perRound} | ${r.checkError === undefined ? "-" : r.checkError.toExponential(1)} |`,
    );
  }
  const decodeRow = (sparse: boolean, how: string) => rows.find((r) => r.M === 1 && r.what.startsWith(sparse ? "bsrLinear" : "dense") && r.what.endsWith(how));
  const readMs = (weightBytes / bandwidth) * 1e3;
  lines.push(
    "",
    `Reading a result back (\`dataSync()\`, a copy into new memory): ${readBacks.map(({ shape: [m, n], ms: t }) => `${m}×${n} float32 in ${ms(t)} ms`).join(", ")}.`,
    `Memory bandwidth (a 256 MiB Float32Array copy, read + write bytes): ${(bandwidth / 1e9).toFixed(1)} GB/s. Reading the batch-1 block-sparse weights (${(weightBytes / 2 ** 20).toFixed(1)} MiB) at that rate takes ${ms(readMs)} ms.`,
  );
  // A 16 MiB weight fits the last-level cache, so warm calls read it from there: two ways to read it from memory.
  for (const [how, label] of [
    ["cold cache", "caches flushed before each call (a product streaming 512 MiB on every thread, then 5 ms idle: the pool's workers asleep, as between requests)"],
    ["stack", `${LAYERS} layers run back to back (${LAYERS} × ${(weightBytes / 2 ** 20).toFixed(0)} MiB block-sparse, ${LAYERS} × 64 MiB dense: more than the caches), per layer`],
  ]) {
    const sparse = decodeRow(true, how);
    const dense = decodeRow(false, how);
    if (sparse && dense) {
      lines.push(
        `Batch 1, 4096×4096, ${label}: bsrLinear at density ${DENSITY} takes ${ms(sparse.ms)} ms, ${(dense.ms / sparse.ms).toFixed(2)}x faster than dense x·Wᵀ (${ms(dense.ms)} ms), ${(sparse.ms / readMs).toFixed(2)}x the time to read its weights.`,
      );
    }
  }
  writeFileSync(join(outDir, "cpu-comparison.md"), `${lines.join("\n")}\n`);
  process.stdout.write(`${lines.join("\n")}\n`);
  for (const t of [decode.x, decode.w, decode.values, ...decode.denseLayers, ...decode.sparseLayers.map((l) => l.values)]) t.dispose();
  flushWeights?.dispose();
  flushInput?.dispose();
}

try {
  main();
} catch (error) {
  refuse(error);
}
