import { defineConfig } from "tsup";
import { packageBuild } from "../../tsup.shared";

// The testing entry imports the package by name so both entries share one engine.
export default defineConfig(
  packageBuild({ index: "src/index.ts", testing: "src/testing.ts", "js-kernels": "src/js-kernels.ts" }, { external: ["@blocksparse/core", "vitest"] }),
);
