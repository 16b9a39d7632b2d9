/**
 * An eager training step as a user's own loop runs it (no captured graph): a transformer FFN (Linear -> GELU ->
 * Linear, both block-sparse or both dense) in bfloat16 mixed precision with AdamW, timed over many steps. Where
 * the host sets the pace (few tokens, or a slow host), this is the host's time per step.
 *
 *   tsx src/eager_step.ts [--backend cuda] [--widths 1024x4096] [--tokens 2048] [--block 64] [--density 0.25]
 *     [--steps 1000] [--warmup 2000] [--stand-in] [--phases] [--sync-each] [--native-times]
 * --block 0 is the dense model. --stand-in runs the cuda backend on src/stand_in_addon.cjs, which launches
 * nothing: the time is then the host's JavaScript alone, on any machine (no GPU needed). --phases also splits the
 * host's time per step between forward, backward and the optimizer's step (clocks read around each). --sync-each
 * waits for the GPU after every step, as a loop that reads its loss each step does (the runs' time then includes
 * each step's GPU time, and whatever a synchronize makes the next step pay again). --native-times wraps each of the
 * addon's functions in a clock after the warm-up and prints their host time per step (a call that waits for the GPU
 * shows as a long one). --warmup steps run untimed first:
 * V8 keeps optimizing the step's functions for the first thousand or two steps (a step's host time falls 3-6x over
 * them on a 2-core host), so fewer warm-up steps time that climb instead of the steady state a long training run sees.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { backward } from "@blocksparse/autograd";
import { cast, randn, tidy } from "@blocksparse/core";
import { AdamW, BlockSparseLinear, GELU, Linear, Sequential } from "@blocksparse/nn";
import { startBackend } from "./start_backend";
import { parseEagerStepFlags } from "./eager_step_flags";
import { describeFailure } from "./flags";
import { type NativeTimer, nativeTimesTable, timeNativeCalls } from "./native_times";

/** A bad flag's message alone, exit 1: this script's top level has no caller to catch it. */
function refuse(error: unknown): never {
  process.stderr.write(`${describeFailure(error)}\n`);
  process.exit(1);
}

const { values, dModel, hidden, tokens, block, steps, warmup, density } = (() => {
  try {
    return parseEagerStepFlags();
  } catch (error) {
    return refuse(error);
  }
})();
if (values["stand-in"]) {
  process.env.BLOCKSPARSE_CUDA_ADDON = fileURLToPath(new URL("./stand_in_addon.cjs", import.meta.url));
  process.env.BLOCKSPARSE_CUDA_WARMUP = "0";
}
// Five timed runs of the same whole number of steps: the time per step divides by the steps that ran.
const stepsPerRun = Math.floor(steps / 5);
// --native-times: the addon the backend will load (the first candidate present) is loaded here first and its functions
// wrapped in place, before the backend takes them (the module cache hands it the same object); counted from the warm-up's end.
let timer: NativeTimer | undefined;
if (values["native-times"]) {
  const { addonCandidates, NATIVE_FUNCTIONS } = await import("@blocksparse/backend-cuda");
  const path = addonCandidates().find((candidate) => candidate.path !== null && existsSync(candidate.path))?.path;
  if (path == null) refuse(new Error("--native-times: no CUDA addon is present to time"));
  timer = timeNativeCalls(createRequire(import.meta.url)(path) as Record<string, unknown>, NATIVE_FUNCTIONS);
}
const { backend, synchronize } = await startBackend(values.backend).catch(refuse);
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
timer?.reset();
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
  `${values["stand-in"] ? "stand-in addon" : backend} ${values.widths} tokens ${tokens} ${modelName}${values["sync-each"] ? ", synchronized each step" : ""}: ${times[2].toFixed(1)} us/step ` +
    `(runs ${times.map((t) => t.toFixed(0)).join(" ")}; process CPU ${((cpu.user + cpu.system) / (5 * stepsPerRun)).toFixed(1)} us/step)` +
    (values.phases ? `; host per step: forward ${us(phases.forward)}, backward ${us(phases.backward)}, optimizer ${us(phases.optimizer)} us` : ""),
);
if (timer !== undefined) {
  const times = timer.times();
  console.log(times.length > 0 ? nativeTimesTable(times, 5 * stepsPerRun) : "native calls: none timed (the backend loaded another addon than the first one present)");
  timer.restore();
}

function us(ms: number): string {
  return ((ms * 1000) / (5 * stepsPerRun)).toFixed(1);
}
