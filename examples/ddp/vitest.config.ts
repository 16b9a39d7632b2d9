import { defineProject } from "vitest/config";
import { workspaceAlias } from "../../vitest.shared.ts";

export default defineProject({
  resolve: { alias: workspaceAlias },
  test: { name: "example-ddp", include: ["test/**/*.test.ts"], testTimeout: 60_000 },
});
