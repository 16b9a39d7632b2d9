// Register the cuda and native cpu backends; the engine starts the first that loads here (cuda, then
// cpu), warning once for each that does not, and runs on js when neither does.
import "@blocksparse/backend-cpu";
import "@blocksparse/backend-cuda";
import { BackendError, getBackendInstance, importBackendModules, listBackends, setBackend } from "@blocksparse/core";
import { Presets, SingleBar } from "cli-progress";
import { plural } from "../../shared/text";
import { FEED_FORWARD_PATTERN } from "./model";
import { parseOptions, USAGE } from "./options";
import { formatTable } from "./report";
import { computeDtype, type TransformerHooks, trainTransformer } from "./train";

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
  const { options, backendModules } = parsed;
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
