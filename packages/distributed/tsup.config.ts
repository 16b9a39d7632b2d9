import { defineConfig } from "tsup";
import { packageBuild } from "../../tsup.shared";

// cli.ts (the blocksparse-run bin) starts with its shebang, which esbuild keeps; keepNames keeps class names for errors.
export default defineConfig(packageBuild({ index: "src/index.ts", cli: "src/cli.ts" }, { keepNames: true }));
