/**
 * Attention alone, forward and forward + backward, at [batch, heads, length, headDim]: core's
 * scaledDotProductAttention (the fused kernels: flash on cuda for float16/bfloat16 at head dims 32/64/128) beside
 * the unfused composition a model ran before it (matmul, softmax with causal masking, matmul, and their
 * gradients through autograd, the [length, length] probabilities kept between the two). Each case is captured
 * with captureGraph and timed as replays. With --torch, PyTorch's F.scaled_dot_product_attention (its flash
 * kernels) on the same shapes in the same run (python/attention_torch.py). Prints microseconds per call and
 * TFLOP/s on the work the mask keeps.
 *
 *   tsx src/attention.ts [--backend cuda] [--shapes 16x16x512x64,4x16x2048x64,4x8x1024x128] [--causal true]
 *     [--dtype bfloat16] [--iterations 50] [--paths fused,unfused] [--torch] [--out DIR]
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { backward, noGrad } from "@blocksparse/autograd";
import { getBackendInstance, matmul, mul, randn, scaledDotProductAttention, softmax, type Tensor, tidy } from "@blocksparse/core";
import { describeMachine, gitState, repoRoot } from "./machine";
import { startBackend } from "./start_backend";
import { replayable, timeUs } from "./timing";
import { parseAttentionFlags, type Shape } from "./attention_flags";
import { describeFailure } from "./flags";

interface Row extends Shape {
  causal: boolean;
  path: "fused" | "unfused" | "torch";
  forwardUs: number;
  trainUs: number;
}

/** Matmul FLOPs of the kept work: 2 products forward, 5 backward (as flash counts them), halved under causal masking. */
function flops(s: Shape, causal: boolean, train: boolean): number {
  const product = 2 * s.batch * s.heads * s.length * s.length * s.headDim * (causal ? 0.5 : 1);
  return product * (train ? 7 : 2);
}

function unfused(q: Tensor, k: Tensor, v: Tensor, causal: boolean): Tensor {
  const scores = matmul(mul(q, 1 / Math.sqrt(q.shape[q.rank - 1])), k, { transposeB: true });
  return matmul(softmax(scores, -1, { causal }), v);
}

function runTorch(shapes: Shape[], causal: boolean, dtype: string, iterations: number): Row[] {
  const script = join(repoRoot, "benchmarks", "python", "attention_torch.py");
  const flags = ["--shapes", shapes.map((s) => `${s.batch}x${s.heads}x${s.length}x${s.headDim}`).join(","), "--dtype", dtype, "--iterations", String(iterations)];
  if (causal) flags.push("--causal");
  const result = spawnSync("python3", [script, ...flags], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (result.status !== 0) throw new Error(`attention_torch.py failed (exit ${result.status}): ${result.stdout}`);
  return (JSON.parse(result.stdout) as Omit<Row, "path">[]).map((r) => ({ ...r, path: "torch" as const }));
}

async function main(): Promise<void> {
  const { backend, causal, dtype, iterations, shapes, paths, torch, outDir } = parseAttentionFlags();
  const started = await startBackend(backend);
  const capture = getBackendInstance(started.backend).graphs !== undefined;
  const rows: Row[] = [];
  for (const s of shapes) {
    const q = randn([s.batch, s.heads, s.length, s.headDim], { dtype, seed: 1 });
    const k = randn([s.batch, s.heads, s.length, s.headDim], { dtype, seed: 2 });
    const v = randn([s.batch, s.heads, s.length, s.headDim], { dtype, seed: 3 });
    const dout = randn([s.batch, s.heads, s.length, s.headDim], { dtype, seed: 4 });
    for (const path of paths) {
      const attend = (a: Tensor, b: Tensor, c: Tensor) =>
        path === "fused" ? scaledDotProductAttention(a, b, c, { causal }) : unfused(a, b, c, causal);
      const forward = replayable(() => noGrad(() => attend(q, k, v)), capture);
      // forward + backward: the gradients of q, k and v from dout, as a model's step runs them.
      for (const t of [q, k, v]) t.requiresGrad = true;
      const train = replayable(
        () =>
          tidy(() => {
            const out = attend(q, k, v);
            backward(out, dout);
            return out;
          }),
        capture,
      );
      const forwardUs = timeUs(forward.run, started.synchronize, iterations, 3);
      const trainUs = timeUs(train.run, started.synchronize, iterations, 3);
      rows.push({ ...s, causal, path, forwardUs, trainUs });
      forward.dispose();
      train.dispose();
      for (const t of [q, k, v]) {
        t.grad?.dispose();
        t.grad = null;
        t.requiresGrad = false;
      }
    }
    for (const t of [q, k, v, dout]) t.dispose();
  }
  if (torch) rows.push(...runTorch(shapes, causal, dtype, iterations));

  const machine = describeMachine(started.gpu).name;
  const header = [
    `Attention alone (${dtype}${causal ? ", causal" : ""}). Machine: ${machine}. Commit ${gitState().commit}.`,
    "Microseconds per call (captured replays where the backend records graphs, eager calls elsewhere). TFLOP/s on the" +
      " kept work as flash attention counts it: 2 products forward, 7 forward + backward (recomputation not counted)," +
      " half of them under causal masking. fused: scaledDotProductAttention; unfused: matmul, softmax, matmul and" +
      " their autograd gradients; torch: F.scaled_dot_product_attention in the same run.",
    "",
    "| batch x heads x length x headDim | path | forward (us) | TFLOP/s | forward + backward (us) | TFLOP/s |",
    "| --- | --- | --- | --- | --- | --- |",
  ];
  // Whole TFLOP/s on a GPU; three significant digits below 10 (a CPU's rates).
  const rate = (tflops: number) => (tflops < 10 ? tflops.toPrecision(3) : tflops.toFixed(0));
  const lines = rows.map(
    (r) =>
      `| ${r.batch}x${r.heads}x${r.length}x${r.headDim} | ${r.path} | ${r.forwardUs.toFixed(1)} | ${rate(flops(r, causal, false) / r.forwardUs / 1e6)} | ${r.trainUs.toFixed(1)} | ${rate(flops(r, causal, true) / r.trainUs / 1e6)} |`,
  );
  const text = [...header, ...lines].join("\n");
  console.log(text);
  writeFileSync(join(outDir, "attention.md"), `${text}\n`);
  writeFileSync(join(outDir, "attention.json"), `${JSON.stringify({ machine, commit: gitState().commit, dtype, causal, rows }, null, 2)}\n`);
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
});
