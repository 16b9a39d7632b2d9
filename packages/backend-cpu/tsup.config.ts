import { defineConfig } from "tsup";
import { packageBuild } from "../../tsup.shared";

// shims: the loader finds the addon from import.meta.url, in the CJS build too.
export default defineConfig(packageBuild({ index: "src/index.ts" }, { shims: true }));
