// Registers the cuda backend when its addon loads here; otherwise the engine warns once and runs on js.
import "@blocksparse/backend-cuda";
import { parseArgs } from "node:util";
import { getBackendInstance, setBackend } from "@blocksparse/core";
import { BUNDLED_TOKENIZER, loadCorpus } from "./data";
import { type ExperimentOptions, runExperiments, SIZES, type Size } from "./experiment";
import { formatTable } from "./report";

const DEFAULTS: ExperimentOptions = {
  size: "tiny",
  steps: 20,
  densities: [0.25, 0.1],
  distilDensity: 0.5,
  patch: "ffn",
  mode: "all",
  learningRate: 1e-3,
  evalBatches: 4,
  seed: 0,
};

const USAGE = `A GPT-2 language model on Moby Dick (BPE tokens): dense vs block-sparse feed-forward
layers, static or RigL; and a trained dense model patched and recovered by fine-tuning or distillation.

  --size NAME          ${Object.entries(SIZES)
    .map(([name, s]) => `${name} (${s.n_layer} layers, width ${s.n_embd}, context ${s.context}, batch ${s.batchSize})`)
    .join(",\n                       ")} (default ${DEFAULTS.size})
  --steps N            training steps of each model trained from scratch (default ${DEFAULTS.steps})
  --density LIST       densities of the static / RigL comparison (default ${DEFAULTS.densities.join(",")})
  --distil-density X   density of the patched-and-recovered model (default ${DEFAULTS.distilDensity})
  --recovery-steps N   recovery steps (default: steps / 10)
  --patch WHAT         layers patched for the recovery: ffn or ffn+attn (default ${DEFAULTS.patch})
  --mode MODE          sparse, distil or all (default ${DEFAULTS.mode})
  --lr X               AdamW peak learning rate (default ${DEFAULTS.learningRate})
  --context N, --batch-size N   override the size's
  --eval-batches N     validation windows per loss (default ${DEFAULTS.evalBatches})
  --tokenizer DIR      a folder with tokenizer.json (default: the bundled 512-token BPE)
  --max-chars N        use only the text's first N characters
  --backend NAME       js or cuda (default: cuda when it starts here, else js)
  --seed N             (default ${DEFAULTS.seed})`;

function parse(argv: string[]): { options: ExperimentOptions; tokenizer: string; maxChars?: number; backend?: string } | null {
  const flags = ["size", "steps", "density", "distil-density", "recovery-steps", "patch", "mode", "lr", "context", "batch-size", "eval-batches", "tokenizer", "max-chars", "backend", "seed"];
  const flagTypes: Record<string, { type: "string" | "boolean" }> = Object.fromEntries(flags.map((name) => [name, { type: "string" }]));
  flagTypes.help = { type: "boolean" };
  const { values } = parseArgs({ args: argv, strict: true, options: flagTypes }) as { values: Record<string, string | boolean | undefined> };
  if (values.help) return null;
  const text = (name: string) => values[name] as string | undefined;
  const number = (name: string, integer: boolean): number | undefined => {
    const raw = text(name);
    if (raw === undefined) return undefined;
    const value = Number(raw);
    if (!Number.isFinite(value) || (integer && !(Number.isInteger(value) && value >= 1))) throw new RangeError(`--${name}: expected ${integer ? "a positive integer" : "a number"}, got '${raw}'`);
    return value;
  };
  const options: ExperimentOptions = { ...DEFAULTS };
  const size = text("size");
  if (size !== undefined) {
    if (!(size in SIZES)) throw new RangeError(`--size: expected one of ${Object.keys(SIZES).join(", ")}, got '${size}'`);
    options.size = size as Size;
  }
  const mode = text("mode");
  if (mode !== undefined && !["sparse", "distil", "all"].includes(mode)) throw new RangeError(`--mode: expected sparse, distil or all, got '${mode}'`);
  const patch = text("patch");
  if (patch !== undefined && patch !== "ffn" && patch !== "ffn+attn") throw new RangeError(`--patch: expected ffn or ffn+attn, got '${patch}'`);
  const densities = text("density")?.split(",").map(Number);
  if (densities?.some((d) => !(d > 0 && d <= 1))) throw new RangeError(`--density: expected numbers in (0, 1], got '${text("density")}'`);
  Object.assign(
    options,
    Object.fromEntries(
      Object.entries({
        mode: mode as ExperimentOptions["mode"] | undefined,
        patch,
        densities,
        steps: number("steps", true),
        distilDensity: number("distil-density", false),
        recoverySteps: number("recovery-steps", true),
        learningRate: number("lr", false),
        context: number("context", true),
        batchSize: number("batch-size", true),
        evalBatches: number("eval-batches", true),
        seed: number("seed", false),
      }).filter(([, value]) => value !== undefined),
    ),
  );
  return { options, tokenizer: text("tokenizer") ?? BUNDLED_TOKENIZER, maxChars: number("max-chars", true), backend: text("backend") };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const parsed = parse(argv[0] === "--" ? argv.slice(1) : argv);
  if (parsed === null) {
    console.log(USAGE);
    return;
  }
  const { options } = parsed;
  if (parsed.backend !== undefined) setBackend(parsed.backend);
  const backend = getBackendInstance().name;
  const started = performance.now();
  const corpus = await loadCorpus(parsed.tokenizer, parsed.maxChars);
  console.log(
    `GPT-2 '${options.size}' on Moby Dick on '${backend}': ${corpus.train.length} training and ${corpus.validation.length} validation tokens ` +
      `(vocabulary ${corpus.vocabSize}), ${options.steps} steps, mode ${options.mode}.`,
  );
  let last = 0;
  const rows = runExperiments(corpus, options, (model, step, steps, loss) => {
    const now = performance.now();
    if (step === steps || now - last > 5000) {
      last = now;
      console.log(`${model.padEnd(28)} step ${String(step).padStart(6)}/${steps}  loss ${loss.toFixed(4)}`);
    }
  });
  console.log(`\n${formatTable(rows)}`);
  console.log(`Validation loss: mean cross-entropy (nats per token) over ${options.evalBatches} fixed validation batches. Total ${((performance.now() - started) / 1000).toFixed(0)} s on '${backend}'.`);
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  process.exitCode = 1;
});
