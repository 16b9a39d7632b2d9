import { defineProject } from "vitest/config";
import { workspaceAlias } from "../../vitest.shared.ts";

export default defineProject({
  resolve: { alias: workspaceAlias },
  // The tests start Node processes that talk over loopback TCP: generous limits for a loaded machine.
  test: { name: "distributed", include: ["test/**/*.test.ts"], testTimeout: 60_000, hookTimeout: 60_000 },
});
