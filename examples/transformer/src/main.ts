// Register the cuda and native cpu backends; the engine starts the first that loads here (cuda, then
// cpu), warning once for each that does not, and runs on js when neither does.
import "@blocksparse/backend-cpu";
import "@blocksparse/backend-cuda";
import { totalmem } from "node:os";
import { parseArgs } from "node:util";
import { BackendError, getBackendInstance, importBackendModules, listBackends, setBackend } from "@blocksparse/core";
import { Presets, SingleBar } from "cli-progress";
import { decimal, rejectRepeated, rejectRepeatedValues, seedFlag, withFlagHelp } from "../../shared/flags";
import { plural } from "../../shared/text";
import { buildCorpus, mobyDickText } from "./data";
import { FEED_FORWARD_PATTERN } from "./model";
import { formatTable } from "./report";
import { checkOptions, computeDtype, DEFAULT_OPTIONS, MAX_SAMPLE_LENGTH, type TransformerHooks, type TransformerOptions, trainTransformer } from "./train";

const USAGE = `Train a small character-level transformer on Moby Dick, dense and with block-sparse feed-forward layers.

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

type ParsedOptions = Partial<TransformerOptions> & { backendModules?: string[] };

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

/** Every flag's value checked here, naming the flag and what it accepts, before a backend starts or a line is printed. */
function parseOptions(argv: string[]): ParsedOptions | null {
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
    backend: values.backend,
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
    if (match === null || Number(match[1]) < 1 || Number(match[2]) < 1) {
      throw new RangeError(`--block: expected ROWSxCOLS of positive integers such as 32x32, got '${values.block}'`);
    }
    options.blockShape = [Number(match[1]), Number(match[2])];
  }
  const parsed: ParsedOptions = { ...options, backendModules: values["backend-module"] };
  return Object.fromEntries(Object.entries(parsed).filter(([, value]) => value !== undefined));
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

/** A progress bar per model on a terminal; a line every tenth of the run otherwise. */
function progressHooks(stream: NodeJS.WriteStream = process.stdout): TransformerHooks {
  if (!stream.isTTY) {
    return {
      onStep: ({ model, step, steps, loss }) => {
        if (step === steps || step % Math.max(1, Math.round(steps / 10)) === 0) {
          stream.write(`${model.padEnd(22)} step ${step}/${steps}  loss ${loss.toFixed(4)}\n`);
        }
      },
    };
  }
  let bar: SingleBar | null = null;
  return {
    onModelStart: (name, steps) => {
      bar = new SingleBar({ format: `${name.padEnd(22)} [{bar}] {value}/{total} steps | loss {loss} | {duration}s`, stream, hideCursor: true }, Presets.shades_classic);
      bar.start(steps, 0, { loss: "-" });
    },
    onStep: ({ step, loss }) => bar?.update(step, { loss: loss.toFixed(4) }),
    onModelEnd: () => {
      bar?.stop();
      bar = null;
    },
  };
}

async function main(): Promise<void> {
  // `pnpm demo -- --flag` hands the script a literal "--" first.
  const argv = process.argv.slice(2);
  const parsed = parseOptions(argv[0] === "--" ? argv.slice(1) : argv);
  if (parsed === null) {
    console.log(USAGE);
    return;
  }
  const { backendModules = [], ...chosen } = parsed;
  const options = { ...DEFAULT_OPTIONS, ...chosen };
  // The flags that must fit together (the width, the heads, the block shape), before anything starts.
  checkOptions(options, (option) => OPTION_FLAGS[option] ?? option);
  // Every model samples windows of context + 1 characters from the validation split (about 0.15 s to count).
  const corpus = buildCorpus(mobyDickText());
  const validationCharacters = corpus.validation.length;
  if (options.context >= validationCharacters) {
    throw new RangeError(`--context: ${options.context} leaves no window in the validation text's ${validationCharacters} characters; use at most ${validationCharacters - 1}`);
  }
  checkMemory(options, corpus.vocabulary.size);
  await importBackendModules(backendModules, (specifier) => import(specifier));
  if (options.backend !== undefined) chooseBackend(options.backend);
  // Starting the backend here puts the cuda fallback warning (if any) above the header.
  const backend = getBackendInstance().name;
  // trainTransformer checks the densities first (a layer must keep a block); the header follows, in onStart.
  const printHeader = (): void => {
    console.log(
      `Character transformer on Moby Dick on '${backend}' in ${computeDtype(options.dtype)}: ${plural(options.layers, "block")}, dModel ${options.dModel}, ${plural(options.nHeads, "head")}, ` +
        `context ${options.context}, batch ${options.batchSize}, ${plural(options.steps, "step")} per model, Adam lr ${options.learningRate}.`,
    );
    console.log(
      `Block-sparse models: the layers matching ${FEED_FORWARD_PATTERN} in ${options.blockShape.join("x")} blocks, patched from the ` +
        "dense model's initialisation; every model sees the same batches.\n",
    );
  };
  const report = trainTransformer(options, { ...progressHooks(), onStart: printHeader });
  console.log(`\n${formatTable(report)}`);
  for (const model of report.models) console.log(`\n${model.name} writes:\n  ${JSON.stringify(model.sample)}`);
  if (options.steps < 1000) console.log(`\n(${plural(options.steps, "step")} is a smoke run; on a GPU try --steps 3000 --d-model 256 --layers 4 --context 128.)`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  process.exitCode = 1;
});
