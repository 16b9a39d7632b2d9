// Registers the cuda and native cpu backends; the engine starts the first that loads here (cuda, then cpu),
// warning once for each that does not, and runs on js when neither does.
import "@blocksparse/backend-cpu";
import "@blocksparse/backend-cuda";
import { accessSync, constants, mkdirSync, statSync, writeFileSync } from "node:fs";
import { totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { BackendError, type FloatDType, getBackendInstance, listBackends, setBackend } from "@blocksparse/core";
import { decimal, rejectRepeated, rejectRepeatedValues, seedFlag, withFlagHelp } from "../../shared/flags";
import { plural } from "../../shared/text";
import { BUNDLED_TOKENIZER, loadCorpus } from "./data";
import { DEFAULT_RIGL, type ExperimentOptions, experimentContext, type ResultRow, runExperiments, SIZES, type Size } from "./experiment";
import { checkBudgetFits, checkMemoryFits, checkRiglMoves, estimateSeconds, maxStepsForEpochs, measureStepTimes, planSteps, type StepTimes } from "./plan";
import { formatMarkdown, formatTable, targetLines } from "./report";

const DEFAULTS: Omit<ExperimentOptions, "dtype"> = {
  size: "tiny",
  steps: 20,
  densities: [0.25, 0.1],
  distilDensity: 0.5,
  patch: "ffn",
  mode: "all",
  learningRate: 1e-3,
  evalBatches: 4,
  curvePoints: 4,
  rigl: DEFAULT_RIGL,
  sparseLr: "same",
  seed: 0,
};

const USAGE = `A GPT-2 language model on Moby Dick (BPE tokens): dense vs block-sparse feed-forward
layers, static or RigL; and a trained dense model patched and recovered by fine-tuning or distillation.

  --size NAME          ${Object.entries(SIZES)
    .map(([name, s]) => `${name} (${s.n_layer} layers, width ${s.n_embd}, context ${s.context}, batch ${s.batchSize})`)
    .join(",\n                       ")} (default ${DEFAULTS.size})
  --steps N|auto       training steps of each model trained from scratch (default ${DEFAULTS.steps});
                       auto: the most that fit --budget, from step times measured first
  --max-epochs E       at most E passes over the training tokens per model (steps capped, auto or not):
                       a model this size over-fits the book's 510k tokens in a few passes
  --budget SECONDS     wall-clock budget from the start: runs that would not fit are skipped,
                       a run still going at the end stops there (the table says which)
  --density LIST       densities of the static / RigL comparison, comma-separated or repeated (default ${DEFAULTS.densities.join(",")})
  --rigl-fraction X    share of each layer's blocks RigL moves at its first update (default ${DEFAULT_RIGL.fraction})
  --rigl-every N       steps between RigL updates (default: steps / 40)
  --rigl-end F         share of the steps after which the patterns stop moving (default ${DEFAULT_RIGL.end})
  --distil-density X   density of the patched-and-recovered model (default ${DEFAULTS.distilDensity})
  --recovery-steps N   recovery steps (default: steps / 10)
  --patch WHAT         layers patched for the recovery: ffn or ffn+attn (default ${DEFAULTS.patch})
  --mode MODE          sparse, distil or all (default ${DEFAULTS.mode})
  --lr X               AdamW peak learning rate (default ${DEFAULTS.learningRate})
  --recovery-lr X      peak learning rate of the recovery runs (default: --lr); a trained model
                       patched to block-sparse is already near a minimum, and the pre-training
                       peak can move it further than the recovery brings it back
  --sparse-lr RULE     the block-sparse weights' learning rate: same (as the others') or
                       inverse-density (lr / density: the same change of each output per step as
                       a dense layer's under Adam) (default ${DEFAULTS.sparseLr})
  --context N, --batch-size N   override the size's
  --eval-batches N     validation windows per loss (default ${DEFAULTS.evalBatches})
  --curve-points N     validation losses along each run, the last at its end (default ${DEFAULTS.curvePoints})
  --dtype TYPE         float32 or bfloat16 (mixed precision: float32 master weights in AdamW);
                       default bfloat16 on cuda, float32 elsewhere
  --out DIR            also write the table as markdown and every figure as JSON there
  --tokenizer DIR      a folder with tokenizer.json (default: the bundled 512-token BPE)
  --max-chars N        use only the text's first N characters
  --backend NAME       js, cpu or cuda (default: cuda when it starts here, else cpu, else js)
  --seed N             (default ${DEFAULTS.seed})
  --help`;

interface Parsed {
  options: Omit<ExperimentOptions, "dtype">;
  dtype?: FloatDType;
  tokenizer: string;
  maxChars?: number;
  maxEpochs?: number;
  backend?: string;
  out?: string;
}

function parse(argv: string[]): Parsed | null {
  const flags = [
    "size", "steps", "max-epochs", "budget", "density", "distil-density", "recovery-steps", "patch", "mode", "lr", "recovery-lr", "context", "batch-size",
    "eval-batches", "curve-points", "dtype", "out", "tokenizer", "max-chars", "backend", "seed", "rigl-fraction", "rigl-every", "rigl-end", "sparse-lr",
  ];
  const flagTypes: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = Object.fromEntries(flags.map((name) => [name, { type: "string" }]));
  flagTypes.help = { type: "boolean", short: "h" };
  // Repeatable, as the other examples' --density: a second --density adds densities rather than replacing the first.
  flagTypes.density = { type: "string", multiple: true };
  const { values, tokens } = withFlagHelp(flagTypes, argv, (args) => parseArgs({ args, strict: true, options: flagTypes, tokens: true }));
  rejectRepeated(tokens, flagTypes);
  if (values.help) return null;
  const text = (name: string) => values[name] as string | undefined;
  const number = (name: string, integer: boolean, what = integer ? "a positive integer" : "a number"): number | undefined => {
    const raw = text(name);
    if (raw === undefined) return undefined;
    const value = decimal(raw);
    // A safe integer: "1e300" passed as a whole number of --eval-batches or --recovery-steps, then ran without end.
    if (!Number.isFinite(value) || (integer && !(Number.isSafeInteger(value) && value >= 1))) throw new RangeError(`--${name}: expected ${what}, got '${raw}'`);
    return value;
  };
  const positive = (name: string): number | undefined => {
    const value = number(name, false, "a positive number");
    if (value !== undefined && !(value > 0)) throw new RangeError(`--${name}: expected a positive number, got '${text(name)}'`);
    return value;
  };
  const inRange = (name: string, accepts: (value: number) => boolean, range: string): number | undefined => {
    const value = number(name, false, range);
    if (value !== undefined && !accepts(value)) throw new RangeError(`--${name}: expected ${range}, got '${text(name)}'`);
    return value;
  };
  const options: Omit<ExperimentOptions, "dtype"> = { ...DEFAULTS };
  const size = text("size");
  if (size !== undefined) {
    if (!Object.hasOwn(SIZES, size)) throw new RangeError(`--size: expected one of ${Object.keys(SIZES).join(", ")}, got '${size}'`);
    options.size = size as Size;
  }
  const mode = text("mode");
  if (mode !== undefined && !["sparse", "distil", "all"].includes(mode)) throw new RangeError(`--mode: expected sparse, distil or all, got '${mode}'`);
  const patch = text("patch");
  if (patch !== undefined && patch !== "ffn" && patch !== "ffn+attn") throw new RangeError(`--patch: expected ffn or ffn+attn, got '${patch}'`);
  const densityLists = values.density as string[] | undefined;
  const densityItems = densityLists?.flatMap((list) => list.split(","));
  const densities = densityItems?.map(decimal);
  if (densities?.some((d) => !(d > 0 && d <= 1))) throw new RangeError(`--density: expected numbers in (0, 1], got '${densityLists?.join(",")}'`);
  if (densities !== undefined && densityItems !== undefined) rejectRepeatedValues(densities, densityItems, "density");
  const sparseLr = text("sparse-lr");
  if (sparseLr !== undefined && sparseLr !== "same" && sparseLr !== "inverse-density") throw new RangeError(`--sparse-lr: expected same or inverse-density, got '${sparseLr}'`);
  const dtype = text("dtype");
  if (dtype !== undefined && dtype !== "float32" && dtype !== "bfloat16") throw new RangeError(`--dtype: expected float32 or bfloat16, got '${dtype}'`);
  const budget = number("budget", false, "a positive number of seconds");
  if (budget !== undefined && !(budget > 0)) throw new RangeError(`--budget: expected a positive number of seconds, got '${text("budget")}'`);
  const steps = text("steps") === "auto" ? "auto" : number("steps", true, "a positive integer or auto");
  const riglFraction = number("rigl-fraction", false, "a number in (0, 1]");
  if (riglFraction !== undefined && !(riglFraction > 0 && riglFraction <= 1)) throw new RangeError(`--rigl-fraction: expected a number in (0, 1], got '${text("rigl-fraction")}'`);
  const riglEnd = number("rigl-end", false, "a number in (0, 1]");
  if (riglEnd !== undefined && !(riglEnd > 0 && riglEnd <= 1)) throw new RangeError(`--rigl-end: expected a number in (0, 1], got '${text("rigl-end")}'`);
  const riglEvery = number("rigl-every", true);
  options.rigl = { fraction: riglFraction ?? DEFAULT_RIGL.fraction, end: riglEnd ?? DEFAULT_RIGL.end, ...(riglEvery === undefined ? {} : { every: riglEvery }) };
  if (steps === "auto" && budget === undefined) throw new RangeError("--steps auto: needs --budget SECONDS (the steps are those that fit it)");
  Object.assign(
    options,
    Object.fromEntries(
      Object.entries({
        mode: mode as ExperimentOptions["mode"] | undefined,
        patch,
        sparseLr,
        densities,
        steps,
        budgetSeconds: budget,
        distilDensity: inRange("distil-density", (density) => density > 0 && density <= 1, "a density in (0, 1]"),
        recoverySteps: number("recovery-steps", true),
        learningRate: positive("lr"),
        recoveryLearningRate: positive("recovery-lr"),
        context: number("context", true),
        batchSize: number("batch-size", true),
        evalBatches: number("eval-batches", true),
        curvePoints: number("curve-points", true),
        seed: seedFlag(text("seed")),
      }).filter(([, value]) => value !== undefined),
    ),
  );
  return { options, dtype: dtype as FloatDType | undefined, tokenizer: text("tokenizer") ?? BUNDLED_TOKENIZER, maxChars: number("max-chars", true), maxEpochs: positive("max-epochs"), backend: text("backend"), out: text("out") };
}

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
  const parsed = parse(argv[0] === "--" ? argv.slice(1) : argv);
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
    console.log(`Wrote ${join(parsed.out, `${name}.md`)} and .json`);
  }
  if (rows.some((row) => row.status === "failed")) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  process.exitCode = 1;
});
