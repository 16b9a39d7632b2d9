import { defineProject } from "vitest/config";
import { workspaceAlias } from "../../vitest.shared.ts";

export default defineProject({
  resolve: { alias: workspaceAlias },
  // One file at a time: the files share one GPU, and device-wide figures (cudaMemGetInfo in memory.test.ts)
  // move when another file allocates meanwhile.
  test: { name: "backend-cuda", include: ["test/**/*.test.ts"], fileParallelism: false },
});
