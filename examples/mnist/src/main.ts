// Register the cuda and native cpu backends; the engine starts the first that loads here (cuda, then
// cpu), warning once for each that does not, and runs on js when neither does.
import "@blocksparse/backend-cpu";
import "@blocksparse/backend-cuda";
import { BackendError, getBackendInstance, importBackendModules, listBackends, setBackend } from "@blocksparse/core";
import { PIXELS } from "./data";
import { FIRST_LAYER_BLOCK, HIDDEN_LAYER_BLOCK } from "./model";
import { parseOptions, USAGE } from "./options";
import { plural } from "../../shared/text";
import { progressHooks } from "./progress";
import { formatTable, percent } from "./report";
import { computeDtype, trainMnist } from "./train";

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
  const startedAt = performance.now();
  if (options.backend !== undefined) chooseBackend(options.backend);
  // Starting the backend here puts the cuda fallback warning (if any) above the header.
  const backend = getBackendInstance().name;
  // trainMnist checks the densities first (a layer must keep a block); the header follows, in onStart.
  const printHeader = (): void => {
    console.log(
      `MNIST MLP ${PIXELS}-${options.hidden}-${options.hidden}-10 on '${backend}' in ${computeDtype(options.dtype ?? "auto")}: ${options.trainSize} training and ` +
        `${plural(options.testSize, "test digit")}, ${plural(options.epochs, "epoch")}, batch ${options.batchSize}, Adam lr ${options.learningRate}${options.sparseLr === "inverse-density" ? " (block-sparse weights: lr / density)" : ""}.`,
    );
    console.log(
      `Block-sparse models: fc1 in ${FIRST_LAYER_BLOCK.join("x")} blocks (32 units x one image row), fc2 in ` +
        `${HIDDEN_LAYER_BLOCK.join("x")} blocks, fc3 (10 outputs) dense; ` +
        (options.patchFrom === "trained"
          ? "each keeps the strongest blocks of the dense model after its first epoch, then trains the remaining epochs sparse."
          : "each keeps the strongest blocks of the dense model's initialisation (close to a random choice of blocks) and " +
            "trains every epoch sparse (at the defaults this ends closer to dense than --patch-from trained)."),
    );
    console.log(
      options.regrow === "none"
        ? "Patterns stay as patched (--regrow random|rigl moves them).\n"
        : `Patterns move every ${plural(options.regrowEvery, "step")} (${options.regrow === "rigl" ? "RigL: grow where the gradient is largest" : "random regrowth"}), ` +
            `${options.regrowFraction} of the blocks at first, cosine-decayed to 0 at 3/4 of training.\n`,
    );
  };
  const report = await trainMnist(options, {
    ...progressHooks(),
    onStart: printHeader,
    onPatched: (name, patch, accuracy) => {
      const layers = patch.layers.map((layer) => `${layer.name} ${layer.paramsBefore} -> ${layer.paramsAfter}`).join(", ");
      console.log(`${name}: patched ${layers} parameters; test accuracy right after patching ${percent(accuracy)}`);
    },
  });
  console.log(`\n${formatTable(report)}`);
  console.log(
    `Weight bytes count the stored weights and biases (block-sparse: the kept blocks' ${report.dtype} values plus their int32 indices). ` +
      `Total time ${((performance.now() - startedAt) / 1000).toFixed(0)} s on '${report.backend}'.`,
  );
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  process.exitCode = 1;
});
