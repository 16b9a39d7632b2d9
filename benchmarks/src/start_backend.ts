import { listBackends, setBackend } from "@blocksparse/core";
import type { GpuInfo } from "./record";
import { FlagError } from "./flags";

/** The native cpu backend when its addon loads (null otherwise, with the reason on stderr unless asked for). */
export async function startCpu(requested: string): Promise<{ backend: string; synchronize: () => void } | null> {
  const cpu = await import("@blocksparse/backend-cpu");
  const availability = cpu.cpuAvailability();
  if (!availability.available) {
    if (requested === "cpu") throw new FlagError(`--backend cpu: the CPU addon is unavailable: ${availability.reason ?? "no reason given"}; --backend js runs anywhere`);
    process.stderr.write(`native cpu backend unavailable (${availability.reason ?? "no reason given"})\n`);
    return null;
  }
  setBackend("cpu");
  return { backend: "cpu", synchronize: () => {} };
}

/** Starts the requested backend; "auto" takes CUDA when its addon loads, else the native cpu backend, else js. */
export async function startBackend(requested: string): Promise<{ backend: string; gpu?: GpuInfo; synchronize: () => void }> {
  const js = () => {
    setBackend("js");
    return { backend: "js", synchronize: () => {} };
  };
  if (requested === "js") return js();
  if (requested === "cpu") return (await startCpu(requested)) ?? js();
  if (requested !== "auto" && requested !== "cuda") {
    // Any other name is one a backend module registered; a misspelt one is the user's flag, not a crash inside core.
    if (!listBackends().includes(requested)) {
      const others = listBackends().filter((name) => !["cuda", "cpu", "js"].includes(name));
      throw new FlagError(`--backend: unknown backend "${requested}", expected cuda, cpu, js or auto${others.length > 0 ? ` (or a registered one: ${others.join(", ")})` : ""}`);
    }
    setBackend(requested);
    return { backend: requested, synchronize: () => {} };
  }
  const cuda = await import("@blocksparse/backend-cuda");
  const availability = cuda.cudaAvailability();
  if (!availability.available) {
    if (requested === "cuda") {
      throw new FlagError(`--backend cuda: CUDA is unavailable: ${availability.reason ?? "no reason given"}; without a GPU, --backend auto picks the native cpu backend (or js), --backend cpu or js names one`);
    }
    process.stderr.write(`CUDA unavailable (${availability.reason ?? "no reason given"}); trying the native cpu backend\n`);
    return (await startCpu(requested)) ?? js();
  }
  setBackend("cuda");
  const instance = cuda.cudaBackend();
  const { device, build } = instance;
  return {
    backend: "cuda",
    gpu: { name: device.name, computeCapability: device.computeCapability, totalMemoryBytes: device.totalMemory, memoryBandwidth: device.memoryBandwidth, cudaVersion: String(build.cudaVersion), cublas: build.cublas },
    synchronize: () => instance.synchronize(),
  };
}
