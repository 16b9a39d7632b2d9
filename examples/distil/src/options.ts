// The CLI's flags: parsed and checked without starting a backend or printing a line, so tests call it in-process.
import { parseArgs } from "node:util";
import type { FloatDType } from "@blocksparse/core";
import { backendFlag, decimal, rejectRepeated, rejectRepeatedValues, seedFlag, withFlagHelp } from "../../shared/flags";
import { BUNDLED_TOKENIZER } from "./data";
import { DEFAULT_RIGL, type ExperimentOptions, SIZES, type Size } from "./experiment";

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

export const USAGE = `A GPT-2 language model on Moby Dick (BPE tokens): dense vs block-sparse feed-forward
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

/** The options a command line asks for (the defaults where a flag is left out). */
export interface Parsed {
  options: Omit<ExperimentOptions, "dtype">;
  dtype?: FloatDType;
  tokenizer: string;
  maxChars?: number;
  maxEpochs?: number;
  backend?: string;
  out?: string;
}

/**
 * Every flag's value checked here, naming the flag and what it accepts, before a backend starts or a model trains:
 * it starts nothing and prints nothing, so calling it is the same check as running the CLI. Null for --help.
 */
export function parseOptions(argv: string[]): Parsed | null {
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
  if (mode === "sparse" || mode === "distil") {
    // The other experiment's flags ran without a word: --density under --mode distil left the recovery at --distil-density.
    const other = mode === "sparse" ? "distil" : "sparse";
    const otherFlags = { sparse: ["density", "rigl-fraction", "rigl-every", "rigl-end"], distil: ["distil-density", "patch", "recovery-steps", "recovery-lr"] }[other];
    const unused = otherFlags.find((flag) => values[flag] !== undefined);
    if (unused !== undefined) throw new RangeError(`--${unused}: used only by --mode ${other} or all (--mode is ${mode}); leave --${unused} out, or use --mode all`);
  }
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
  return { options, dtype: dtype as FloatDType | undefined, tokenizer: text("tokenizer") ?? BUNDLED_TOKENIZER, maxChars: number("max-chars", true), maxEpochs: positive("max-epochs"), backend: backendFlag(text("backend"), "cuda, cpu or js"), out: text("out") };
}
