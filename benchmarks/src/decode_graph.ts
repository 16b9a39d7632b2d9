/**
 * Decoding through a stack of layers, eager and captured, applied in turn to [tokens, width]: the per-token work
 * of a language model's generation loop. `--model linear`: `--layers` width x width layers (BlockSparseLinear, or
 * Linear for the dense row). `--model ffn`: `--layers` pre-norm feed-forward blocks, h + fc2(GELU(fc1(LayerNorm(h))))
 * with fc1 width -> `--hidden` and fc2 back (both block-sparse, or both Linear), so the products alternate with the
 * small kernels of a transformer (LayerNorm, bias + GELU, the residual add). Each case is timed as eager calls and
 * as one captureGraph replay of the whole stack; the replay's output is first checked equal, bit for bit, to the
 * eager one. Prints microseconds per layer (per block for ffn). With --torch, PyTorch's dense stack of the same
 * shapes (python/decode_torch.py: parameters in the dtype, inference_mode, eager and one CUDA graph replay) is
 * timed in the same run and set beside each row.
 *
 *   tsx src/decode_graph.ts [--backend cuda] [--model linear|ffn] [--width 4096] [--hidden 16384] [--layers 16]
 *     [--tokens 1,8] [--blocks 32,64] [--densities 0.25,0.1] [--dtype bfloat16] [--iterations 200] [--torch]
 *     [--out DIR]
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { noGrad } from "@blocksparse/autograd";
import { add, captureGraph, cast, getBackendInstance, randn, type Tensor, tidy } from "@blocksparse/core";
import { BlockSparseLinear, forwardLinearActivation, GELU, LayerNorm, Linear, Module } from "@blocksparse/nn";
import { parseDecodeGraphFlags } from "./decode_graph_flags";
import { describeFailure, FlagError } from "./flags";
import { describeMachine, gitState, repoRoot } from "./machine";
import { plural } from "./report";
import { startBackend } from "./start_backend";
import { ValidationError } from "./measure";
import { timeUs } from "./timing";
import { checkIdentical } from "./validate";

interface Row {
  tokens: number;
  block: number;
  density: number;
  eagerUsPerLayer: number;
  capturedUsPerLayer: number;
}

/** A pre-norm feed-forward block with its residual: h + fc2(GELU(fc1(LayerNorm(h)))). */
class FeedForwardBlock extends Module {
  ln: LayerNorm;
  fc1: Module;
  act = new GELU();
  fc2: Module;
  constructor(width: number, fc1: Module, fc2: Module) {
    super();
    this.ln = new LayerNorm(width);
    this.fc1 = fc1;
    this.fc2 = fc2;
  }
  forward(h: Tensor): Tensor {
    return tidy(() => add(h, this.fc2.forward(forwardLinearActivation(this.fc1, this.act, this.ln.forward(h)))));
  }
}

interface TorchRow {
  tokens: number;
  eagerUsPerLayer: number;
  capturedUsPerLayer: number;
}

function runTorch(args: { model: string; width: number; hidden: number; layers: number; tokens: number[]; dtype: string; iterations: number }): TorchRow[] {
  const script = join(repoRoot, "benchmarks", "python", "decode_torch.py");
  const flags = ["--model", args.model, "--width", String(args.width), "--hidden", String(args.hidden), "--layers", String(args.layers)];
  flags.push("--tokens", args.tokens.join(","), "--dtype", args.dtype, "--iterations", String(args.iterations));
  const result = spawnSync("python3", [script, ...flags], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  if (result.status !== 0) throw new Error(`decode_torch.py failed (exit ${result.status}): ${result.stdout}`);
  return JSON.parse(result.stdout) as TorchRow[];
}

async function main(): Promise<void> {
  const { values, dtype, model, width, hidden, layerCount, iterations, tokenCounts, blocks, densities, outDir } = parseDecodeGraphFlags();
  const started = await startBackend(values.backend);
  // Every case is timed captured beside eager: refused here, not by captureGraph's stack inside the first case.
  if (getBackendInstance().graphs === undefined) {
    throw new FlagError(`--backend ${values.backend}: the ${started.backend} backend cannot record graphs, and every case is timed as a captured replay; run it where cuda starts`);
  }
  const rows: Row[] = [];
  const cases: [number, number][] = [[0, 1]];
  for (const block of blocks) for (const density of densities) cases.push([block, density]);
  for (const tokens of tokenCounts) {
    for (const [block, density] of cases) {
      const linear = (inFeatures: number, outFeatures: number, seed: number): Module =>
        block === 0
          ? new Linear(inFeatures, outFeatures, { seed })
          : new BlockSparseLinear(inFeatures, outFeatures, { density, blockShape: [block, block], seed });
      const layers: Module[] = Array.from({ length: layerCount }, (_, i) =>
        (model === "linear"
          ? linear(width, width, 100 + i)
          : new FeedForwardBlock(width, linear(width, hidden, 100 + 2 * i), linear(hidden, width, 101 + 2 * i))
        ).to(dtype),
      );
      const x = tidy(() => cast(randn([tokens, width], { seed: 7, std: 0.05 }), dtype));
      const stack = (): Tensor => noGrad(() => tidy(() => layers.reduce((h, layer) => layer.forward(h), x)));
      try {
        const eager = stack();
        const expected = Array.from(eager.dataSync());
        eager.dispose();
        const graph = captureGraph(stack);
        try {
          // Bit for bit, and finite: NaN in both the replay and the eager stack is no agreement.
          const check = checkIdentical("the replay against the eager stack", graph.replay().dataSync(), expected);
          if (!check.ok) throw new ValidationError(`tokens ${tokens} block ${block} d=${density}`, [check]);
          const eagerUs = timeUs(() => stack().dispose(), started.synchronize, iterations);
          const capturedUs = timeUs(() => void graph.replay(), started.synchronize, iterations);
          rows.push({ tokens, block, density, eagerUsPerLayer: eagerUs / layerCount, capturedUsPerLayer: capturedUs / layerCount });
          const last = rows[rows.length - 1];
          process.stderr.write(`tokens ${tokens} ${block === 0 ? "dense" : `${block}x${block} d=${density}`}: eager ${last.eagerUsPerLayer.toFixed(2)} us/layer, captured ${last.capturedUsPerLayer.toFixed(2)} us/layer\n`);
        } finally {
          graph.dispose();
          graph.result.dispose();
        }
      } finally {
        x.dispose();
        for (const layer of layers) for (const p of layer.parameters()) p.dispose();
      }
    }
  }
  const machine = describeMachine(started.gpu).name;
  const what =
    model === "linear"
      ? `${plural(layerCount, "layer")} of ${width} x ${width}`
      : `${plural(layerCount, "feed-forward block")} (LayerNorm, ${width} -> ${hidden}, GELU, ${hidden} -> ${width}, residual)`;
  const unit = model === "linear" ? "layer" : "block";
  const torchRows = values.torch
    ? runTorch({ model, width, hidden, layers: layerCount, tokens: tokenCounts, dtype, iterations })
    : [];
  const torchOf = (tokens: number): TorchRow | undefined => torchRows.find((t) => t.tokens === tokens);
  const torchHeader = values.torch ? ` PyTorch dense captured (us/${unit}) | PyTorch captured / ours captured |` : "";
  const torchCells = (r: Row): string => {
    const t = torchOf(r.tokens);
    return values.torch && t ? ` ${t.capturedUsPerLayer.toFixed(2)} | ${(t.capturedUsPerLayer / r.capturedUsPerLayer).toFixed(2)} |` : "";
  };
  const torchLines = torchRows.map(
    (t) => `- PyTorch, ${t.tokens} token(s), dense: eager ${t.eagerUsPerLayer.toFixed(2)} us/${unit}, captured ${t.capturedUsPerLayer.toFixed(2)} us/${unit}.`,
  );
  const lines = [
    `# Decoding through ${what}, eager and captured (${dtype})`,
    "",
    `Machine: ${machine}. Commit ${gitState().commit}. Microseconds per ${unit} (the stack's time / ${layerCount}); the captured stack is one captureGraph replay, checked equal to the eager one first.`,
    "",
    `| tokens | layer | density | eager (us/${unit}) | captured (us/${unit}) | eager / captured |${torchHeader}`,
    `| --- | --- | --- | --- | --- | --- |${values.torch ? " --- | --- |" : ""}`,
    ...rows.map(
      (r) =>
        `| ${r.tokens} | ${r.block === 0 ? "dense Linear" : `${r.block}x${r.block} blocks`} | ${r.density} | ${r.eagerUsPerLayer.toFixed(2)} | ${r.capturedUsPerLayer.toFixed(2)} | ${(r.eagerUsPerLayer / r.capturedUsPerLayer).toFixed(2)} |${torchCells(r)}`,
    ),
    "",
    ...(torchLines.length > 0 ? [...torchLines, ""] : []),
  ];
  writeFileSync(join(outDir, "decode-graph.md"), lines.join("\n"));
  writeFileSync(join(outDir, "decode-graph.json"), `${JSON.stringify({ machine, model, width, hidden: model === "ffn" ? hidden : undefined, layers: layerCount, dtype, rows, torch: values.torch ? torchRows : undefined }, null, 1)}\n`);
  process.stdout.write(lines.join("\n"));
}

main().catch((error: unknown) => {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
});
