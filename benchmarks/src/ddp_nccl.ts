/**
 * One rank of the NCCL check (benchmarks/scripts/gpu-ddp.sh starts it through blocksparse-run):
 *   1. the collectives against exact expectations (float32, bfloat16, int32);
 *   2. data-parallel training of the CPU test's model on the cuda backend: replicas identical
 *      (checkReplicas), and rank 0 compares with one process on the combined batch;
 *   3. all-reduce bus bandwidth over sizes: NCCL in place through the addon (what nccl-tests
 *      measures) and ProcessGroup.allReduce (what the wrapper pays, a fresh output buffer each call).
 * Rank 0 writes <out>/ddp-nccl.json and <out>/ddp-nccl.md.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { cudaBackend, DTYPE_CODE, NcclReduceOp } from "@blocksparse/backend-cuda";
import { fullOn, setBackend, tensor, tidy } from "@blocksparse/core";
import { DistributedDataParallel, initProcessGroup, NcclProcessGroup } from "@blocksparse/distributed";
import { buildModel, buildOptimizers, combinedBatch, localBatch, lossOf, snapshot, STEPS, trainReference } from "../../packages/distributed/test/children/ddp_model";
import { describeFailure, FlagError, parseFlags } from "./flags";

// A bad argument is its message alone and exit 1, not a stack trace of the module's top level.
const out = (() => {
  try {
    const { positionals } = parseFlags({
      usage: "blocksparse-run --nproc-per-node N src/ddp_nccl.ts [OUT]",
      summary: "One rank of the NCCL check: exact collectives, data-parallel training, all-reduce bus bandwidth.",
      positionals: "OUT: directory rank 0 writes ddp-nccl.json and ddp-nccl.md to (default: the current directory)",
      flags: {},
    });
    if (positionals.length > 1) throw new FlagError(`expected at most one OUT directory, got ${positionals.length} arguments`);
    return positionals[0] ?? ".";
  } catch (error) {
    process.stderr.write(`${describeFailure(error)}\n`);
    return process.exit(1);
  }
})();
const group = await initProcessGroup({ backend: "nccl", timeoutMs: 120_000 });
if (!(group instanceof NcclProcessGroup)) throw new Error("expected the NCCL group");
setBackend("cuda");
const cuda = cudaBackend();
const { rank, worldSize } = group;
const report: Record<string, unknown> = { worldSize, device: cuda.device.name, nccl: group.library };
const log = (line: string) => rank === 0 && console.log(line);

// 1. Collectives, exact.
const expectEqual = (what: string, got: ArrayLike<number>, want: number[]) => {
  const same = got.length === want.length && want.every((v, i) => got[i] === v);
  if (!same) throw new Error(`${what}: got [${Array.from(got)}], expected [${want}]`);
};
const ranks = Array.from({ length: worldSize }, (_, r) => r);
const summed = tensor([1, 2, 3].map((v) => v * (rank + 1)), [3]);
await group.allReduce(summed, "sum");
expectEqual("allReduce sum", summed.dataSync(), [1, 2, 3].map((v) => v * ranks.reduce((s, r) => s + r + 1, 0)));
const averaged = tensor([2 * (rank + 1), 4], [2], "bfloat16");
await group.allReduce(averaged, "avg");
expectEqual("allReduce avg bfloat16", averaged.dataSync(), [ranks.reduce((s, r) => s + 2 * (r + 1), 0) / worldSize, 4]);
const shared = tensor([rank + 7], [1], "int32");
await group.broadcast(shared, worldSize - 1);
expectEqual("broadcast int32", shared.dataSync(), [worldSize - 1 + 7]);
const gathered = await group.allGather(tensor([rank], [1]));
expectEqual("allGather", gathered.dataSync(), ranks);
await group.barrier();
report.collectives = "exact";
log("collectives: exact");

// 2. Data-parallel training on the GPU, as the CPU test does it.
const model = buildModel(100 + rank);
const ddp = await DistributedDataParallel.create(model, group, { bucketBytes: 2048 });
const { adam, sparse } = buildOptimizers(model);
for (let step = 0; step < STEPS; step++) {
  const batch = combinedBatch(step, worldSize);
  const loss = tidy(() => lossOf(ddp, localBatch(batch, rank)));
  await ddp.backward(loss);
  loss.dispose();
  adam.step();
  adam.zeroGrad();
  await ddp.movePatterns(sparse, () => lossOf(model, batch));
}
await ddp.checkReplicas();
report.replicasIdentical = true;
if (rank === 0) {
  const ours = snapshot(model);
  const reference = trainReference(worldSize);
  let worst = 0;
  for (const [name, values] of Object.entries(ours.parameters)) {
    values.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(v - reference.parameters[name][i]));
    });
  }
  // Math.max keeps a NaN: a parameter gone NaN (or infinite) here, or in the one-process reference, fails the run.
  if (!Number.isFinite(worst)) throw new Error(`training: a parameter differs from one process by ${worst} (NaN or infinity in ours or the one-process reference)`);
  report.maxDifferenceFromOneProcess = worst;
  report.patternsAsOneProcess = JSON.stringify(ours.patterns) === JSON.stringify(reference.patterns);
  log(`training: replicas identical; max |difference| from one process on the combined batch ${worst.toExponential(2)}; patterns the same: ${report.patternsAsOneProcess}`);
}

// 3. All-reduce bandwidth.
const busFactor = (2 * (worldSize - 1)) / worldSize;
const rows: { bytes: number; inPlaceUs: number; inPlaceBusGBs: number; groupUs: number; groupBusGBs: number }[] = [];
const time = async (iterations: number, run: () => Promise<void> | void): Promise<number> => {
  cuda.synchronize();
  const start = performance.now();
  for (let i = 0; i < iterations; i++) await run();
  cuda.synchronize();
  return ((performance.now() - start) * 1000) / iterations;
};
for (let bytes = 1024; bytes <= 512 * 1024 * 1024; bytes *= 4) {
  const count = bytes / 4;
  const buffer = fullOn(cuda, [count], 1, "float32");
  const handle = (buffer.dataId as { handle: number }).handle;
  const iterations = bytes <= 1 << 20 ? 50 : bytes <= 64 << 20 ? 20 : 5;
  const inPlace = () => cuda.addon.ncclAllReduce(group.communicator, DTYPE_CODE.float32, handle, handle, count, NcclReduceOp.Sum);
  await time(3, inPlace);
  const inPlaceUs = await time(iterations, inPlace);
  const viaGroup = () => group.allReduce(buffer, "sum");
  await time(3, viaGroup);
  const groupUs = await time(iterations, viaGroup);
  buffer.dispose();
  const bus = (us: number) => (bytes / (us * 1e-6) / 1e9) * busFactor;
  rows.push({ bytes, inPlaceUs, inPlaceBusGBs: bus(inPlaceUs), groupUs, groupBusGBs: bus(groupUs) });
  log(`allReduce ${bytes} B: in place ${inPlaceUs.toFixed(1)} us (bus ${bus(inPlaceUs).toFixed(1)} GB/s), through the group ${groupUs.toFixed(1)} us (bus ${bus(groupUs).toFixed(1)} GB/s)`);
}
report.allReduce = rows;

if (rank === 0) {
  writeFileSync(join(out, "ddp-nccl.json"), `${JSON.stringify(report, null, 2)}\n`);
  const table = rows.map((r) => `| ${r.bytes} | ${r.inPlaceUs.toFixed(1)} | ${r.inPlaceBusGBs.toFixed(1)} | ${r.groupUs.toFixed(1)} | ${r.groupBusGBs.toFixed(1)} |`);
  writeFileSync(
    join(out, "ddp-nccl.md"),
    [
      `# NCCL all-reduce, ${worldSize} rank(s) on ${cuda.device.name} (${group.library})`,
      "",
      `Collectives exact; replicas identical after ${STEPS} data-parallel steps; max |difference| from one process on the combined batch: ${String(report.maxDifferenceFromOneProcess)}.`,
      "",
      "| bytes | in place (us) | bus GB/s | ProcessGroup.allReduce (us) | bus GB/s |",
      "|---:|---:|---:|---:|---:|",
      ...table,
      "",
    ].join("\n"),
  );
}
await group.destroy();
