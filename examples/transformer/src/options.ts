// The CLI's flags: parsed and checked without starting a backend or printing a line, so tests call it in-process.
import { totalmem } from "node:os";
import { parseArgs } from "node:util";
import { backendFlag, decimal, rejectRepeated, rejectRepeatedValues, seedFlag, withFlagHelp } from "../../shared/flags";
import { buildCorpus, mobyDickText } from "./data";
import { checkOptions, DEFAULT_OPTIONS, MAX_SAMPLE_LENGTH, type TransformerOptions } from "./train";

export const USAGE = `Train a small character-level transformer on Moby Dick, dense and with block-sparse feed-forward layers.

  --steps N           training steps per model (default ${DEFAULT_OPTIONS.steps}; a GPU run wants thousands)
  --density LIST      densities of the block-sparse models, comma-separated (default ${DEFAULT_OPTIONS.densities.join(",")})
  --backend NAME      js, cpu or cuda (default: cuda when it starts here, else cpu, else js)
  --dtype TYPE        auto, float32, bfloat16 or float16 (default auto: bfloat16 mixed precision on cuda,
                      float32 on js and cpu)
  --backend-module M  import a backend package (name or path; repeatable) first, so --backend can pick it
  --batch-size N      (default ${DEFAULT_OPTIONS.batchSize})
  --context N         characters of context (default ${DEFAULT_OPTIONS.context})
  --d-model N         width, a multiple of the block size (default ${DEFAULT_OPTIONS.dModel})
  --heads N           attention heads (default ${DEFAULT_OPTIONS.nHeads})
  --layers N          transformer blocks (default ${DEFAULT_OPTIONS.layers})
  --block RxC         block shape of the feed-forward layers (default ${DEFAULT_OPTIONS.blockShape.join("x")})
  --lr X              Adam learning rate (default ${DEFAULT_OPTIONS.learningRate})
  --sample-length N   characters to generate, 0 to ${MAX_SAMPLE_LENGTH} (default ${DEFAULT_OPTIONS.sampleLength})
  --seed N            (default ${DEFAULT_OPTIONS.seed})
  --help`;

/** The flag that sets each option, so that checkOptions' errors name what the user typed. */
const OPTION_FLAGS: Partial<Record<keyof TransformerOptions, string>> = {
  steps: "--steps",
  batchSize: "--batch-size",
  context: "--context",
  dModel: "--d-model",
  nHeads: "--heads",
  layers: "--layers",
  densities: "--density",
  blockShape: "--block",
  learningRate: "--lr",
  sampleLength: "--sample-length",
  dtype: "--dtype",
  seed: "--seed",
};

const FLAGS = {
  steps: { type: "string" },
  density: { type: "string", multiple: true },
  backend: { type: "string" },
  dtype: { type: "string" },
  "backend-module": { type: "string", multiple: true },
  "batch-size": { type: "string" },
  context: { type: "string" },
  "d-model": { type: "string" },
  heads: { type: "string" },
  layers: { type: "string" },
  block: { type: "string" },
  lr: { type: "string" },
  "sample-length": { type: "string" },
  seed: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** The flags' values, each checked alone; null for --help. */
function readFlags(argv: string[]): CliOptions | null {
  const { values, tokens } = withFlagHelp(FLAGS, argv, (args) => parseArgs({ args, options: FLAGS, strict: true, tokens: true }));
  rejectRepeated(tokens, FLAGS);
  if (values.help) return null;
  const integer = (flag: string, text: string | undefined, least = Number.MIN_SAFE_INTEGER): number | undefined => {
    if (text === undefined) return undefined;
    const value = decimal(text);
    if (!Number.isSafeInteger(value) || value < least) {
      throw new RangeError(`--${flag}: expected ${least === 1 ? "a positive integer" : least === 0 ? "a non-negative integer" : "an integer"}, got '${text}'`);
    }
    return value;
  };
  const inRange = (flag: string, text: string, accepts: (value: number) => boolean, range: string): number => {
    const value = decimal(text);
    if (!accepts(value)) throw new RangeError(`--${flag}: expected ${range}, got '${text}'`);
    return value;
  };
  if (values.dtype !== undefined && !["auto", "float32", "bfloat16", "float16"].includes(values.dtype)) {
    throw new RangeError(`--dtype: expected auto, float32, bfloat16 or float16, got '${values.dtype}'`);
  }
  const options: Partial<TransformerOptions> = {
    steps: integer("steps", values.steps, 1),
    batchSize: integer("batch-size", values["batch-size"], 1),
    context: integer("context", values.context, 1),
    dModel: integer("d-model", values["d-model"], 1),
    nHeads: integer("heads", values.heads, 1),
    layers: integer("layers", values.layers, 1),
    sampleLength: integer("sample-length", values["sample-length"], 0),
    seed: seedFlag(values.seed),
    learningRate: values.lr === undefined ? undefined : inRange("lr", values.lr, (lr) => lr > 0 && Number.isFinite(lr), "a positive number"),
    backend: backendFlag(values.backend, "cuda, cpu, js or one --backend-module registers"),
    dtype: values.dtype as TransformerOptions["dtype"] | undefined,
  };
  if (values.density !== undefined) {
    const items = values.density.flatMap((list) => list.split(","));
    options.densities = rejectRepeatedValues(
      items.map((item) => inRange("density", item, (density) => density > 0 && density <= 1, "densities in (0, 1], comma-separated")),
      items,
      "density",
    );
  }
  if (values.block !== undefined) {
    const match = /^(\d+)x(\d+)$/.exec(values.block);
    // Sides past 2^53 were rounded: "99999999999999999999x1" was refused naming a block shape of 100000000000000000000x1.
    if (match === null || [match[1], match[2]].some((side) => !Number.isSafeInteger(Number(side)) || Number(side) < 1)) {
      throw new RangeError(`--block: expected ROWSxCOLS of positive integers such as 32x32, got '${values.block}'`);
    }
    options.blockShape = [Number(match[1]), Number(match[2])];
  }
  const backendModules = values["backend-module"] ?? [];
  if (backendModules.includes("")) throw new RangeError("--backend-module: expected a package name or a path, got ''");
  const chosen: Partial<TransformerOptions> = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
  return { options: { ...DEFAULT_OPTIONS, ...chosen }, backendModules };
}

/** The options a command line asks for (the defaults where a flag is left out), and the backend modules to import first. */
export interface CliOptions {
  options: TransformerOptions;
  backendModules: string[];
}

/**
 * Every flag's value checked here, naming the flag and what it accepts, before a backend starts or a line is printed:
 * each alone, then those that must fit together, the text and this machine's memory. It starts nothing and prints
 * nothing, so calling it is the same check as running the CLI. Null for --help.
 */
export function parseOptions(argv: string[]): CliOptions | null {
  const parsed = readFlags(argv);
  if (parsed === null) return null;
  const { options } = parsed;
  // The flags that must fit together (the width, the heads, the block shape), before anything starts.
  checkOptions(options, (option) => OPTION_FLAGS[option] ?? option);
  // Every model samples windows of context + 1 characters from the validation split (about 0.15 s to count).
  const corpus = buildCorpus(mobyDickText());
  const validationCharacters = corpus.validation.length;
  if (options.context >= validationCharacters) {
    throw new RangeError(`--context: ${options.context} leaves no window in the validation text's ${validationCharacters} characters; use at most ${validationCharacters - 1}`);
  }
  checkMemory(options, corpus.vocabulary.size);
  return parsed;
}

/**
 * Refuses sizes whose training cannot fit this machine's memory, naming the flags behind them: building a model of a
 * million layers took minutes before it ran out of memory, and a huge batch failed with a typed array's RangeError.
 * A lower bound: the dense model's parameters with their gradients and Adam's moments (12 bytes each at least), and
 * one batch's logits, feed-forward activations and attention scores (2 bytes each at least).
 */
function checkMemory(options: TransformerOptions, vocabSize: number): void {
  const { dModel, layers, batchSize, context, nHeads } = options;
  const parameters = layers * 12 * dModel * dModel + 2 * vocabSize * dModel + context * dModel;
  const activations = batchSize * context * (vocabSize + layers * (4 * dModel + nHeads * context));
  const parameterBytes = 12 * parameters;
  const activationBytes = 2 * activations;
  const available = totalmem();
  if (parameterBytes + activationBytes <= available) return;
  const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes < 10 * 2 ** 30 ? 1 : 0)} GiB`;
  const flags = parameterBytes >= activationBytes ? "--layers or --d-model" : "--batch-size, --context or --layers";
  throw new RangeError(
    `--layers ${layers}, --d-model ${dModel}, --batch-size ${batchSize}, --context ${context}: training needs at least ${gib(parameterBytes + activationBytes)} ` +
      `(${gib(parameterBytes)} for the parameters, their gradients and Adam's moments; ${gib(activationBytes)} for one batch's activations), ` +
      `and this machine has ${gib(available)}; use a smaller ${flags}`,
  );
}
