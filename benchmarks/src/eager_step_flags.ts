/** eager_step.ts's flags, parsed and checked before a backend starts or a step runs. */
import { BACKEND_FLAG, checkKeepsABlock, type CliSpec, FlagError, parseFlags } from "./flags";

export const EAGER_STEP_CLI = {
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
    "native-times": { type: "boolean", default: false, description: "also print the host time of each native (addon) function per step (--backend cuda)" },
  },
} as const satisfies CliSpec;

/** The checked settings of `args` (FlagError naming the flag for a bad one), before a backend starts. */
export function parseEagerStepFlags(args: string[] = process.argv.slice(2)) {
  const { values } = parseFlags(EAGER_STEP_CLI, args);
  if (values["stand-in"] && values.backend !== "cuda") throw new FlagError("--stand-in replaces the CUDA addon: use it with --backend cuda");
  if (values["native-times"] && values.backend !== "cuda") throw new FlagError("--native-times times the CUDA addon's functions: use it with --backend cuda");
  const match = /^(\d+)x(\d+)$/.exec(values.widths);
  const [dModel, hidden] = match === null ? [0, 0] : [Number(match[1]), Number(match[2])];
  // Decimal digits only: Number() would read "0x10" as 16 and "" as 0.
  const whole = (text: string): number => (/^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN);
  const [tokens, block, steps, warmup] = [whole(values.tokens), whole(values.block), whole(values.steps), whole(values.warmup)];
  const density = /^\s*(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?\s*$/i.test(values.density) ? Number(values.density) : Number.NaN;
  if (!match || dModel < 1 || hidden < 1) throw new FlagError(`--widths: "${values.widths}" is not DMODELxHIDDEN of positive integers (e.g. 1024x4096)`);
  // Five timed runs of steps / 5 each need five steps at least; any token count from 1 and any warm-up from 0 run.
  for (const [name, n, least] of [["tokens", tokens, 1], ["steps", steps, 5], ["warmup", warmup, 0]] as const) {
    if (!Number.isSafeInteger(n) || n < least) throw new FlagError(`--${name}: expected an integer >= ${least}, got "${values[name]}"`);
  }
  if (!Number.isInteger(block) || block < 0) throw new FlagError(`--block: expected a block side (a positive integer) or 0 for the dense model, got "${values.block}"`);
  // Checked with --block 0 too: the dense model ignores it, but a bad value given is still a mistake in the command.
  if (!(density > 0 && density <= 1)) throw new FlagError(`--density: expected a density in (0, 1], got "${values.density}"`);
  // Checked here, not left to BlockSparseLinear's constructor: its error would come with a stack, after the backend started.
  if (block !== 0 && (dModel % block !== 0 || hidden % block !== 0)) throw new FlagError(`--block ${block} does not divide both widths of --widths ${values.widths}`);
  if (block !== 0) checkKeepsABlock(density, hidden / block, dModel / block, `${block}x${block}`, `the ${hidden}x${dModel} weights (--widths ${values.widths})`, "density");
  return { values, dModel, hidden, tokens, block, steps, warmup, density };
}
