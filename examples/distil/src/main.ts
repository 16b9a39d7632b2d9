// Registers the cuda and native cpu backends; the engine starts the first that loads here (cuda, then cpu),
// warning once for each that does not, and runs on js when neither does.
import "@blocksparse/backend-cpu";
import "@blocksparse/backend-cuda";
import { accessSync, constants, mkdirSync, statSync, writeFileSync } from "node:fs";
import { totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { BackendError, getBackendInstance, listBackends, setBackend } from "@blocksparse/core";
import { plural } from "../../shared/text";
import { BUNDLED_TOKENIZER, loadCorpus } from "./data";
import { checkDensities, DEFAULT_RIGL, type ExperimentOptions, experimentContext, type ResultRow, runExperiments, SIZES } from "./experiment";
import { parseOptions, USAGE } from "./options";
import { checkBudgetFits, checkMemoryFits, checkRiglMoves, checkSomeRunFits, estimateSeconds, maxStepsForEpochs, measureStepTimes, planSteps, type StepTimes } from "./plan";
import { formatMarkdown, formatTable, targetLines } from "./report";

/** setBackend, its error also naming the backends that do start here. */
function chooseBackend(name: string): void {
  try {
    setBackend(name);
  } catch (error) {
    if (!(error instanceof BackendError)) throw error;
    const starting = listBackends().filter((other) => other !== name && starts(other));
    throw new BackendError(
      `--backend ${name}: ${error.message}\n--backend ${name} cannot run here; these can: ${starting.join(", ")} ` +
        `(--backend ${starting[0]}, or leave --backend out to take the first that starts)`,
    );
  }
}

function starts(backend: string): boolean {
  try {
    getBackendInstance(backend);
    return true;
  } catch {
    return false;
  }
}

/**
 * mkdir -p, one level at a time: Node's own `mkdirSync(folder, { recursive: true })` never returns for a folder
 * under /proc (mkdir says ENOENT, its parent exists, and it tries again without end), so `--out /proc/x` hung.
 */
function makeFolder(folder: string): void {
  const path = resolve(folder);
  try {
    mkdirSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "EEXIST" && statSync(path).isDirectory()) return;
    if (code !== "ENOENT" || dirname(path) === path) throw error;
    makeFolder(dirname(path));
    mkdirSync(path);
  }
}

/** Makes the --out folder and proves it writable before any model trains, not after the first one has. */
function checkOutputFolder(folder: string): void {
  try {
    makeFolder(folder);
    accessSync(folder, constants.W_OK);
  } catch (error) {
    throw new Error(`--out ${folder}: cannot write there (${error instanceof Error ? error.message : String(error)})`);
  }
}

const EXPERIMENT_TITLES: Record<ResultRow["experiment"], string> = {
  sparse: "Dense vs block-sparse feed-forward layers, static vs RigL (same initialisation, batches and steps)",
  distil: "Dense, then patched and recovered for a tenth of its steps: distillation vs fine-tuning",
};

/** The markdown page of a run: its setup, one table per experiment, the targets, the validation curves. */
function markdownReport(rows: ResultRow[], setup: string[], mode: string): string {
  const parts = [`# GPT-2 on Moby Dick: ${mode}`, "", ...setup.map((line) => `- ${line}`)];
  for (const experiment of ["sparse", "distil"] as const) {
    const part = rows.filter((r) => r.experiment === experiment);
    if (part.length > 0) parts.push("", `## ${EXPERIMENT_TITLES[experiment]}`, "", formatMarkdown(part));
  }
  const failed = rows.filter((r) => r.error !== undefined);
  if (failed.length > 0) parts.push("", "Failed runs:", "", ...failed.map((r) => `- ${r.experiment}: ${r.model}: ${r.error}`));
  parts.push("", "Targets:", "", ...targetLines(rows), "", "## Validation loss along training", "", "| model | step: validation loss |", "| --- | --- |");
  for (const row of rows) if (row.curve.length > 0) parts.push(`| ${row.experiment}: ${row.model} | ${row.curve.map((p) => `${p.step}: ${p.validationLoss.toFixed(4)}`).join(", ")} |`);
  return `${parts.join("\n")}\n`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const parsed = parseOptions(argv[0] === "--" ? argv.slice(1) : argv);
  if (parsed === null) {
    console.log(USAGE);
    return;
  }
  // The budget counts from the process's start (performance.now() is 0 there).
  const startedAt = 0;
  if (parsed.backend !== undefined) chooseBackend(parsed.backend);
  if (parsed.out !== undefined) checkOutputFolder(parsed.out);
  const backend = getBackendInstance().name;
  const options: ExperimentOptions = { ...parsed.options, dtype: parsed.dtype ?? (backend === "cuda" ? "bfloat16" : "float32") };
  const corpus = await loadCorpus(parsed.tokenizer, parsed.maxChars).catch((error: unknown) => {
    throw parsed.tokenizer === BUNDLED_TOKENIZER ? error : new Error(`--tokenizer ${parsed.tokenizer}: ${error instanceof Error ? error.message : String(error)}`);
  });
  const setup = experimentContext(corpus, options);
  // Every run samples windows of context + 1 tokens from both splits; too short a text would fail each run alike.
  if (corpus.validation.length <= setup.context) {
    throw new RangeError(
      `--context ${setup.context}${parsed.maxChars === undefined ? "" : ` with --max-chars ${parsed.maxChars}`}: the validation split has ${corpus.validation.length} tokens, ` +
        `too few for windows of ${setup.context + 1}; use a shorter --context or a larger --max-chars`,
    );
  }
  const { n_embd, n_layer, n_head } = SIZES[options.size];
  checkMemoryFits({ n_embd, n_layer, n_head, vocab_size: corpus.vocabSize }, setup.batchSize, setup.context, totalmem());
  // A layer must keep a block at each density, before the step times are measured and any model trains.
  checkDensities(setup, options);
  const budget = options.budgetSeconds;
  let times: StepTimes | undefined;
  let steps = options.steps === "auto" ? 0 : options.steps;
  if (budget !== undefined) {
    times = measureStepTimes(setup, options);
    const timing = [`dense ${times.dense.toFixed(1)}`, ...Object.entries(times.sparse).map(([d, t]) => `FFN ${d} ${t.step.toFixed(1)} (+${t.update.toFixed(1)} per RigL update)`)];
    if (times.distil !== undefined) timing.push(`distil ${times.distil.toFixed(1)}`, `fine-tune ${times.fineTune?.toFixed(1)}`);
    console.log(`Measured ms per step: ${timing.join(", ")}; ${times.evalBatch.toFixed(1)} per validation batch.`);
    if (options.steps === "auto") {
      const left = budget - (performance.now() - startedAt) / 1000;
      steps = planSteps(times, options, left);
      checkBudgetFits(times, options, steps, budget, left);
    }
  }
  const epochCap = parsed.maxEpochs === undefined ? undefined : maxStepsForEpochs(parsed.maxEpochs, corpus.train.length, setup.batchSize * setup.context);
  if (epochCap !== undefined && steps > epochCap) steps = epochCap;
  if (times !== undefined && budget !== undefined && options.steps !== "auto") checkSomeRunFits(times, options, steps, budget, budget - (performance.now() - startedAt) / 1000);
  const rigl = options.rigl ?? DEFAULT_RIGL;
  if (options.mode !== "distil") checkRiglMoves(steps, rigl, rigl.every !== undefined);
  const setupLines = [
    `GPT-2 '${options.size}': ${n_layer} layers, width ${n_embd}, ${n_head} heads, context ${setup.context}, batch ${setup.batchSize}, vocabulary ${corpus.vocabSize} (byte-level BPE)`,
    `Moby Dick: ${corpus.train.length} training and ${corpus.validation.length} validation tokens; validation loss = mean cross-entropy (nats per token) over ${options.evalBatches} fixed validation windows of ${setup.batchSize} x ${setup.context}`,
    `backend '${backend}', ${options.dtype}${options.dtype === "float32" ? "" : " mixed precision (float32 master weights and moments)"}; AdamW lr ${options.learningRate}${options.sparseLr === "same" ? "" : " (block-sparse weights: lr / density)"}, 5% warm-up, cosine to a tenth; seed ${options.seed}`,
    `${plural(steps, "step")} per model trained from scratch${steps === epochCap ? ` (capped at ${parsed.maxEpochs} passes over the training tokens)` : options.steps === "auto" ? ` (the most that fit the ${budget} s budget, from the measured step times)` : ""}; 32x32 blocks`,
    ...(options.mode !== "sparse" && options.recoveryLearningRate !== undefined ? [`recovery runs (distillation, fine-tuning): peak lr ${options.recoveryLearningRate}`] : []),
    `RigL: ${rigl.fraction} of each layer's blocks moved at the first update, every ${plural(rigl.every ?? Math.max(1, Math.round(steps / 40)), "step")}, cosine-decayed to 0 at ${rigl.end} of the steps; grown where the gradient is largest, at zero`,
  ];
  console.log(setupLines.join("\n"));
  const name = `gpt2-moby-dick-${options.mode}`;
  /** The markdown page and the JSON, rewritten after every run so that a run cut short still leaves what was done. */
  const write = (rows: ResultRow[], finished: boolean) => {
    if (parsed.out === undefined) return;
    const seconds = (performance.now() - startedAt) / 1000;
    const lines = [...setupLines, `${finished ? "total" : "so far (still running)"} ${seconds.toFixed(0)} s${budget === undefined ? "" : ` of a ${budget} s budget`}`];
    makeFolder(parsed.out);
    writeFileSync(join(parsed.out, `${name}.md`), markdownReport(rows, lines, options.mode));
    const { corpus: _, ...shapes } = setup;
    const json = { options, backend, steps, seconds, finished, stepTimesMs: times ?? null, setup: { ...shapes, trainTokens: corpus.train.length, validationTokens: corpus.validation.length, vocabSize: corpus.vocabSize }, rows };
    writeFileSync(join(parsed.out, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`);
  };
  const done: ResultRow[] = [];
  let last = 0;
  const rows = runExperiments(setup, options, steps, startedAt, {
    onStep: (model, step, total, loss) => {
      const now = performance.now();
      if (step === total || now - last > 5000) {
        last = now;
        console.log(`${model.padEnd(28)} step ${String(step).padStart(6)}/${total}  loss ${loss.toFixed(4)}`);
      }
    },
    onRow: (row) => {
      console.log(
        `${row.model.padEnd(28)} ${row.status === "stopped" ? `stopped at ${row.completedSteps}/${row.steps}` : row.status}: ` +
          `${row.validationLoss === null ? "no validation loss" : `validation loss ${row.validationLoss.toFixed(4)}`}, ${row.seconds.toFixed(1)} s` +
          `${row.msPerStep === null ? "" : `, ${row.msPerStep.toFixed(1)} ms/step`}${row.error === undefined ? "" : `; ${row.error}`}`,
      );
      done.push(row);
      write(done, false);
    },
    estimateSeconds: times === undefined ? undefined : (run, runSteps) => estimateSeconds(times, options, run, runSteps),
  });
  const seconds = (performance.now() - startedAt) / 1000;
  console.log(`\n${formatTable(rows)}`);
  console.log(targetLines(rows).join("\n"));
  console.log(`Total ${seconds.toFixed(0)} s on '${backend}'${budget === undefined ? "" : ` (budget ${budget} s)`}.`);
  if (parsed.out !== undefined) {
    write(rows, true);
    // Absolute: `pnpm -F` runs this in the example's folder, not where the command was typed.
    console.log(`Wrote ${resolve(parsed.out, `${name}.md`)} and .json`);
  }
  if (rows.some((row) => row.status === "failed")) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  process.exitCode = 1;
});
