/**
 * An eager training step as a user's own loop runs it (no captured graph): a transformer FFN (Linear -> GELU ->
 * Linear, both block-sparse or both dense) in bfloat16 mixed precision with AdamW, timed over many steps. Where
 * the host sets the pace (few tokens, or a slow host), this is the host's time per step.
 *
 *   tsx src/eager_step.ts [--backend cuda] [--widths 1024x4096] [--tokens 2048] [--block 64] [--density 0.25]
 *     [--steps 1000] [--warmup 2000] [--stand-in] [--phases] [--sync-each]
 * --block 0 is the dense model. --stand-in runs the cuda backend on src/stand_in_addon.cjs, which launches
 * nothing: the time is then the host's JavaScript alone, on any machine (no GPU needed). --phases also splits the
 * host's time per step between forward, backward and the optimizer's step (clocks read around each). --sync-each
 * waits for the GPU after every step, as a loop that reads its loss each step does (the runs' time then includes
 * each step's GPU time, and whatever a synchronize makes the next step pay again). --warmup steps run untimed first:
 * V8 keeps optimizing the step's functions for the first thousand or two steps (a step's host time falls 3-6x over
 * them on a 2-core host), so fewer warm-up steps time that climb instead of the steady state a long training run sees.
 */
import { fileURLToPath } from "node:url";
import { backward } from "@blocksparse/autograd";
import { cast, randn, tidy } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, GELU, Linear, Sequential } from "@blocksparse/nn";
import { startBackend } from "./start_backend";
import { BACKEND_FLAG, checkKeepsABlock, describeFailure, FlagError, parseFlags } from "./flags";

/** A bad flag's message alone, exit 1: this script's top level has no caller to catch it. */
function refuse(error: unknown): never {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
}

const { values } = (() => {
  try {
    return parseFlags({
      usage: "tsx src/eager_step.ts [flags]",
      summary: "An eager training step (FFN, bfloat16 mixed precision, AdamW) timed over many steps: the host's time per step.",
      flags: {
        backend: BACKEND_FLAG,
        widths: { type: "string", default: "1024x4096", description: "DMODELxHIDDEN of the FFN" },
        tokens: { type: "string", default: "2048", description: "tokens per step" },
        block: { type: "string", default: "64", description: "block side; 0 is the dense model" },
        density: { type: "string", default: "0.25", description: "density in (0, 1] of the block-sparse layers" },
        steps: { type: "string", default: "1000", description: "timed steps, at least 5 (five runs of steps / 5)" },
        warmup: { type: "string", default: "2000", description: "untimed steps first (V8 keeps optimizing for a thousand or two)" },
        "stand-in": { type: "boolean", default: false, description: "run the cuda backend on src/stand_in_addon.cjs, which launches nothing (no GPU needed)" },
        phases: { type: "boolean", default: false, description: "split the host's time between forward, backward and the optimizer" },
        "sync-each": { type: "boolean", default: false, description: "wait for the GPU after every step" },
      },
    });
  } catch (error) {
    return refuse(error);
  }
})();
if (values["stand-in"]) {
  if (values.backend !== "cuda") refuse(new FlagError("--stand-in replaces the CUDA addon: use it with --backend cuda"));
  process.env.BLOCKSPARSE_CUDA_ADDON = fileURLToPath(new URL("./stand_in_addon.cjs", import.meta.url));
  process.env.BLOCKSPARSE_CUDA_WARMUP = "0";
}
const match = /^(\d+)x(\d+)$/.exec(values.widths);
const [dModel, hidden] = match === null ? [0, 0] : [Number(match[1]), Number(match[2])];
// Decimal digits only: Number() would read "0x10" as 16 and "" as 0.
const whole = (text: string): number => (/^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN);
const [tokens, block, steps, warmup] = [whole(values.tokens), whole(values.block), whole(values.steps), whole(values.warmup)];
const density = /^\s*(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?\s*$/i.test(values.density) ? Number(values.density) : Number.NaN;
try {
  if (!match || dModel < 1 || hidden < 1) throw new FlagError(`--widths: "${values.widths}" is not DMODELxHIDDEN of positive integers (e.g. 1024x4096)`);
  // Five timed runs of steps / 5 each need five steps at least; any token count from 1 and any warm-up from 0 run.
  for (const [name, n, least] of [["tokens", tokens, 1], ["steps", steps, 5], ["warmup", warmup, 0]] as const) {
    if (!Number.isSafeInteger(n) || n < least) throw new FlagError(`--${name}: expected an integer >= ${least}, got "${values[name]}"`);
  }
  if (!Number.isInteger(block) || block < 0) throw new FlagError(`--block: expected a block side (a positive integer) or 0 for the dense model, got "${values.block}"`);
  if (block !== 0 && !(density > 0 && density <= 1)) throw new FlagError(`--density: expected a density in (0, 1], got "${values.density}"`);
  // Checked here, not left to BlockSparseLinear's constructor: its error would come with a stack, after the backend started.
  if (block !== 0 && (dModel % block !== 0 || hidden % block !== 0)) throw new FlagError(`--block ${block} does not divide both widths of --widths ${values.widths}`);
  if (block !== 0) checkKeepsABlock(density, hidden / block, dModel / block, `${block}x${block}`, `the ${hidden}x${dModel} weights (--widths ${values.widths})`, "density");
} catch (error) {
  refuse(error);
}
// Five timed runs of the same whole number of steps: the time per step divides by the steps that ran.
const stepsPerRun = Math.floor(steps / 5);
const { synchronize } = await startBackend(values.backend).catch(refuse);
const layer = (inF: number, outF: number, seed: number) =>
  block === 0 ? new Linear(inF, outF, { seed }) : new BlockSparseLinear(inF, outF, { density, blockShape: [block, block], seed });
const model = new Sequential(layer(dModel, hidden, 1), new GELU("tanh"), layer(hidden, dModel, 2));
model.to("bfloat16");
const x = tidy(() => cast(randn([tokens, dModel], { seed: 1 }), "bfloat16"));
const dy = tidy(() => cast(randn([tokens, dModel], { seed: 2, std: 1 / Math.sqrt(tokens) }), "bfloat16"));
const optimizer = new AdamW(model.parameters(), { lr: 1e-4, weightDecay: 0 });
const phases = { forward: 0, backward: 0, optimizer: 0 };
const step = () => {
  if (!values.phases) {
    tidy(() => {
      optimizer.zeroGrad();
      backward(model.forward(x), dy);
    });
    optimizer.step();
    return;
  }
  const t0 = performance.now();
  let t1 = 0;
  tidy(() => {
    optimizer.zeroGrad();
    const y = model.forward(x);
    t1 = performance.now();
    backward(y, dy);
  });
  const t2 = performance.now();
  optimizer.step();
  const t3 = performance.now();
  phases.forward += t1 - t0;
  phases.backward += t2 - t1;
  phases.optimizer += t3 - t2;
};
for (let i = 0; i < warmup; i++) step();
synchronize();
phases.forward = phases.backward = phases.optimizer = 0;
// Five runs of steps / 5, each ended by a synchronize: the median run, and the process's CPU time per step.
const times: number[] = [];
const cpuBefore = process.cpuUsage();
for (let r = 0; r < 5; r++) {
  const start = performance.now();
  for (let i = 0; i < stepsPerRun; i++) {
    step();
    if (values["sync-each"]) synchronize();
  }
  synchronize();
  times.push(((performance.now() - start) * 1000) / stepsPerRun);
}
const cpu = process.cpuUsage(cpuBefore);
times.sort((a, b) => a - b);
const modelName = block === 0 ? "dense" : `${block}x${block} d=${density}`;
console.log(
  `${values["stand-in"] ? "stand-in addon" : values.backend} ${values.widths} tokens ${tokens} ${modelName}${values["sync-each"] ? ", synchronized each step" : ""}: ${times[2].toFixed(1)} us/step ` +
    `(runs ${times.map((t) => t.toFixed(0)).join(" ")}; process CPU ${((cpu.user + cpu.system) / (5 * stepsPerRun)).toFixed(1)} us/step)` +
    (values.phases ? `; host per step: forward ${us(phases.forward)}, backward ${us(phases.backward)}, optimizer ${us(phases.optimizer)} us` : ""),
);

function us(ms: number): string {
  return ((ms * 1000) / (5 * stepsPerRun)).toFixed(1);
}
