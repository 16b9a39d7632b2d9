import { fileURLToPath } from "node:url";

const packagesDir = fileURLToPath(new URL("./packages/", import.meta.url));

/**
 * Workspace imports resolve to each package's TypeScript sources, so tests run
 * without a build. Convention: `@blocksparse/<dir>` is `packages/<dir>/src/index.ts`
 * and the subpath `@blocksparse/<dir>/<name>` is `packages/<dir>/src/<name>.ts`.
 */
export const workspaceAlias: { find: RegExp; replacement: string }[] = [
  { find: /^@blocksparse\/([a-z-]+)$/, replacement: `${packagesDir}$1/src/index.ts` },
  { find: /^@blocksparse\/([a-z-]+)\/([a-z-]+)$/, replacement: `${packagesDir}$1/src/$2.ts` },
];
