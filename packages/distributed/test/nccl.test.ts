/**
 * The NCCL group where it cannot run (no GPU, no NCCL: CI): it must say why, as an NcclError,
 * before touching the network. Where a GPU is present, benchmarks/scripts/gpu-ddp.sh runs it.
 */
import { cudaAvailability } from "@blocksparse/backend-cuda";
import { afterEach, describe, expect, it } from "vitest";
import { initProcessGroup, NcclError } from "../src/index";

const device = process.env.BLOCKSPARSE_CUDA_DEVICE;
afterEach(() => {
  if (device === undefined) delete process.env.BLOCKSPARSE_CUDA_DEVICE;
  else process.env.BLOCKSPARSE_CUDA_DEVICE = device;
});

const cuda = cudaAvailability();
if (cuda.available) console.log("[nccl.test.ts] CUDA is available here: the unavailable-NCCL check is skipped (benchmarks/scripts/gpu-ddp.sh runs NCCL)");

describe("the NCCL process group without CUDA", () => {
  it.skipIf(cuda.available)("rejects with an NcclError that gives CUDA's reason, before any rendezvous", async () => {
    // Port 1 on loopback: nothing listens there, so reaching the rendezvous would fail differently.
    const env = { rank: 0, worldSize: 2, localRank: 0, localWorldSize: 2, masterAddr: "127.0.0.1", masterPort: 1, launcherStore: true };
    const failure = initProcessGroup({ backend: "nccl", env, timeoutMs: 1000 });
    await expect(failure).rejects.toThrow(NcclError);
    await expect(failure).rejects.toThrow(new RegExp(`the NCCL process group needs the cuda backend: .*${escapeRegExp(cuda.reason ?? "")}`));
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
