import { defineConfig } from "tsup";
import { packageBuild } from "../../tsup.shared";

// Shared chunks keep one BsrMatrix class for every entry, so instanceof works across them.
export default defineConfig(packageBuild({ index: "src/index.ts", npz: "src/npz.ts", node: "src/node.ts" }, { splitting: true }));
