#!/usr/bin/env node
// Packs as npm tarballs every dependency, direct or not, of the given workspace packages that is not a
// workspace package itself, from the copies this workspace installed: with them an app installs from
// tarballs alone (no registry, no npm cache), at the versions the workspace's lockfile pinned.
//   node scripts/gpu-check-app/pack-deps.mjs OUT_DIR packages/nn packages/backend-cuda ...
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, realpathSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";

const [outDir, ...packageDirs] = process.argv.slice(2);
if (!outDir || packageDirs.length === 0) {
  console.error("usage: node scripts/gpu-check-app/pack-deps.mjs OUT_DIR PACKAGE_DIR...");
  process.exit(2);
}

/** The folder Node would load `name` from when required in `fromDir` (the real path, links followed). */
function installedDir(name, fromDir) {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", name);
    if (existsSync(join(candidate, "package.json"))) return realpathSync(candidate);
    if (dirname(dir) === dir) return null;
  }
}

const packed = new Map(); // name -> { version, dir }
const pending = packageDirs.map((dir) => realpathSync(resolve(dir)));
while (pending.length > 0) {
  const from = pending.pop();
  const manifest = JSON.parse(readFileSync(join(from, "package.json"), "utf8"));
  const optional = manifest.optionalDependencies ?? {};
  for (const name of Object.keys({ ...manifest.dependencies, ...optional })) {
    if (name.startsWith("@blocksparse/")) continue;
    const dir = installedDir(name, from);
    if (dir === null) {
      if (name in optional) continue; // an optional dependency for another platform
      throw new Error(`${name}, a dependency of ${manifest.name}, is not installed in this workspace (run the install first)`);
    }
    const { version } = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    const seen = packed.get(name);
    if (seen && seen.version !== version) throw new Error(`${name} is needed at ${seen.version} and ${version}: one app cannot hold both at its root`);
    if (seen) continue;
    packed.set(name, { version, dir });
    pending.push(dir);
  }
}

mkdirSync(outDir, { recursive: true });
for (const [name, { version, dir }] of packed) {
  // npm reads any gzipped tar whose files sit under package/; it drops link entries, so a file the store
  // hard-links twice inside one package must be stored twice.
  const file = join(outDir, `${name.replace("@", "").replace("/", "-")}-${version}.tgz`);
  const tar = spawnSync("tar", ["--hard-dereference", "-czf", file, "-C", dirname(dir), "--transform", `s,^${basename(dir)},package,`, basename(dir)], { encoding: "utf8" });
  if (tar.status !== 0) throw new Error(`tar of ${name}@${version} failed: ${tar.stderr}`);
}
console.log(`pack-deps: ${packed.size} dependencies packed into ${outDir}`);
