import { defineConfig } from "tsup";
import { packageBuild } from "../../tsup.shared";

// Shared chunks keep one Module class for both entries, so instanceof works across them.
export default defineConfig(packageBuild({ index: "src/index.ts", node: "src/node.ts" }, { splitting: true }));
