import { afterEach, describe, expect, it, vi } from "vitest";

// A machine with more cores than the pool takes: availableParallelism() says 5000.
vi.mock("node:os", async (original) => ({ ...(await original<typeof import("node:os")>()), availableParallelism: () => 5000 }));

describe("the default thread count on a machine with more cores than the pool's 4096", () => {
  const saved = process.env.BLOCKSPARSE_CPU_THREADS;
  afterEach(() => {
    if (saved === undefined) delete process.env.BLOCKSPARSE_CPU_THREADS;
    else process.env.BLOCKSPARSE_CPU_THREADS = saved;
  });

  it("is the pool's most, not an error", async () => {
    delete process.env.BLOCKSPARSE_CPU_THREADS;
    const { defaultCpuThreads } = await import("../src/settings");
    expect(defaultCpuThreads()).toBe(4096);
  });
});
