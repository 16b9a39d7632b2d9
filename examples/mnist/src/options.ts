// The CLI's flags: parsed and checked without starting a backend or printing a line, so tests call it in-process.
import { totalmem } from "node:os";
import { parseArgs } from "node:util";
import { backendFlag, decimal, rejectRepeated, rejectRepeatedValues, seedFlag, withFlagHelp } from "../../shared/flags";
import { plural } from "../../shared/text";
import { availableDigits, CLASSES, PIXELS } from "./data";
import { checkHidden } from "./model";
import { DEFAULT_OPTIONS, type MnistOptions, type PatchFrom, type RegrowMode, regrowStopStep } from "./train";

export const USAGE = `Train an MLP on MNIST dense and block-sparse, and compare them.

  --epochs N          epochs per model (default ${DEFAULT_OPTIONS.epochs})
  --density LIST      densities of the block-sparse models, comma-separated (default ${DEFAULT_OPTIONS.densities.join(",")})
  --backend NAME      js, cpu or cuda (default: cuda when it starts here, else cpu, else js)
  --dtype TYPE        auto, float32, bfloat16 or float16 (default auto: bfloat16 mixed precision on cuda,
                      float32 on js and cpu)
  --backend-module M  import a backend package (name or path; repeatable) first, so --backend can pick it
  --batch-size N      (default ${DEFAULT_OPTIONS.batchSize})
  --hidden N          hidden width, a multiple of 32 (default ${DEFAULT_OPTIONS.hidden})
  --seed N            (default ${DEFAULT_OPTIONS.seed})
  --lr X              Adam learning rate (default ${DEFAULT_OPTIONS.learningRate})
  --sparse-lr RULE    the block-sparse weights' learning rate: same (as the others', default) or
                      inverse-density (lr / density: a dense layer's step per output under Adam)
  --train-size N      training digits (default ${DEFAULT_OPTIONS.trainSize})
  --test-size N       test digits (default ${DEFAULT_OPTIONS.testSize}; train + test <= 10000)
  --patch-from WHAT   init: prune the dense model's fresh initialisation and train every epoch
                      sparse (default); trained: prune the dense model after its first epoch
  --regrow MODE       how block-sparse models move their patterns: none (default), random (drop the
                      weakest blocks, grow random ones) or rigl (grow where the gradient is largest)
  --regrow-every N    steps between pattern updates (default ${DEFAULT_OPTIONS.regrowEvery})
  --regrow-fraction X fraction of blocks moved at the first update, cosine-decayed to 0 at 3/4 of
                      training (default ${DEFAULT_OPTIONS.regrowFraction})
  --help`;

const FLAGS = {
  epochs: { type: "string" },
  density: { type: "string", multiple: true },
  backend: { type: "string" },
  dtype: { type: "string" },
  "backend-module": { type: "string", multiple: true },
  "batch-size": { type: "string" },
  hidden: { type: "string" },
  seed: { type: "string" },
  lr: { type: "string" },
  "train-size": { type: "string" },
  "test-size": { type: "string" },
  "patch-from": { type: "string" },
  regrow: { type: "string" },
  "regrow-every": { type: "string" },
  "regrow-fraction": { type: "string" },
  "sparse-lr": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** The options a command line asks for (the defaults where a flag is left out), and the backend modules to import first. */
export interface CliOptions {
  options: MnistOptions;
  backendModules: string[];
}

/**
 * Every flag's value checked here, naming the flag and what it accepts, before a backend starts or a line is printed:
 * it starts nothing and prints nothing, so calling it is the same check as running the CLI. Null for --help.
 */
export function parseOptions(argv: string[]): CliOptions | null {
  const { values, tokens } = withFlagHelp(FLAGS, argv, (args) => parseArgs({ args, options: FLAGS, strict: true, tokens: true }));
  rejectRepeated(tokens, FLAGS);
  if (values.help) return null;
  const integer = (flag: string, text: string | undefined, least = Number.MIN_SAFE_INTEGER): number | undefined => {
    if (text === undefined) return undefined;
    const value = decimal(text);
    if (!Number.isSafeInteger(value) || value < least) {
      throw new RangeError(`--${flag}: expected ${least === 1 ? "a positive integer" : "an integer"}, got '${text}'`);
    }
    return value;
  };
  const inRange = (flag: string, text: string, accepts: (value: number) => boolean, range: string): number => {
    const value = decimal(text);
    if (!accepts(value)) throw new RangeError(`--${flag}: expected ${range}, got '${text}'`);
    return value;
  };
  const oneOf = <T extends string>(flag: string, text: string | undefined, accepted: readonly T[]): T | undefined => {
    if (text !== undefined && !accepted.includes(text as T)) throw new RangeError(`--${flag}: expected ${accepted.slice(0, -1).join(", ")} or ${accepted.at(-1)}, got '${text}'`);
    return text as T | undefined;
  };
  const options: Partial<MnistOptions> = {
    epochs: integer("epochs", values.epochs, 1),
    batchSize: integer("batch-size", values["batch-size"], 1),
    hidden: integer("hidden", values.hidden, 1),
    seed: seedFlag(values.seed),
    trainSize: integer("train-size", values["train-size"], 1),
    testSize: integer("test-size", values["test-size"], 1),
    regrowEvery: integer("regrow-every", values["regrow-every"], 1),
    dtype: oneOf("dtype", values.dtype, ["auto", "float32", "bfloat16", "float16"]),
    patchFrom: oneOf<PatchFrom>("patch-from", values["patch-from"], ["init", "trained"]),
    regrow: oneOf<RegrowMode>("regrow", values.regrow, ["none", "random", "rigl"]),
    sparseLr: oneOf("sparse-lr", values["sparse-lr"], ["same", "inverse-density"]),
    backend: backendFlag(values.backend, "cuda, cpu, js or one --backend-module registers"),
  };
  if (options.hidden !== undefined) {
    try {
      checkHidden(options.hidden);
    } catch (error) {
      throw new RangeError(`--${(error as Error).message}`);
    }
  }
  if (options.hidden !== undefined) {
    // fc1, fc2 and fc3 with their gradients and Adam's two moments (12 bytes a parameter at least): a --hidden this machine
    // cannot hold took seconds to fail with an allocation error that named no flag.
    const parameters = (PIXELS + options.hidden + CLASSES) * options.hidden;
    const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(bytes < 10 * 2 ** 30 ? 1 : 0)} GiB`;
    if (12 * parameters > totalmem()) {
      throw new RangeError(`--hidden: ${options.hidden} makes ${parameters.toLocaleString("en-US")} parameters, which need at least ${gib(12 * parameters)} to train, and this machine has ${gib(totalmem())}; use a smaller --hidden`);
    }
  }
  const trainSize = options.trainSize ?? DEFAULT_OPTIONS.trainSize;
  const testSize = options.testSize ?? DEFAULT_OPTIONS.testSize;
  if (trainSize + testSize > availableDigits()) {
    throw new RangeError(`--train-size + --test-size: expected at most ${availableDigits()} digits in all (the mnist package's), got ${trainSize} + ${testSize}`);
  }
  const batchSize = options.batchSize ?? DEFAULT_OPTIONS.batchSize;
  if (batchSize > trainSize) throw new RangeError(`--batch-size: expected at most the ${trainSize} training digits (--train-size), got ${batchSize}`);
  if (values.lr !== undefined) options.learningRate = inRange("lr", values.lr, (lr) => lr > 0 && Number.isFinite(lr), "a positive number");
  if (values["regrow-fraction"] !== undefined) {
    // 0 moved no block: the run trained as --regrow none while its header said the patterns moved.
    options.regrowFraction = inRange("regrow-fraction", values["regrow-fraction"], (fraction) => fraction > 0 && fraction <= 1, "a number in (0, 1] (--regrow none keeps the patterns)");
  }
  const regrow = options.regrow ?? DEFAULT_OPTIONS.regrow;
  if (regrow === "none") {
    for (const flag of ["regrow-every", "regrow-fraction"] as const) {
      if (values[flag] !== undefined) throw new RangeError(`--${flag}: moves patterns only with --regrow random or rigl (--regrow is none); add --regrow rigl, or leave --${flag} out`);
    }
  } else {
    // The schedule patternMover gives the SparseOptimizer: updates at steps every, 2 x every, ... before 3/4 of the sparse steps.
    const epochs = options.epochs ?? DEFAULT_OPTIONS.epochs;
    const sparseSteps = Math.ceil(trainSize / batchSize) * (epochs - ((options.patchFrom ?? DEFAULT_OPTIONS.patchFrom) === "trained" ? 1 : 0));
    const stop = regrowStopStep(sparseSteps);
    const every = options.regrowEvery ?? DEFAULT_OPTIONS.regrowEvery;
    if (every >= stop) {
      throw new RangeError(
        `--regrow-every: ${plural(every, "step")} between updates, but the patterns stop moving at step ${stop} (3/4 of the ${plural(sparseSteps, "sparse training step")}), so they would never move; ` +
          (stop > 1 ? `use --regrow-every ${stop - 1} or less, or more --epochs` : "use more --epochs or --train-size, or a smaller --batch-size"),
      );
    }
  }
  if (options.patchFrom === "trained" && (options.epochs ?? DEFAULT_OPTIONS.epochs) < 2) {
    throw new RangeError("--patch-from trained: the first epoch trains the dense model the others are patched from, so --epochs 1 leaves none to train sparse; use --epochs 2 or more");
  }
  if (values.density !== undefined) {
    const items = values.density.flatMap((list) => list.split(","));
    options.densities = rejectRepeatedValues(
      items.map((item) => inRange("density", item, (density) => density > 0 && density <= 1, "densities in (0, 1], comma-separated")),
      items,
      "density",
    );
  }
  const backendModules = values["backend-module"] ?? [];
  if (backendModules.includes("")) throw new RangeError("--backend-module: expected a package name or a path, got ''");
  const chosen: Partial<MnistOptions> = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
  return { options: { ...DEFAULT_OPTIONS, ...chosen }, backendModules };
}
