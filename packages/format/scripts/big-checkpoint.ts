import { spawnSync } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { SafetensorsTensor } from "../src/index.js";
import { loadSafetensors, saveSafetensors, saveShardedSafetensors } from "../src/node.js";

/**
 * Opt-in measurement: saves and loads a checkpoint of GIB gibibytes (default 8), as one
 * file and as 2 GiB shards, each step in its own process so that its peak RSS is its own,
 * and checks the loaded tensors bit for bit against the generator.
 *
 *   pnpm -F @blocksparse/format big-checkpoint [GIB] [DIRECTORY]
 */

const TENSOR_BYTES = 256 * 2 ** 20;
const MiB = 2 ** 20;

/** Tensor i: deterministic, not constant, cheap to regenerate for the check. */
function tensorData(i: number): Float32Array {
  const data = new Float32Array(TENSOR_BYTES / 4).fill(i);
  for (let j = 0; j < data.length; j += 4099) data[j] = (j ^ (i * 2654435761)) % 1_000_003;
  return data;
}

const tensorCount = (gib: number) => Math.round((gib * 2 ** 30) / TENSOR_BYTES);
const rssMiB = () => process.memoryUsage().rss / MiB;
const peakRssMiB = () => process.resourceUsage().maxRSS / 1024;

async function child(mode: string, gib: number, path: string): Promise<void> {
  const count = tensorCount(gib);
  const baseline = rssMiB();
  const started = Date.now();
  if (mode === "save" || mode === "save-sharded") {
    const tensors = new Map<string, SafetensorsTensor>();
    for (let i = 0; i < count; i++) tensors.set(`layers.${i}.weight`, { dtype: "F32", shape: [TENSOR_BYTES / 4], data: tensorData(i) });
    const generated = Date.now();
    if (mode === "save") await saveSafetensors(path, tensors);
    else await saveShardedSafetensors(path, tensors, {}, { maxShardSize: 2 * 2 ** 30 });
    report({ mode, count, baseline, seconds: (Date.now() - generated) / 1000 });
    return;
  }
  const content = await loadSafetensors(path);
  const seconds = (Date.now() - started) / 1000;
  const peak = peakRssMiB();
  let mismatches = 0;
  for (let i = 0; i < count; i++) {
    const loaded = content.tensors.get(`layers.${i}.weight`)?.data as Float32Array | undefined;
    const expected = tensorData(i);
    if (loaded === undefined || !Buffer.from(loaded.buffer).equals(Buffer.from(expected.buffer))) mismatches++;
  }
  report({ mode, count, baseline, seconds, peak, mismatches, tensors: content.tensors.size });
}

function report(fields: { mode: string; count: number; baseline: number; seconds: number; peak?: number; mismatches?: number; tensors?: number }): void {
  const peak = fields.peak ?? peakRssMiB();
  const tensorMiB = (fields.count * TENSOR_BYTES) / MiB;
  console.log(
    JSON.stringify({
      ...fields,
      tensorMiB,
      peakRssMiB: Math.round(peak),
      baselineRssMiB: Math.round(fields.baseline),
      overTensorsMiB: Math.round(peak - fields.baseline - tensorMiB),
    }),
  );
}

async function main(): Promise<void> {
  const [first, second, third] = process.argv.slice(2);
  if (first === "--child") return child(second, Number(third), process.argv[5]);
  const gib = Number(first ?? 8);
  const directory = await mkdtemp(join(second ?? tmpdir(), "big-checkpoint-"));
  const script = fileURLToPath(import.meta.url);
  const run = (mode: string, path: string) => {
    const result = spawnSync(process.execPath, ["--import", "tsx", script, "--child", mode, String(gib), path], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
    process.stdout.write(result.stdout);
    if (result.status !== 0) throw new Error(`${mode} failed with ${result.status}`);
  };
  try {
    const single = join(directory, "model.safetensors");
    run("save", single);
    console.log(`file size: ${((await stat(single)).size / 2 ** 30).toFixed(3)} GiB`);
    run("load", single);
    await rm(single);
    const sharded = join(directory, "sharded");
    run("save-sharded", sharded);
    run("load", sharded);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

await main();
