/**
 * Which GPU the NCCL group starts CUDA on (LOCAL_RANK), with the cuda backend replaced by a stand-in that records the
 * device asked for: the choice is made before NCCL is needed, so it is checked here without a GPU.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { readDistributedEnv } from "../src/env";
import { NcclError } from "../src/errors";
import { initProcessGroup } from "../src/init";

const cuda = vi.hoisted(() => ({ startedOn: null as number | null, asked: [] as (string | undefined)[] }));

vi.mock("@blocksparse/backend-cuda", () => ({
  DTYPE_CODE: {},
  NcclReduceOp: {},
  cudaBackend: () => {
    cuda.asked.push(process.env.BLOCKSPARSE_CUDA_DEVICE);
    const text = process.env.BLOCKSPARSE_CUDA_DEVICE;
    const index = cuda.startedOn ?? (text === undefined || text === "" ? 0 : Number(text));
    return { device: { index }, addon: { ncclInfo: () => ({ available: false, library: "no NCCL in this test" }) } };
  },
}));

const saved = process.env.BLOCKSPARSE_CUDA_DEVICE;
afterEach(() => {
  if (saved === undefined) delete process.env.BLOCKSPARSE_CUDA_DEVICE;
  else process.env.BLOCKSPARSE_CUDA_DEVICE = saved;
  cuda.startedOn = null;
  cuda.asked.length = 0;
});

const env = { rank: 1, worldSize: 2, localRank: 1, localWorldSize: 2, masterAddr: "127.0.0.1", masterPort: 1, launcherStore: true };

describe("the NCCL group's device is LOCAL_RANK's", () => {
  it("starts CUDA on device LOCAL_RANK, also when BLOCKSPARSE_CUDA_DEVICE is set but empty (which the cuda backend reads as unset: device 0 on every rank)", async () => {
    for (const value of [undefined, ""]) {
      if (value === undefined) delete process.env.BLOCKSPARSE_CUDA_DEVICE;
      else process.env.BLOCKSPARSE_CUDA_DEVICE = value;
      await expect(initProcessGroup({ backend: "nccl", env, timeoutMs: 500 })).rejects.toThrow(/the NCCL process group cannot start: no NCCL in this test/);
    }
    expect(cuda.asked).toEqual(["1", "1"]);
  });

  it("a BLOCKSPARSE_CUDA_DEVICE the user set wins over LOCAL_RANK", async () => {
    process.env.BLOCKSPARSE_CUDA_DEVICE = "3";
    await expect(initProcessGroup({ backend: "nccl", env, timeoutMs: 500 })).rejects.toThrow(/cannot start: no NCCL/);
    expect(cuda.asked).toEqual(["3"]);
  });

  it("CUDA started on another device before initProcessGroup is an NcclError naming LOCAL_RANK and both devices, not ranks sharing a GPU", async () => {
    delete process.env.BLOCKSPARSE_CUDA_DEVICE;
    cuda.startedOn = 0;
    const failure = initProcessGroup({ backend: "nccl", env, timeoutMs: 500 });
    await expect(failure).rejects.toThrow(NcclError);
    await expect(failure).rejects.toThrow(/^LOCAL_RANK=1 gives this rank CUDA device 1, but CUDA had already started on device 0 \(the cuda backend was used before initProcessGroup\)/);
  });

  it("LOCAL_WORLD_SIZE larger than WORLD_SIZE is a DistributedEnvError naming both (LOCAL_RANK could then pick a device past the job's)", () => {
    const vars = { RANK: "1", WORLD_SIZE: "2", MASTER_PORT: "29500" };
    expect(() => readDistributedEnv({ ...vars, LOCAL_WORLD_SIZE: "8", LOCAL_RANK: "5" })).toThrow(/^LOCAL_WORLD_SIZE=8 is more than WORLD_SIZE=2/);
    expect(readDistributedEnv({ ...vars, LOCAL_WORLD_SIZE: "2", LOCAL_RANK: "1" })).toMatchObject({ localRank: 1, localWorldSize: 2 });
  });
});
