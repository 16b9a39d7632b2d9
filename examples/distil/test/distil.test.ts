import { tensor } from "@blocksparse/core";
import { GPT2_FFN_LAYERS, GPT2LMHeadModel } from "@blocksparse/models";
import { BlockSparseLinear, SparseOptimizer } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { BUNDLED_TOKENIZER, loadCorpus, WindowSampler } from "../src/data";
import {
  curveSteps,
  DEFAULT_RIGL,
  type ExperimentOptions,
  experimentContext,
  gpt2Config,
  type ResultRow,
  riglOptimizer,
  runExperiments,
  sparsify,
  train,
  validationLoss,
} from "../src/experiment";
import { checkBudgetFits, checkMemoryFits, checkRiglMoves, checkSomeRunFits, estimateSeconds, maxStepsForEpochs, plannedRuns, planSteps, type StepTimes } from "../src/plan";
import { formatMarkdown, formatTable, overfitted, riglClosedShare, riglClosedShareAtBest, seedSummary, targetLines } from "../src/report";

const corpus = await loadCorpus(BUNDLED_TOKENIZER, 20_000);

describe("the Moby Dick corpus", () => {
  it("is the BPE tokens of the text, split 90/10, windows shifted by one", () => {
    expect(corpus.vocabSize).toBe(512);
    expect(corpus.train.length).toBeGreaterThan(4000);
    expect(corpus.validation.length).toBe(Math.ceil((corpus.train.length + corpus.validation.length) * 0.1));
    const { inputs, targets } = new WindowSampler(corpus.train, 2, 8, 1).next();
    expect(Array.from(inputs.subarray(1, 8))).toEqual(Array.from(targets.subarray(0, 7)));
  });
});

const run = { learningRate: 3e-3, context: 16, batchSize: 4, seed: 0 };
const tinyOptions: ExperimentOptions = {
  size: "tiny",
  steps: 4,
  densities: [0.25, 0.1],
  distilDensity: 0.5,
  patch: "ffn",
  mode: "all",
  learningRate: 3e-3,
  context: 16,
  batchSize: 4,
  evalBatches: 1,
  curvePoints: 2,
  dtype: "float32",
  sparseLr: "same",
  seed: 0,
};

describe("training GPT-2 on it", () => {

  it("lowers the validation loss of a tiny dense model, and RigL moves the feed-forward patterns while it trains", () => {
    const config = gpt2Config("tiny", corpus.vocabSize, 16);
    const dense = new GPT2LMHeadModel(config, { seed: 1 });
    const before = validationLoss(dense, corpus, 16, 4, 2, 0);
    train(dense, corpus, { ...run, name: "dense", steps: 12 });
    expect(validationLoss(dense, corpus, 16, 4, 2, 0)).toBeLessThan(before - 0.2);

    const sparse = new GPT2LMHeadModel(config, { seed: 1 });
    sparsify(sparse, 0.25, [GPT2_FFN_LAYERS]);
    const layers = sparse.modules().filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear);
    expect(layers).toHaveLength(4);
    const patterns = layers.map((layer) => layer.pattern);
    const mover = new SparseOptimizer(sparse, { regrow: "gradient", fraction: 0.5, every: 2, schedule: "cosine", totalSteps: 6 });
    train(sparse, corpus, { ...run, name: "rigl", steps: 6, sparse: mover });
    expect(layers.some((layer, i) => !layer.pattern.equals(patterns[i]))).toBe(true);
    expect(layers.map((layer) => layer.nnzBlocks)).toEqual(patterns.map((p) => p.nnzBlocks));
    expect(Number.isFinite(sparse.forward(tensor(corpus.validation.slice(0, 16), [1, 16])).dataSync()[0])).toBe(true);
  }, 120_000);

  it("--sparse-lr inverse-density: the block-sparse weights learn at lr / density, everything else at lr", () => {
    const config = gpt2Config("tiny", corpus.vocabSize, 16);
    const model = new GPT2LMHeadModel(config, { seed: 2 });
    sparsify(model, 0.25, [GPT2_FFN_LAYERS]);
    const layers = model.modules().filter((m): m is BlockSparseLinear => m instanceof BlockSparseLinear);
    const all = new Set(model.parameters());
    // Adam's first step moves each weight with a gradient by about its learning rate: the largest move of a
    // sparse weight is 1/density times the largest move of the (dense) embedding.
    const before = layers[0].weight.value.dataSync().slice();
    const embedding = [...all].find((p) => p.value.rank === 2 && p.value.shape[0] === corpus.vocabSize)!;
    const embeddingBefore = embedding.value.dataSync().slice();
    train(model, corpus, { ...run, learningRate: 1e-3, name: "scaled", steps: 1, sparseLr: "inverse-density" });
    const largest = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((t, v, i) => Math.max(t, Math.abs(v - b[i])), 0);
    const ratio = largest(layers[0].weight.value.dataSync(), before) / largest(embedding.value.dataSync(), embeddingBefore);
    expect(ratio).toBeGreaterThan(0.9 / layers[0].pattern.density);
    expect(ratio).toBeLessThan(1.1 / layers[0].pattern.density);
  }, 60_000);

  it("--recovery-lr sets the recovery runs' learning rate only: at 0 they leave the patched model as it was", () => {
    const options = { ...tinyOptions, mode: "distil" as const, recoveryLearningRate: 0 };
    const rows = runExperiments(experimentContext(corpus, options), options, 4, performance.now());
    const loss = (suffix: string) => rows.find((r) => r.model.endsWith(suffix))?.validationLoss;
    expect(rows.map((r) => r.model)).toEqual(["dense", "FFN 0.5 patched", "FFN 0.5 distil", "FFN 0.5 fine-tune"]);
    expect(loss(" distil")).toBe(loss(" patched"));
    expect(loss(" fine-tune")).toBe(loss(" patched"));
    // The dense model trained at the usual lr (its loss moved from the initial model's).
    const moved = runExperiments(experimentContext(corpus, tinyOptions), { ...tinyOptions, mode: "distil" }, 4, performance.now());
    expect(moved.find((r) => r.model === "dense")?.validationLoss).toBe(rows[0].validationLoss);
    expect(moved.find((r) => r.model.endsWith(" distil"))?.validationLoss).not.toBe(loss(" patched"));
  }, 120_000);

  it("runs every experiment and prints one row per model, with a validation curve and its times", () => {
    const options = { ...tinyOptions, densities: [0.25], patch: "ffn+attn" as const };
    const rows = runExperiments(experimentContext(corpus, options), options, 4, performance.now());
    expect(rows.map((r) => `${r.experiment}: ${r.model} (${r.steps}) ${r.status}`)).toEqual([
      "sparse: dense (4) done",
      "sparse: FFN 0.25 static (4) done",
      "sparse: FFN 0.25 rigl (4) done",
      "distil: dense (4) done",
      "distil: FFN+attn 0.5 patched (0) done",
      "distil: FFN+attn 0.5 distil (1) done",
      "distil: FFN+attn 0.5 fine-tune (1) done",
    ]);
    for (const row of rows) {
      expect(row.validationLoss).toBeGreaterThan(0);
      expect(row.curve.at(-1)).toEqual({ step: row.steps, validationLoss: row.validationLoss });
    }
    expect(rows[0].curve.map((p) => p.step)).toEqual([2, 4]);
    expect(rows[0].msPerStep).toBeGreaterThan(0);
    expect(formatTable(rows)).toContain("FFN+attn 0.5 distil");
    expect(formatMarkdown(rows.slice(0, 3)).split("\n")).toHaveLength(5);
    expect(targetLines(rows)).toEqual([
      expect.stringMatching(/^- density 0\.25: (RigL closes -?\d+% of the static model's gap to dense \(target at least 50%\): (met|not met)\.|the static model is not worse than dense here.*)$/),
      expect.stringMatching(/^- distillation: -?\d+\.\d% from the dense model's validation loss after 1 step \(target within 3%\): (met|not met)\.$/),
    ]);
  }, 120_000);
});

describe("RigL's schedule", () => {
  it("moves the given share every given steps and stops at the given share of training; by default 0.3, steps / 40, 3/4", () => {
    const model = new GPT2LMHeadModel(gpt2Config("tiny", corpus.vocabSize, 16), { seed: 1 });
    sparsify(model, 0.25, [GPT2_FFN_LAYERS]);
    const byDefault = riglOptimizer(model, 400, 0);
    expect([byDefault.fraction, byDefault.every, byDefault.totalSteps]).toEqual([DEFAULT_RIGL.fraction, 10, 300]);
    const custom = riglOptimizer(model, 400, 0, { fraction: 0.1, every: 50, end: 0.5 });
    expect([custom.fraction, custom.every, custom.totalSteps, custom.regrow, custom.schedule]).toEqual([0.1, 50, 200, "gradient", "cosine"]);
    // The cosine decay reaches zero at the end: no update moves anything from there on.
    expect(custom.fractionAt(199)).toBeGreaterThan(0);
    expect(custom.fractionAt(200)).toBe(0);
    for (const p of new Set(model.parameters())) p.dispose();
  });
});

describe("a time budget", () => {
  it("stops a run at its deadline, with the validation loss where it stopped", () => {
    const model = new GPT2LMHeadModel(gpt2Config("tiny", corpus.vocabSize, 16), { seed: 2 });
    let evaluations = 0;
    const started = performance.now();
    const result = train(model, corpus, {
      ...run,
      name: "dense",
      steps: 1000,
      deadline: started + 300,
      evaluateAt: curveSteps(1000, 4),
      evaluate: () => ++evaluations,
    });
    expect(result.completedSteps).toBeGreaterThan(0);
    expect(result.completedSteps).toBeLessThan(1000);
    expect(result.curve).toEqual([{ step: result.completedSteps, validationLoss: 1 }]);
  }, 60_000);

  it("skips the runs whose estimate does not fit what is left, and says so", () => {
    const rows = runExperiments(experimentContext(corpus, tinyOptions), { ...tinyOptions, mode: "sparse", budgetSeconds: 60 }, 4, performance.now(), {
      estimateSeconds: (kind) => (kind.kind === "dense" ? 1 : 3600),
    });
    expect(rows.map((r) => `${r.model} ${r.status} ${r.completedSteps}`)).toEqual(["dense done 4", "FFN 0.25 static skipped 0", "FFN 0.25 rigl skipped 0", "FFN 0.1 static skipped 0", "FFN 0.1 rigl skipped 0"]);
    expect(rows[1].validationLoss).toBeNull();
    expect(targetLines(rows)[0]).toBe("- density 0.25: static and RigL did not both complete; no verdict.");
  }, 60_000);
});

describe("a run that throws", () => {
  it("is recorded as failed with its error, and the others still run", () => {
    const options = { ...tinyOptions, mode: "distil" as const, distilDensity: 1.5 };
    const rows = runExperiments(experimentContext(corpus, options), options, 2, performance.now());
    expect(rows.map((r) => `${r.model} ${r.status}`)).toEqual(["dense done", "FFN 1.5 patched failed", "FFN 1.5 distil failed", "FFN 1.5 fine-tune failed"]);
    expect(rows[1].error).toMatch(/density/);
    expect(rows[1].validationLoss).toBeNull();
    expect(targetLines(rows)).toEqual(["- distillation: the recovery run did not complete; no verdict."]);
  }, 60_000);
});

describe("the report", () => {
  const row = (experiment: ResultRow["experiment"], model: string, density: number, validationLoss: number, steps = 100): ResultRow => ({
    experiment,
    model,
    density,
    steps,
    completedSteps: steps,
    status: "done",
    validationLoss,
    curve: [{ step: steps, validationLoss }],
    seconds: 1,
    msPerStep: 10,
  });

  it("says when the dense model over-fitted, and judges every model at its best checkpoint then (the H200 run's figures)", () => {
    const curve = (points: [number, number][]) => points.map(([step, validationLoss]) => ({ step, validationLoss }));
    const withCurve = (r: ResultRow, points: [number, number][]): ResultRow => ({ ...r, curve: curve(points), validationLoss: points.at(-1)?.[1] ?? null });
    const rows = [
      withCurve(row("sparse", "dense", 1, 0, 2220), [[555, 3.2533], [1110, 3.0156], [1665, 3.0533], [2220, 3.214]]),
      withCurve(row("sparse", "FFN 0.25 static", 0.25, 0, 2220), [[1110, 3.1871], [2220, 3.0342]]),
      withCurve(row("sparse", "FFN 0.25 rigl", 0.25, 0, 2220), [[1110, 3.352], [2220, 3.0528]]),
      withCurve(row("sparse", "FFN 0.1 static", 0.1, 0, 2220), [[1110, 3.2083], [2220, 3.0824]]),
      withCurve(row("sparse", "FFN 0.1 rigl", 0.1, 0, 2220), [[1110, 3.2022], [2220, 3.0391]]),
      withCurve(row("distil", "dense", 1, 0, 8190), [[2048, 3.263], [8190, 6.2622]]),
      row("distil", "FFN 0.5 distil", 0.5, 6.3716, 819),
    ];
    expect(overfitted(rows, "sparse")).toEqual({ step: 1110, validationLoss: 3.0156 });
    expect(riglClosedShareAtBest(rows, 0.1)).toBeCloseTo((3.0824 - 3.0391) / (3.0824 - 3.0156), 12);
    expect(targetLines(rows)).toEqual([
      "- density 0.25: the static model is not worse than dense here; RigL has no gap to close.",
      "- density 0.1: the static model is not worse than dense here; RigL has no gap to close.",
      "- the dense model over-fitted (validation loss 3.0156 at step 1110, 3.2140 at its end), so the lines above compare with a degrading baseline; with every model at its best checkpoint: density 0.25: RigL closes -100% (not met); density 0.1: RigL closes 65% (met).",
      "- distillation: 1.7% from the dense model's validation loss after 819 steps (target within 3%): met.",
      "- the dense teacher over-fitted (validation loss 3.2630 at step 2048, higher at its end): the distillation line is no evidence of recovery; train the dense model to its best checkpoint (fewer steps or more text) and run again.",
    ]);
  });

  it("says which share of the static gap RigL closes and whether the distilled model is within 3% of dense", () => {
    const rows = [
      row("sparse", "dense", 1, 2.0),
      row("sparse", "FFN 0.25 static", 0.25, 2.2),
      row("sparse", "FFN 0.25 rigl", 0.25, 2.05),
      row("sparse", "FFN 0.1 static", 0.1, 2.4),
      row("sparse", "FFN 0.1 rigl", 0.1, 2.3),
      row("distil", "dense", 1, 3.0),
      row("distil", "FFN 0.5 patched", 0.5, 4.0, 0),
      row("distil", "FFN 0.5 distil", 0.5, 3.06, 10),
    ];
    expect(riglClosedShare(rows, 0.25)).toBeCloseTo(0.75, 12);
    expect(targetLines(rows)).toEqual([
      "- density 0.25: RigL closes 75% of the static model's gap to dense (target at least 50%): met.",
      "- density 0.1: RigL closes 25% of the static model's gap to dense (target at least 50%): not met.",
      "- distillation: 2.0% from the dense model's validation loss after 10 steps (target within 3%): met.",
    ]);
    const markdown = formatMarkdown(rows.slice(0, 3)).split("\n");
    expect(markdown[2]).toBe("| dense | 100 | 2.0000 |  |  | 1.0 | 10.0 | done |");
    expect(markdown[4]).toBe("| FFN 0.25 rigl | 100 | 2.0500 | +0.0500 (2.5%) | 75% | 1.0 | 10.0 | done |");
  });
  it("compares a block-sparse model at density 1 with dense, and judges it, rather than taking it for the dense model", () => {
    const rows = [
      row("sparse", "dense", 1, 2.0),
      row("sparse", "FFN 1 static", 1, 2.1),
      row("sparse", "FFN 1 rigl", 1, 2.05),
      row("distil", "dense", 1, 3.0),
      row("distil", "FFN 1 patched", 1, 3.0, 0),
      row("distil", "FFN 1 distil", 1, 3.03, 10),
    ];
    expect(targetLines(rows)).toEqual([
      "- density 1: RigL closes 50% of the static model's gap to dense (target at least 50%): met.",
      "- distillation: 1.0% from the dense model's validation loss after 10 steps (target within 3%): met.",
    ]);
    const markdown = formatMarkdown(rows).split("\n");
    expect(markdown[3]).toBe("| FFN 1 static | 100 | 2.1000 | +0.1000 (5.0%) |  | 1.0 | 10.0 | done |");
    expect(markdown[6]).toBe("| FFN 1 patched | 0 | 3.0000 | +0.0000 (0.0%) |  | 1.0 | 10.0 | done |");
    const seeds = seedSummary([rows.slice(0, 3), rows.slice(0, 3)]).trim().split("\n");
    expect(seeds.at(-1)).toBe("- density 1, mean of 2 seeds: RigL closes 50% of the static model's gap to dense (target at least 50%): met.");
  });

  it("averages several seeds: RigL's share on the mean losses, each seed's beside it, a missing run leaves its model unjudged", () => {
    const seed = (dense: number, s25: number, r25: number, s10: number, r10: number) => [
      row("sparse", "dense", 1, dense),
      row("sparse", "FFN 0.25 static", 0.25, s25),
      row("sparse", "FFN 0.25 rigl", 0.25, r25),
      row("sparse", "FFN 0.1 static", 0.1, s10),
      row("sparse", "FFN 0.1 rigl", 0.1, r10),
    ];
    // Means: dense 2.0, 0.25 static 2.2 / rigl 2.1 (50%), 0.1 static 2.4 / rigl 2.36 (10%).
    const runs = [seed(1.9, 2.1, 2.05, 2.3, 2.22), seed(2.1, 2.3, 2.15, 2.5, 2.5)];
    const lines = seedSummary(runs, ["seed 0", "seed 1"]).trim().split("\n");
    expect(lines[0]).toBe("| model | seed 0 | seed 1 | mean | vs dense | RigL closes (mean; per seed) |");
    expect(lines[4]).toBe("| FFN 0.25 rigl | 2.0500 | 2.1500 | 2.1000 | +0.1000 | 50%; 25%, 75% |");
    expect(lines.slice(-2)).toEqual([
      "- density 0.25, mean of 2 seeds: RigL closes 50% of the static model's gap to dense (target at least 50%): met.",
      "- density 0.1, mean of 2 seeds: RigL closes 10% of the static model's gap to dense (target at least 50%): not met.",
    ]);
    const missing = [runs[0], runs[1].map((r) => (r.model === "FFN 0.1 rigl" ? { ...r, status: "stopped" as const } : r))];
    const partial = seedSummary(missing).trim().split("\n");
    expect(partial.find((l) => l.startsWith("| FFN 0.1 rigl"))).toBe("| FFN 0.1 rigl | 2.2200 | - | - |  |  |");
    expect(partial.at(-1)).toContain("density 0.1: static and RigL not both complete in every seed");
  });
});

describe("capping the steps at a number of passes over the text", () => {
  it("takes the most steps (a multiple of 10) that see the training tokens at most that many times", () => {
    expect(maxStepsForEpochs(8, 510_827, 32 * 128)).toBe(990);
    expect(maxStepsForEpochs(0.5, 510_827, 4096)).toBe(60);
    // Fewer than 10 steps is refused, naming the least that allows 10 (the cap was raised to 10 steps: 30 times 0.001 passes).
    expect(() => maxStepsForEpochs(0.01, 1000, 4096)).toThrow(/^--max-epochs: 0\.01 passes over the 1000 training tokens are fewer than 10 steps of 4096 tokens; 10 steps need --max-epochs 41 or more$/);
    expect(() => maxStepsForEpochs(0.001, 85_353, 8 * 32)).toThrow(/10 steps need --max-epochs 0\.03 or more$/);
    expect(maxStepsForEpochs(0.03, 85_353, 8 * 32)).toBe(10);
  });
});

describe("planning the steps for a budget", () => {
  const times: StepTimes = { dense: 20, sparse: { "0.25": { step: 15, update: 10 }, "0.1": { step: 12, update: 8 } }, evalBatch: 5, setup: 100 };

  it("takes the most steps whose runs all fit the budget less its margin", () => {
    const options = { ...tinyOptions, mode: "sparse" as const, evalBatches: 16, curvePoints: 4 };
    const steps = planSteps(times, options, 240);
    const total = (s: number) => plannedRuns(options, s).reduce((sum, r) => sum + estimateSeconds(times, options, r.run, r.steps), 0);
    expect(steps % 10).toBe(0);
    expect(total(steps)).toBeLessThanOrEqual(240 * 0.85);
    expect(total(steps + 10)).toBeGreaterThan(240 * 0.85);
    // dense 20 + 2 x (15 + 12) ms per step, 30 updates of 10 and 8 ms, 5 x 4 x 16 validation batches of 5 ms, 5 setups of 100 ms.
    expect(estimateSeconds(times, options, { kind: "rigl", density: 0.25 }, 1000)).toBeCloseTo((1000 * 15 + 30 * 10 + 4 * 16 * 5 + 100) / 1000, 9);
  });

  it("--steps auto refuses a budget too small for its fewest steps, naming --budget and what would fit, rather than skip every run", () => {
    const options = { ...tinyOptions, mode: "sparse" as const, evalBatches: 16, curvePoints: 4 };
    // planSteps never plans fewer than 10 steps: 3.0 s here, 3.6 s with the margin, on top of the 10 s already spent.
    expect(planSteps(times, options, 0.001)).toBe(10);
    expect(() => checkBudgetFits(times, options, 10, 10, 0.001)).toThrow(
      /^--budget 10: 0 s are left after measuring the step times, and 10 steps per model \(the fewest --steps auto plans\) need about 3\.0 s \(3\.6 s with the 15% margin the plan keeps\); give --budget 14 or more, or --steps N$/,
    );
    expect(() => checkBudgetFits(times, options, planSteps(times, options, 240), 250, 240)).not.toThrow();
  });

  it("plans a huge budget in a few dozen estimates, at most a safe integer of steps", () => {
    // A walk in strides of 2^20 steps: --steps auto --budget 1e20 never finished planning.
    const options = { ...tinyOptions, mode: "sparse" as const };
    const steps = planSteps(times, options, 1e20);
    expect(Number.isSafeInteger(steps)).toBe(true);
    expect(steps % 10).toBe(0);
    expect(planSteps(times, options, 1e300)).toBe(Number.MAX_SAFE_INTEGER - 1);
  });

  it("a fixed --steps refuses a budget that no run fits, naming --budget, rather than skip every run", () => {
    const options = { ...tinyOptions, mode: "all" as const, evalBatches: 16, curvePoints: 4 };
    // The quickest run, FFN 0.1 static: 10 x 12 ms, 4 x 16 validation batches of 5 ms, a setup of 100 ms.
    expect(() => checkSomeRunFits(times, options, 10, 10, 0.001)).toThrow(
      /^--budget 10: 0 s are left after measuring the step times, and the quickest run of 10 steps needs about 0\.5 s, so every run would be skipped; give --budget 11 or more, or fewer --steps$/,
    );
    expect(() => checkSomeRunFits(times, options, 10, 10, 1)).not.toThrow();
  });

  it("plans the recovery runs at a tenth of the steps, distillation before fine-tuning", () => {
    expect(plannedRuns({ ...tinyOptions, mode: "distil" }, 300)).toEqual([
      { run: { kind: "dense" }, steps: 300 },
      { run: { kind: "fine-tune", density: 0.5 }, steps: 0 },
      { run: { kind: "distil", density: 0.5 }, steps: 30 },
      { run: { kind: "fine-tune", density: 0.5 }, steps: 30 },
    ]);
  });
});

describe("the checks main.ts makes before any model trains", () => {
  const tiny = { n_embd: 64, n_layer: 2, n_head: 4, vocab_size: 512 };

  it("refuses a batch that cannot fit in memory, naming --batch-size and --context, and passes the sizes that do", () => {
    // 1e8 windows of 8 tokens: the run printed its setup, then ground on towards the memory's end.
    expect(() => checkMemoryFits(tiny, 100_000_000, 8, 24 * 2 ** 30)).toThrow(
      /^--batch-size 100000000, --context 8: training needs at least 1621 GiB \(0\.0 GiB for the parameters, their gradients and AdamW's moments; 1621 GiB for one batch's activations\), and this machine has 24 GiB; use a smaller --batch-size or --context$/,
    );
    expect(() => checkMemoryFits({ n_embd: 768, n_layer: 12, n_head: 12, vocab_size: 512 }, 1, 8, 2 ** 29)).toThrow(/use a smaller --size$/);
    expect(() => checkMemoryFits(tiny, 8, 32, 24 * 2 ** 30)).not.toThrow();
    expect(() => checkMemoryFits({ ...tiny, n_embd: 768, n_layer: 12, n_head: 12 }, 16, 256, 24 * 2 ** 30)).not.toThrow();
  });

  it("refuses a RigL schedule that would never move a pattern, naming the flags, rather than report RigL as its static twin", () => {
    // Updates fall at calls every, 2 x every, ... before floor(end x steps), as SparseOptimizer's willUpdate says.
    expect(() => checkRiglMoves(20, { every: 50, end: 0.75 }, true)).toThrow(
      /^--rigl-every 50: RigL's patterns stop moving at step 15 \(--rigl-end 0\.75 of the 20 steps\), before its first update, .*; use --rigl-every 14 or less, or more --steps$/,
    );
    expect(() => checkRiglMoves(2, DEFAULT_RIGL, false)).toThrow(/^--rigl-every 1 \(the default, steps \/ 40\): .* stop moving at step 1 .*; use more --steps, a larger --rigl-end, or --mode distil$/);
    expect(() => checkRiglMoves(20, { ...DEFAULT_RIGL, end: 0.01 }, false)).toThrow(/--rigl-end 0\.01 of the 20 steps/);
    // The check agrees with the SparseOptimizer riglOptimizer makes: it refuses exactly the schedules that never update.
    const model = new GPT2LMHeadModel(gpt2Config("tiny", 512, 8), { seed: 0 });
    for (const [steps, schedule] of [[20, DEFAULT_RIGL], [3, DEFAULT_RIGL], [20, { ...DEFAULT_RIGL, every: 14 }], [2, DEFAULT_RIGL], [20, { ...DEFAULT_RIGL, every: 15 }], [20, { ...DEFAULT_RIGL, end: 0.01 }]] as const) {
      const mover = riglOptimizer(model, steps, 0, schedule);
      const moves = Array.from({ length: steps }, (_, call) => mover.willUpdate(call)).some(Boolean);
      if (moves) expect(() => checkRiglMoves(steps, schedule, false)).not.toThrow();
      else expect(() => checkRiglMoves(steps, schedule, false)).toThrow(/before its first update/);
    }
  });
});
