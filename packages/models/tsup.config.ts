import { defineConfig } from "tsup";
import { packageBuild } from "../../tsup.shared";

// Shared chunks keep one class per model for both entries (instanceof works across them); keepNames keeps class names for toString and errors.
export default defineConfig(packageBuild({ index: "src/index.ts", node: "src/node.ts" }, { splitting: true, keepNames: true }));
