// Data-parallel training of a block-sparse classifier, one process per rank:
//   blocksparse-run --nproc-per-node 2 src/train.mjs [--steps 60] [--backend cpu|nccl] [--save model.safetensors]
// Each rank trains on its own shard of every batch; DistributedDataParallel averages the gradients,
// rank 0 decides the pattern moves, and the replicas stay identical (checked at the end).
import { accessSync, constants, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parseArgs } from "node:util";
import { DistributedDataParallel, initProcessGroup } from "@blocksparse/distributed";
import { Adam, argmax, BlockSparseLinear, crossEntropy, Linear, ReLU, randn, Sequential, SparseOptimizer, tensor, tidy } from "@blocksparse/nn";

// A failure ends this rank with its message, not a stack trace, and at once: an open process group would keep
// it alive. The launcher then stops the other ranks.
process.on("uncaughtException", (error) => {
  console.error(error instanceof Error ? `${error.name}: ${error.message}` : String(error));
  process.exit(1);
});

const USAGE = `Data-parallel training of a block-sparse classifier, one process per rank:
  blocksparse-run --nproc-per-node N src/train.mjs [flags]

  --steps N         training steps (default 60)
  --backend NAME    cpu (default) or nccl (one NVIDIA GPU per rank)
  --save FILE       write the trained model there as safetensors (from rank 0)
  --help`;

/** The flags, each checked here with its name and what it accepts; null for --help. */
function parseOptions(argv) {
  let values;
  let tokens;
  // `--steps -1` read as `--steps=-1`: parseArgs takes a value starting with a dash for a flag ("argument is ambiguous").
  const args = [];
  for (let i = 0; i < argv.length; i++) {
    const [arg, next] = [argv[i], argv[i + 1]];
    if (arg === "--") {
      args.push(...argv.slice(i));
      break;
    }
    const takesNext = ["--steps", "--backend", "--save"].includes(arg) && next !== undefined;
    const negative = takesNext && /^-(?:\d|\.\d)/.test(next);
    if (negative) args.push(`${arg}=${next}`);
    else if (takesNext && !next.startsWith("-")) args.push(arg, next);
    else args.push(arg);
    // The flag's value is not itself a flag to look at.
    if (negative || (takesNext && !next.startsWith("-"))) i++;
  }
  try {
    ({ values, tokens } = parseArgs({
      args,
      strict: true,
      tokens: true,
      options: { steps: { type: "string", default: "60" }, backend: { type: "string", default: "cpu" }, save: { type: "string" }, help: { type: "boolean", short: "h" } },
    }));
  } catch (error) {
    const missing = error.code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE" ? /Option '(?:-\w, )?(--[^' ]+)/.exec(error.message) : null;
    if (missing !== null) {
      if (missing[1] === "--help") throw new TypeError("--help takes no value; write --help alone");
      const next = args[args.indexOf(missing[1]) + 1];
      throw new TypeError(`${missing[1]}: missing its value${next === undefined ? "" : ` ('${next}' after it is read as a flag)`}; write ${missing[1]} VALUE, or ${missing[1]}=VALUE for a value starting with a dash`);
    }
    if (error.code !== "ERR_PARSE_ARGS_UNKNOWN_OPTION") throw error;
    const flag = /'(-[^']*)'/.exec(error.message)[1];
    const typed = flag.replace(/[-_]/g, "");
    // No guess for a flag of dashes alone ('---'): every name starts with "".
    const near = typed === "" ? undefined : ["steps", "backend", "save", "help"].find((name) => name.startsWith(typed) || typed.startsWith(name));
    throw new TypeError(`Unknown option '${flag}'${near === undefined ? "" : ` (did you mean --${near}?)`}; --help lists the flags`);
  }
  // parseArgs keeps the last value of a flag given twice; a second, different value is an error instead.
  const given = new Map();
  for (const { kind, name, value } of tokens) {
    if (kind !== "option" || value === undefined) continue;
    if (given.has(name) && given.get(name) !== value) throw new RangeError(`--${name}: given twice ('${given.get(name)}' and '${value}'); give it once`);
    given.set(name, value);
  }
  if (values.help) return null;
  // Decimal only ("40", "1e3"): Number() would read "0x10" as 16.
  const steps = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?$/i.test(values.steps.trim()) ? Number(values.steps) : Number.NaN;
  if (!Number.isSafeInteger(steps) || steps < 1) throw new RangeError(`--steps: expected a positive integer, got '${values.steps}'`);
  if (values.backend !== "cpu" && values.backend !== "nccl") throw new RangeError(`--backend: expected cpu or nccl, got '${values.backend}'`);
  // An empty name was read as the current folder: "--save : <cwd> is a folder".
  if (values.save === "") throw new RangeError("--save: expected a file name such as model.safetensors, got ''");
  return { steps, backend: values.backend, save: values.save };
}

/** The process group; a failed nccl start says what to run instead. */
async function startGroup(backend) {
  if (backend === "cpu") return initProcessGroup({ backend });
  try {
    await import("@blocksparse/backend-cuda");
    return await initProcessGroup({ backend });
  } catch (error) {
    throw new Error(`--backend nccl: ${error.name}: ${error.message}\n--backend nccl needs an NVIDIA GPU per rank; --backend cpu runs the same job on the CPU`);
  }
}

// `pnpm demo -- --flag` hands the script a literal "--" first.
const argv = process.argv.slice(2);
const options = parseOptions(argv[0] === "--" ? argv.slice(1) : argv);
if (options === null) {
  if ((process.env.RANK ?? "0") === "0") console.log(USAGE);
  process.exit(0);
}
const { steps } = options;
const group = await startGroup(options.backend);
const { rank, worldSize } = group;
const say = (line) => rank === 0 && console.log(line);
// Checked before training, not after it: rank 0 writes the checkpoint.
if (rank === 0 && options.save !== undefined) checkSavePath(options.save);

/** Throws, naming --save, when rank 0 could not write a file at `path`: a missing or unwritable folder, or a folder where the file goes. */
function checkSavePath(path) {
  const file = resolve(path);
  const folder = dirname(file);
  const folderStat = statSync(folder, { throwIfNoEntry: false });
  if (folderStat === undefined) throw new Error(`--save ${path}: the folder ${folder} does not exist`);
  if (!folderStat.isDirectory()) throw new Error(`--save ${path}: ${folder} is not a folder`);
  if (statSync(file, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`--save ${path}: ${file} is a folder; expected a file name such as ${resolve(file, "model.safetensors")}`);
  try {
    accessSync(folder, constants.W_OK);
  } catch {
    throw new Error(`--save ${path}: cannot write in the folder ${folder}`);
  }
}

// Four Gaussian clusters in 32 dimensions. Row i of batch `step` is the same on every rank: each rank
// makes only the rows of its shard.
const CLASSES = 4;
const centers = randn([CLASSES, 32], { seed: 1 }).dataSync();
function rows(step, first, count) {
  const labels = Array.from({ length: count }, (_, i) => (step * 7 + (first + i) * 3) % CLASSES);
  const x = new Float32Array(count * 32);
  labels.forEach((label, i) => {
    const noise = tidy(() => randn([32], { seed: step * 100_003 + first + i, std: 0.8 }).dataSync());
    for (let d = 0; d < 32; d++) x[i * 32 + d] = centers[label * 32 + d] + noise[d];
  });
  return { x: tensor(x, [count, 32]), y: tensor(labels, [count], "int32") };
}

const model = new Sequential(
  new BlockSparseLinear(32, 64, { density: 0.25, blockShape: [8, 8], seed: 10 + rank }),
  new ReLU(),
  new BlockSparseLinear(64, 64, { density: 0.25, blockShape: [8, 8], seed: 20 + rank }),
  new ReLU(),
  new Linear(64, CLASSES, { seed: 30 + rank }),
);
if (options.backend === "nccl") model.to("cuda");
// Rank 0's weights and patterns go to every rank (each rank above started from its own seed).
const ddp = await DistributedDataParallel.create(model, group);
const optimizer = new Adam(model.parameters(), { lr: 0.01 });
const sparse = new SparseOptimizer(model, { fraction: 0.2, every: 10, seed: 3, totalSteps: steps }).attachOptimizer(optimizer);

const ROWS_PER_RANK = 16;
for (let step = 0; step < steps; step++) {
  const { x, y } = rows(step, rank * ROWS_PER_RANK, ROWS_PER_RANK);
  const loss = tidy(() => crossEntropy(ddp.forward(x), y));
  await ddp.backward(loss);
  optimizer.step();
  optimizer.zeroGrad();
  await ddp.movePatterns(sparse);
  if (step % 10 === 0 || step === steps - 1) say(`step ${step}: loss on rank 0's shard ${loss.item().toFixed(4)}`);
  for (const t of [loss, x, y]) t.dispose();
}

const test = rows(1_000_000, 0, 256);
const accuracy = tidy(() => {
  const predicted = argmax(model.forward(test.x), -1).dataSync();
  const labels = test.y.dataSync();
  return predicted.filter((p, i) => p === labels[i]).length / labels.length;
});
await ddp.checkReplicas();
say(`accuracy on 256 held-out points: ${(100 * accuracy).toFixed(1)}%; ${worldSize === 1 ? "1 replica" : `${worldSize} replicas identical`}`);
if (options.save !== undefined) {
  await ddp.save(options.save);
  say(`saved ${options.save} (from rank 0)`);
}
await group.destroy();
