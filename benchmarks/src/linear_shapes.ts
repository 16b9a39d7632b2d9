/**
 * Dense products as a layer calls them, over a grid of shapes: `linear(x [m, k], w [n, k])` (what nn's Linear runs: one
 * cuBLASLt call on cuda, the bias in its epilogue) beside `matmul(x, w, { transposeB: true })` (the plain GEMM:
 * cublasGemmEx on cuda), each checked against the other first, then timed as one captured graph replay per call
 * (eager calls on a backend without graphs). With --torch, PyTorch's `F.linear` of the same shapes
 * (python/linear_torch.py, captured the same way) in the same run. Widths off 16-byte alignment (129, 1001, 4097,
 * 50257) are where cuBLAS's kernels are 3-9x slower and both routes run aligned shapes instead (linear: its aligned
 * head and last columns; matmul: zero-padded copies; results/gpu-nvidia-h200/linear-widths.md): this measures those
 * rules against PyTorch's one call.
 *
 *   tsx src/linear_shapes.ts [--backend cuda] [--rows 1,8,64,512] [--features 64,768,4096]
 *     [--widths 129,1001,4097,50257] [--dtype bfloat16] [--bias] [--iterations 100] [--torch] [--out DIR]
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type FloatDType, add, cast, getBackendInstance, linear, matmul, randn, type Tensor, tidy } from "@blocksparse/core";
import { BACKEND_FLAG, checkHostMemory, checkPythonImports, describeFailure, DTYPE_FLAG, FlagError, outputDirectory, parseFlags, positiveInteger, positiveIntegers as numbers } from "./flags";
import { describeMachine, gitState, repoRoot } from "./machine";
import { startBackend } from "./start_backend";
import { ValidationError } from "./measure";
import { replayable, timeUs } from "./timing";
import { compareToReference } from "./validate";

interface Row {
  m: number;
  k: number;
  n: number;
  linearUs: number;
  matmulUs: number;
  torchUs?: number;
}

/** Microseconds per call: one captured replay per call where the backend records graphs, else eager calls. */
function callUs(fn: () => Tensor, synchronize: () => void, iterations: number): number {
  const call = replayable(fn, getBackendInstance().graphs !== undefined);
  try {
    return timeUs(call.run, synchronize, iterations);
  } finally {
    call.dispose();
  }
}

function runTorch(args: { rows: number[]; features: number[]; widths: number[]; dtype: string; bias: boolean; iterations: number }): Row[] {
  const script = join(repoRoot, "benchmarks", "python", "linear_torch.py");
  const flags = ["--rows", args.rows.join(","), "--features", args.features.join(","), "--widths", args.widths.join(",")];
  flags.push("--dtype", args.dtype, "--iterations", String(args.iterations), ...(args.bias ? ["--bias"] : []));
  const result = spawnSync("python3", [script, ...flags], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (result.status !== 0) throw new Error(`linear_torch.py failed (exit ${result.status}): ${result.stdout}`);
  return JSON.parse(result.stdout) as Row[];
}

async function main(): Promise<void> {
  const { values } = parseFlags({
    usage: "tsx src/linear_shapes.ts [flags]",
    summary: "Dense products over a grid of shapes: linear(x, w) beside matmul(x, w, { transposeB: true }).",
    flags: {
      backend: BACKEND_FLAG,
      rows: { type: "string", default: "1,8,64,512", description: "comma-separated rows of x (m)" },
      features: { type: "string", default: "64,768,4096", description: "comma-separated input features (k)" },
      widths: { type: "string", default: "129,1001,4097,50257", description: "comma-separated output widths (n)" },
      dtype: DTYPE_FLAG,
      bias: { type: "boolean", default: false, description: "add a bias (linear's epilogue; matmul + add)" },
      iterations: { type: "string", default: "100", description: "timed calls per shape" },
      torch: { type: "boolean", default: false, description: "also time PyTorch's F.linear (python/linear_torch.py)" },
      out: { type: "string", description: "directory for linear-shapes.md and .json", defaultText: "benchmarks/results/tmp/linear-shapes" },
    },
  });
  const dtype = values.dtype as FloatDType;
  if (!["float32", "float16", "bfloat16"].includes(dtype)) throw new FlagError(`--dtype: expected float32, float16 or bfloat16, got "${values.dtype}"`);
  const iterations = positiveInteger(values.iterations, "iterations");
  const [rowCounts, features, widths] = [numbers(values.rows, "rows"), numbers(values.features, "features"), numbers(values.widths, "widths")];
  // The largest x, weight and output held at once, drawn in float32 on the host before the cast.
  const [m, k, n] = [Math.max(...rowCounts), Math.max(...features), Math.max(...widths)];
  checkHostMemory(`--rows ${m}, --features ${k} and --widths ${n}`, "x, the weight and the output in float32", m * k + n * k + m * n, 4, "use smaller --rows, --features or --widths");
  if (values.torch) checkPythonImports("torch", ["torch"]);
  const outDir = outputDirectory(values.out ?? join(repoRoot, "benchmarks", "results", "tmp", "linear-shapes"));
  const started = await startBackend(values.backend);
  const rows: Row[] = [];
  for (const k of features) {
    for (const n of widths) {
      const w = tidy(() => cast(randn([n, k], { seed: 1, std: 0.05 }), dtype));
      const b = values.bias ? tidy(() => cast(randn([n], { seed: 2 }), dtype)) : null;
      for (const m of rowCounts) {
        const x = tidy(() => cast(randn([m, k], { seed: 3 }), dtype));
        try {
          const viaLinear = (): Tensor => linear(x, w, b);
          const viaMatmul = (): Tensor => tidy(() => (b === null ? matmul(x, w, { transposeB: true }) : add(matmul(x, w, { transposeB: true }), b)));
          // The two routes agree first (float32 sums, rounded once each: within a few units of the dtype's rounding).
          const [got, want] = [viaLinear(), viaMatmul()];
          // NaN or infinity on either side fails too (a NaN error is never above the bound).
          const check = compareToReference("linear against matmul", got.dataSync(), want.dataSync(), 2e-2);
          got.dispose();
          want.dispose();
          if (!check.ok) throw new ValidationError(`m ${m} k ${k} n ${n}`, [check]);
          rows.push({ m, k, n, linearUs: callUs(viaLinear, started.synchronize, iterations), matmulUs: callUs(viaMatmul, started.synchronize, iterations) });
          const last = rows[rows.length - 1];
          process.stderr.write(`m ${m} k ${k} n ${n}: linear ${last.linearUs.toFixed(1)} us, matmul ${last.matmulUs.toFixed(1)} us\n`);
        } finally {
          x.dispose();
        }
      }
      w.dispose();
      b?.dispose();
    }
  }
  if (values.torch) {
    for (const t of runTorch({ rows: rowCounts, features, widths, dtype, bias: values.bias, iterations })) {
      const row = rows.find((r) => r.m === t.m && r.k === t.k && r.n === t.n);
      if (row) row.torchUs = t.torchUs;
    }
  }
  const machine = describeMachine(started.gpu).name;
  const lines = [
    `# Dense products by shape: linear${started.backend === "cuda" ? " (cuBLASLt)" : ""} and matmul (the GEMM)${values.torch ? " beside PyTorch's F.linear" : ""} (${dtype}${values.bias ? ", with bias" : ""})`,
    "",
    `Machine: ${machine}. Backend ${started.backend}. Commit ${gitState().commit}. Microseconds per call, ${getBackendInstance().graphs !== undefined ? "one captured replay each" : "eager"}; the two routes checked against each other first.`,
    "",
    `| m | k | n | linear (us) | matmul${values.bias ? " + bias" : ""} (us) | linear / matmul |${values.torch ? " PyTorch F.linear (us) | linear / PyTorch |" : ""}`,
    `| --- | --- | --- | --- | --- | --- |${values.torch ? " --- | --- |" : ""}`,
    ...rows.map(
      (r) =>
        `| ${r.m} | ${r.k} | ${r.n} | ${r.linearUs.toFixed(1)} | ${r.matmulUs.toFixed(1)} | ${(r.linearUs / r.matmulUs).toFixed(2)} |${values.torch ? ` ${r.torchUs?.toFixed(1) ?? ""} | ${r.torchUs ? (r.linearUs / r.torchUs).toFixed(2) : ""} |` : ""}`,
    ),
    "",
  ];
  writeFileSync(join(outDir, "linear-shapes.md"), lines.join("\n"));
  writeFileSync(join(outDir, "linear-shapes.json"), `${JSON.stringify({ machine, backend: started.backend, ...gitState(), date: new Date().toISOString(), dtype, bias: values.bias, rows }, null, 1)}\n`);
  process.stdout.write(lines.join("\n"));
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
});
