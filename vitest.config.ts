import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    projects: ["packages/*", "examples/*", "benchmarks"],
    // vitest runs cpus - 1 test files at once by default: one on a 2-core machine. Many files here spend their time
    // waiting on child processes (the examples' CLIs, distributed ranks, the fuzzers' cases) or sockets, so two
    // files at once keep both cores busy there.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
