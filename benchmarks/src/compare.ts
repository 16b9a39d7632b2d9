/**
 * Our side of the PyTorch comparison: times our kernels on the given backend (validated
 * against float64 first, as every benchmark), then writes the inputs, the pattern and our
 * outputs at checked rows/blocks as safetensors, plus our timings in ours.json.
 * torch_compare.py reads them, runs cuBLAS dense and PyTorch's BSR kernels on the same
 * inputs, checks the outputs agree and prints the table.
 *
 *   tsx src/compare.ts --out DIR [--backend cuda|cpu|js] [--small]
 *     [--shape MxKxN] [--dtypes bfloat16,float16] [--blocks 32,64,128] [--densities 0.5,0.25,0.1]
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BsrPattern, type Tensor, bsrLinear, bsrMatmul, getBackendInstance, matmul, randn, sampledMatmul, setBackend } from "@blocksparse/core";
import { type SafetensorsTensor, encodeSafetensors } from "@blocksparse/format";
import { describeMachine, gitState } from "./machine";
import { type TimingPlan, measure } from "./measure";
import { Progress } from "./progress";
import type { GpuInfo } from "./record";
import { plural } from "./report";
import { bsrLinearRows, bsrMatmulRows, pickRows, rowsTimesTransposed, sampledMatmulBlocks } from "./reference";
import { type BenchDType, TOLERANCE, compareToReference, spreadIndices } from "./validate";
import { parseCompareFlags } from "./compare_flags";
import { describeFailure, FlagError, outputDirectory } from "./flags";
import { startCpu } from "./start_backend";

export interface CompareCase {
  file: string;
  inputs: string;
  M: number;
  K: number;
  N: number;
  dtype: BenchDType;
  blockSize: number;
  density: number;
  nnzBlocks: number;
  /** Our median milliseconds per call. */
  oursMs: Record<"denseLinear" | "bsrLinear" | "bsrMatmul" | "sampledMatmul", number>;
}

const f32 = (data: ArrayLike<number>, shape: number[]): SafetensorsTensor => ({ dtype: "F32", shape, data: Float32Array.from(data) });
const i32 = (data: ArrayLike<number>, shape: number[]): SafetensorsTensor => ({ dtype: "I32", shape, data: Int32Array.from(data) });

async function main(): Promise<void> {
  // Every flag checked before the backend starts and the first case runs.
  const { out, backend: backendName, small, shape, dtypes, blockSizes, densities } = parseCompareFlags();
  const [M, K, N] = shape;
  const outDir = outputDirectory(out);
  let gpu: GpuInfo | undefined;
  let synchronize = () => {};
  if (backendName === "cuda") {
    const cuda = await import("@blocksparse/backend-cuda");
    const availability = cuda.cudaAvailability();
    if (!availability.available) throw new FlagError(`--backend cuda: CUDA is unavailable: ${availability.reason ?? "no reason given"} (--backend cpu runs the native cpu backend, --backend js the reference backend)`);
    setBackend("cuda");
    const instance = cuda.cudaBackend();
    gpu = { name: instance.device.name, computeCapability: instance.device.computeCapability, cublas: instance.build.cublas };
    synchronize = () => instance.synchronize();
  } else if (backendName === "cpu") {
    // The native cpu backend: a FlagError that says so when its addon is not built or does not load.
    await startCpu("cpu");
  } else {
    setBackend("js");
  }
  const backend = getBackendInstance();
  const setPoison = (enabled: boolean) => {
    backend.poisonAllocations = enabled;
  };
  const plan: TimingPlan = small
    ? { warmup: 1, minRepeats: 3, maxRepeats: 5, budgetMs: 100, minSampleMs: 5 }
    : { warmup: 3, minRepeats: 10, maxRepeats: 50, budgetMs: 150, minSampleMs: 5 };
  const rows = spreadIndices(M, 8);
  const progress = new Progress(dtypes.length * (1 + blockSizes.length * densities.length));
  const cases: CompareCase[] = [];
  const { commit } = gitState();
  const machine = describeMachine(gpu);
  const date = new Date().toISOString();
  // Rewritten after every case, so that a run cut short still leaves what it measured.
  const writeManifest = () =>
    writeFileSync(join(outDir, "ours.json"), `${JSON.stringify({ backend: backendName, machine, commit, date, cases }, null, 2)}\n`);
  for (const dtype of dtypes) {
    const tolerance = TOLERANCE[dtype];
    progress.step(`inputs and dense x·Wᵀ ${dtype}`);
    const x = randn([M, K], { seed: 11, dtype });
    const dy = randn([M, N], { seed: 12, dtype });
    const xHost = Float32Array.from(x.dataSync());
    const dyHost = Float32Array.from(dy.dataSync());
    const inputs = `inputs-${dtype}.safetensors`;
    writeFileSync(join(outDir, inputs), encodeSafetensors({ x: f32(xHost, [M, K]), dy: f32(dyHost, [M, N]) }));
    const wDense = randn([N, K], { seed: 13, dtype, std: 1 / Math.sqrt(K) });
    const wDenseHost = Float32Array.from(wDense.dataSync());
    const denseLinear = measure(
      {
        name: "dense x·Wᵀ",
        run: () => matmul(x, wDense, { transposeB: true }),
        validate: (out: Tensor) => [compareToReference("y rows", pickRows(out.dataSync(), N, rows), rowsTimesTransposed(xHost, K, wDenseHost, N, rows), tolerance)],
        dispose: (t: Tensor) => t.dispose(),
        synchronize,
        setPoison,
      },
      plan,
    ).summary.median;
    wDense.dispose();
    for (const blockSize of blockSizes) {
      for (const density of densities) {
        progress.step(`ours ${dtype} block ${blockSize} density ${density}`);
        const pattern = BsrPattern.random([N, K], { blockShape: [blockSize, blockSize], density, seed: 20 + blockSize });
        const w = randn([pattern.nnzBlocks, blockSize, blockSize], { seed: 14, dtype, std: 1 / Math.sqrt(K * density) });
        const wHost = Float32Array.from(w.dataSync());
        const blocks = spreadIndices(pattern.nnzBlocks, 4);
        const outputs: Record<string, Float32Array> = {};
        const common = { dispose: (t: Tensor) => t.dispose(), synchronize, setPoison };
        const time = (name: string, run: () => Tensor, pick: (out: Tensor) => Float32Array, reference: () => Float64Array) =>
          measure(
            {
              name,
              run,
              validate: (out: Tensor) => {
                outputs[name] = pick(out);
                return [compareToReference(name, outputs[name], reference(), tolerance)];
              },
              ...common,
            },
            plan,
          ).summary.median;
        const bsrLinearMs = time("y_rows", () => bsrLinear(x, w, pattern), (out) => Float32Array.from(pickRows(out.dataSync(), N, rows)), () => bsrLinearRows(xHost, pattern, wHost, rows));
        const bsrMatmulMs = time("dx_rows", () => bsrMatmul(dy, w, pattern), (out) => Float32Array.from(pickRows(out.dataSync(), K, rows)), () => bsrMatmulRows(dyHost, pattern, wHost, rows));
        const sampledMs = time(
          "dw_blocks",
          () => sampledMatmul(dy, x, pattern),
          (out) => Float32Array.from(pickRows(out.dataSync(), blockSize * blockSize, blocks)),
          () => sampledMatmulBlocks(dyHost, xHost, M, pattern, blocks),
        );
        const file = `case-${dtype}-b${blockSize}-d${density}.safetensors`;
        writeFileSync(
          join(outDir, file),
          encodeSafetensors(
            {
              values: f32(wHost, [pattern.nnzBlocks, blockSize, blockSize]),
              crow_indices: i32(pattern.blockRowPtr, [pattern.blockRows + 1]),
              col_indices: i32(pattern.blockColIdx, [pattern.nnzBlocks]),
              rows: i32(rows, [rows.length]),
              blocks: i32(blocks, [blocks.length]),
              y_rows: f32(outputs.y_rows, [rows.length, N]),
              dx_rows: f32(outputs.dx_rows, [rows.length, K]),
              dw_blocks: f32(outputs.dw_blocks, [blocks.length, blockSize, blockSize]),
            },
            { dtype, shape: `${N},${K}` },
          ),
        );
        w.dispose();
        cases.push({
          file,
          inputs,
          M,
          K,
          N,
          dtype,
          blockSize,
          density,
          nnzBlocks: pattern.nnzBlocks,
          oursMs: { denseLinear, bsrLinear: bsrLinearMs, bsrMatmul: bsrMatmulMs, sampledMatmul: sampledMs },
        });
        writeManifest();
      }
    }
    x.dispose();
    dy.dispose();
  }
  progress.finish(`${plural(cases.length, "case")} written`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exitCode = 1;
});
