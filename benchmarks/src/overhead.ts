/**
 * Host time per op: many tiny ops in a row (their device work is negligible, so the loop
 * measures what the host spends per op: validation, the engine, the tape, N-API, the
 * launch), the backend's start time and the first call of each product against its
 * steady time, each start measured in a fresh process.
 *
 *   tsx src/overhead.ts [--backend cuda|js] [--dtype bfloat16] [--out DIR] [--torch]
 * --torch also times PyTorch on the same tiny tensors (python/overhead_torch.py; a CUDA PyTorch).
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { backward } from "@blocksparse/autograd";
import {
  BsrPattern,
  type FloatDType,
  add,
  adamUpdate,
  bsrLinear,
  bsrMatmul,
  cast,
  gelu,
  getBackendInstance,
  linear as linearOp,
  matmul,
  randn,
  sampledMatmul,
  type Tensor,
  tidy,
} from "@blocksparse/core";
import { Linear } from "@blocksparse/nn";
import { describeMachine, gitState, repoRoot } from "./machine";
import { startBackend } from "./start_backend";
import { checkPythonImports, describeFailure, FlagError, outputDirectory, parseFlags } from "./flags";
import { OVERHEAD_CLI } from "./overhead_flags";

interface Row {
  what: string;
  /** Steady state: the median of several timed runs once the JIT has compiled the path. */
  microseconds: number;
  /** The first `count` calls after a 50-call warm-up, what a short script sees before the JIT has optimised the path. */
  coldMicroseconds?: number;
}

/**
 * Microseconds per call of `op`: cold (the first `count` calls after a short warm-up) and
 * steady (the median of five runs of `count` calls after several thousand more, once V8 has
 * optimised the path: a training loop runs there), one synchronize closing each run.
 */
function perOp(what: string, op: () => void, synchronize: () => void, count = 2000): Row {
  const run = () => {
    const t0 = performance.now();
    for (let i = 0; i < count; i++) op();
    synchronize();
    return ((performance.now() - t0) * 1000) / count;
  };
  for (let i = 0; i < 50; i++) op();
  synchronize();
  const coldMicroseconds = run();
  for (let i = 0; i < 3; i++) run();
  const steady = [run(), run(), run(), run(), run()].sort((p, q) => p - q);
  return { what, microseconds: steady[2], coldMicroseconds };
}

function tinyOps(dtype: FloatDType, synchronize: () => void): Row[] {
  const a = cast(randn([16], { seed: 1 }), dtype);
  const b = cast(randn([16], { seed: 2 }), dtype);
  const x = cast(randn([8, 64], { seed: 3 }), dtype);
  const w = cast(randn([64, 64], { seed: 4 }), dtype);
  const pattern = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 5 });
  const values = cast(randn([pattern.nnzBlocks, 32, 32], { seed: 6 }), dtype);
  const dy = cast(randn([8, 64], { seed: 7 }), dtype);
  const p = randn([256], { seed: 8 });
  const g = randn([256], { seed: 9 });
  const m = randn([256], { seed: 10 });
  const v = tidy(() => cast(randn([256], { seed: 11 }), "float32"));
  const linear = new Linear(64, 64, { seed: 12 }).to(dtype);
  const dispose = (t: Tensor | Tensor[]) => {
    for (const z of Array.isArray(t) ? t : [t]) z.dispose();
  };
  const rows: Row[] = [
    perOp("add [16]", () => dispose(add(a, b)), synchronize),
    perOp("gelu [16]", () => dispose(gelu(a)), synchronize),
    perOp(`cast ${dtype} -> float32 [16]`, () => dispose(cast(a, "float32")), synchronize),
    perOp("matmul [8,64] x [64,64]^T", () => dispose(matmul(x, w, { transposeB: true })), synchronize),
    // The same product through linear (cuBLASLt with a plan cached per shape, as matmul's one-matrix products since
    // 2026-12-07): within one process the two rows say what the host pays per dense product beyond the engine's path.
    perOp("linear [8,64] x [64,64]^T", () => dispose(linearOp(x, w)), synchronize),
    perOp("bsrLinear [8,64], 64x64 32x32 d=0.5", () => dispose(bsrLinear(x, values, pattern)), synchronize),
    perOp("bsrMatmul [8,64], 64x64 32x32 d=0.5", () => dispose(bsrMatmul(dy, values, pattern)), synchronize),
    perOp("sampledMatmul [8,64], 64x64 32x32 d=0.5", () => dispose(sampledMatmul(dy, x, pattern)), synchronize),
    perOp("adamUpdate [256] float32", () => {
      const out = adamUpdate(p, g, m, v, { lr: 1e-3, step: 1 });
      dispose([out.param, out.m, out.v]);
    }, synchronize),
    perOp(
      "Linear(64, 64) forward + backward (5 kernels, tape)",
      () =>
        tidy(() => {
          linear.zeroGrad();
          backward(linear.forward(x), dy);
        }),
      synchronize,
      500,
    ),
  ];
  // The bare crossing into the addon (a getter: no launch, no allocation), to split an op's time between N-API and the rest.
  // Only the cuda addon has this getter: other native backends (cpu) leave the row out.
  const addon = (getBackendInstance() as { addon?: { allowTf32?: () => boolean } }).addon;
  const getter = addon?.allowTf32?.bind(addon);
  if (getter !== undefined) rows.push(perOp("N-API call alone (a native getter, no launch)", () => void getter(), synchronize, 20_000));
  // cuda: the same weight gradient forced through the dense GEMM and the copy of its blocks (auto keeps a product
  // this small on the block kernel's one launch).
  const routes = getBackendInstance() as { setDenseSampledMode?: (mode: "auto" | "never" | "always") => "auto" | "never" | "always" };
  if (routes.setDenseSampledMode !== undefined) {
    const previous = routes.setDenseSampledMode("always");
    try {
      rows.push(perOp("sampledMatmul [8,64], 64x64 32x32 d=0.5, through the dense GEMM", () => dispose(sampledMatmul(dy, x, pattern)), synchronize));
    } finally {
      routes.setDenseSampledMode(previous);
    }
  }
  for (const t of [a, b, x, w, values, dy, p, g, m, v]) t.dispose();
  for (const q of linear.parameters()) q.dispose();
  return rows;
}

/** Milliseconds of the first call of each product at a layer's size, and of its steady state (median of 20). */
function firstCalls(dtype: FloatDType, synchronize: () => void): Row[] {
  const [M, K, N] = [2048, 3072, 768];
  const x = cast(randn([M, K], { seed: 1 }), dtype);
  const w = cast(randn([N, K], { seed: 2 }), dtype);
  const dy = cast(randn([M, N], { seed: 3 }), dtype);
  const pattern = BsrPattern.random([N, K], { blockShape: [32, 32], density: 0.25, seed: 4 });
  const values = cast(randn([pattern.nnzBlocks, 32, 32], { seed: 5 }), dtype);
  const rows: Row[] = [];
  const products: [string, () => Tensor][] = [
    ["matmul", () => matmul(x, w, { transposeB: true })],
    ["bsrLinear", () => bsrLinear(x, values, pattern)],
    ["bsrMatmul", () => bsrMatmul(dy, values, pattern)],
    ["sampledMatmul", () => sampledMatmul(dy, x, pattern)],
  ];
  for (const [name, run] of products) {
    synchronize();
    const t0 = performance.now();
    run().dispose();
    synchronize();
    const first = performance.now() - t0;
    const steady: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t = performance.now();
      run().dispose();
      synchronize();
      steady.push(performance.now() - t);
    }
    steady.sort((p, q) => p - q);
    rows.push({ what: `${name} first call (ms) ${M}x${K}->${N}`, microseconds: first * 1000 });
    rows.push({ what: `${name} steady call (ms) ${M}x${K}->${N}`, microseconds: steady[10] * 1000 });
  }
  for (const t of [x, w, dy, values]) t.dispose();
  return rows;
}

/** PyTorch's time per op on the same tiny tensors (python/overhead_torch.py), for scale: what an eager framework's host path costs on this machine. */
function torchOverhead(dtype: FloatDType): { version: string; rows: { what: string; microseconds: number }[] } {
  const script = join(repoRoot, "benchmarks", "python", "overhead_torch.py");
  const result = spawnSync("python3", [script, "--dtype", dtype], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (result.status !== 0) throw new Error(`overhead_torch.py failed (exit ${result.status})`);
  const parsed = JSON.parse(result.stdout) as { torch: string; rows: { what: string; microseconds: number }[] };
  return { version: parsed.torch, rows: parsed.rows };
}

async function child(backend: string, dtype: FloatDType): Promise<void> {
  const t0 = performance.now();
  const { synchronize } = await startBackend(backend);
  const startMs = performance.now() - t0;
  const rows = [{ what: "backend start (ms)", microseconds: startMs * 1000 }, ...firstCalls(dtype, synchronize)];
  process.stdout.write(JSON.stringify(rows));
}

async function main(): Promise<void> {
  const { values } = parseFlags(OVERHEAD_CLI);
  const dtype = values.dtype as FloatDType;
  if (!["float32", "float16", "bfloat16"].includes(dtype)) throw new FlagError(`--dtype: expected float32, float16 or bfloat16, got "${values.dtype}"`);
  if (values.child) return child(values.backend, dtype);
  if (values.torch) checkPythonImports("torch", ["torch"]);
  const outDir = outputDirectory(values.out ?? join(repoRoot, "benchmarks", "results", "tmp", "overhead"));
  const fresh = spawnSync(process.execPath, [...process.execArgv, process.argv[1], "--child", "--backend", values.backend, "--dtype", dtype], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    env: process.env,
  });
  if (fresh.status !== 0) {
    // The child has printed why (a backend that cannot start, mostly): a stack of this process would only bury it.
    process.stderr.write(`the fresh process measuring start-up failed (exit ${fresh.status ?? fresh.signal}); its error is above\n`);
    process.exitCode = 1;
    return;
  }
  const startRows = JSON.parse(fresh.stdout) as Row[];
  const started = await startBackend(values.backend);
  const rows = [...tinyOps(dtype, started.synchronize), ...startRows];
  const torch = values.torch ? torchOverhead(dtype) : null;
  // Named after the backend that ran: "auto" (the default on a machine without CUDA) is cpu or js, and says neither.
  const backend = started.backend;
  const machine = describeMachine(started.gpu).name;
  const { commit, dirty } = gitState();
  const lines = [
    `Machine: ${machine}. Commit ${commit}${dirty ? " (with uncommitted changes)" : ""}. Backend ${backend}${values.backend === backend ? "" : ` (--backend ${values.backend})`}.`,
    "",
    `| ${backend} ${dtype} | µs per op, steady (ms where marked) | µs per op, first 2,000 calls |${torch ? ` PyTorch ${torch.version}, µs per op, steady (ms where marked) |` : ""}`,
    `| --- | --- | --- |${torch ? " --- |" : ""}`,
  ];
  // Rows marked "(ms)" hold milliseconds: the first call of a product and its steady time, PyTorch's too.
  const format = (what: string, microseconds: number) => (what.includes("(ms)") ? (microseconds / 1000).toFixed(3) : microseconds.toFixed(2));
  for (const r of rows) {
    const theirs = torch?.rows.find((t) => t.what === r.what);
    lines.push(
      `| ${r.what} | ${format(r.what, r.microseconds)} | ${r.coldMicroseconds?.toFixed(2) ?? ""} |${torch ? ` ${theirs ? format(r.what, theirs.microseconds) : ""} |` : ""}`,
    );
  }
  const report = `${lines.join("\n")}\n`;
  writeFileSync(join(outDir, `overhead-${backend}.json`), `${JSON.stringify({ backend, machine, commit, dirty, dtype, date: new Date().toISOString(), rows, torch }, null, 1)}\n`);
  writeFileSync(join(outDir, `overhead-${backend}.md`), report);
  process.stdout.write(report);
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exitCode = 1;
});
