#!/usr/bin/env node
// The packaging smoke test: what a user gets from the registry, checked before it gets there.
// Packs every public package (after `pnpm build`), checks each tarball (LICENSE, metadata, no
// workspace: ranges), installs the tarballs into a fresh npm app outside the workspace, and runs
// there: an ES module script, a CommonJS script, a mixed ESM + CJS load (core must refuse the second
// copy), `tsc --noEmit` under node16 and bundler resolution, and browser bundles (format, nn).
// Any failure exits 1.
//   node scripts/smoke-pack.mjs [--keep]     (--keep leaves the scratch folder for a look)
// Needs the npm registry for typescript, esbuild and @types/node (the app's own dev tools).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const PNPM = ["npx", "--yes", "pnpm@10.34.9"];
const APP_TOOLS = ["typescript@~5.9.3", "esbuild@~0.27.7", "@types/node@^20.19.0"];
const started = performance.now();
const keep = process.argv.includes("--keep");

function say(line) {
  console.log(`smoke-pack [${((performance.now() - started) / 1000).toFixed(0)}s] ${line}`);
}

function fail(line) {
  console.error(`smoke-pack: FAILED: ${line}`);
  process.exit(1);
}

/** Runs a command; its output is shown only when it fails (or always, with `show`). */
function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: "utf8", maxBuffer: 64 << 20, ...options, env: { ...process.env, ...options.env } });
  const output = `${result.stdout ?? ""}${result.stderr ?? ""}`;
  if (result.status !== 0 && !options.allowFailure) fail(`${command} ${args.join(" ")} (exit ${result.status})\n${output}`);
  if (options.show) process.stdout.write(output);
  return { status: result.status, output };
}

/** The files of a .tgz (ustar: 512-byte headers, sizes in octal), as a map of path -> bytes. */
function readTarball(path) {
  const tar = gunzipSync(readFileSync(path));
  const files = new Map();
  for (let offset = 0; offset + 512 <= tar.length; ) {
    const header = tar.subarray(offset, offset + 512);
    const name = header.subarray(0, 100).toString("utf8").replace(/\0.*$/s, "");
    if (name === "") break;
    const prefix = header.subarray(345, 500).toString("utf8").replace(/\0.*$/s, "");
    const size = Number.parseInt(header.subarray(124, 136).toString("utf8").replace(/\0.*$/s, "").trim() || "0", 8);
    files.set(prefix ? `${prefix}/${name}` : name, tar.subarray(offset + 512, offset + 512 + size));
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

// A platform package is packed only with its prebuilt binary (scripts/build-prebuilt.mjs); without it npm
// skips the optional dependency, as it does on other platforms.
const publicPackages = readdirSync(join(root, "packages"))
  .map((dir) => ({ dir, manifest: JSON.parse(readFileSync(join(root, "packages", dir, "package.json"), "utf8")) }))
  .filter(({ manifest }) => !manifest.private)
  .filter(({ dir, manifest }) => manifest.os === undefined || existsSync(join(root, "packages", dir, manifest.main)));

const scratch = mkdtempSync(join(tmpdir(), "blocksparse-smoke-"));
const tarballDir = join(scratch, "tarballs");
const app = join(scratch, "app");
mkdirSync(app, { recursive: true });
process.on("exit", () => {
  if (keep) console.log(`smoke-pack: scratch folder kept at ${scratch}`);
  else rmSync(scratch, { recursive: true, force: true });
});

// 1. Pack (pnpm pack turns workspace:* into versions and runs prepack/postpack).
say(`packing ${publicPackages.length} packages`);
const filters = publicPackages.flatMap(({ dir }) => ["--filter", `./packages/${dir}`]);
run(PNPM[0], [...PNPM.slice(1), "-r", ...filters, "pack", "--pack-destination", tarballDir], { cwd: root });
const tarballs = readdirSync(tarballDir).filter((file) => file.endsWith(".tgz"));

// 2. What every tarball must carry (docs/packaging.md).
const license = readFileSync(join(root, "LICENSE"));
const REQUIRED_FIELDS = ["description", "keywords", "license", "homepage", "repository", "bugs", "engines", "exports"];
for (const { dir, manifest } of publicPackages) {
  const file = tarballs.find((name) => name === `${manifest.name.replace(/^@/, "").replace("/", "-")}-${manifest.version}.tgz`);
  if (!file) fail(`no tarball for ${manifest.name} in ${tarballs.join(", ")}`);
  const files = readTarball(join(tarballDir, file));
  const packed = JSON.parse(files.get("package/package.json").toString("utf8"));
  if (!files.get("package/LICENSE")?.equals(license)) fail(`${file}: LICENSE missing or not the root LICENSE`);
  if (!files.has("package/README.md")) fail(`${file}: README.md missing`);
  for (const field of REQUIRED_FIELDS) if (packed[field] === undefined) fail(`${file}: package.json has no "${field}"`);
  if (packed.repository.directory !== `packages/${dir}`) fail(`${file}: repository.directory is not packages/${dir}`);
  const ranges = JSON.stringify([packed.dependencies, packed.optionalDependencies, packed.peerDependencies]);
  if (ranges.includes("workspace:")) fail(`${file}: a workspace: range was left in ${ranges}`);
  for (const path of files.keys()) if (/\/(build|node_modules)\//.test(path)) fail(`${file}: ships ${path}`);
}
say(`${tarballs.length} tarballs carry LICENSE, README and full metadata`);

// 3. A fresh npm app (no workspace, no lockfile) with the tarballs and the app's own tools.
writeFileSync(join(app, "package.json"), `${JSON.stringify({ name: "smoke-app", version: "1.0.0", private: true }, null, 2)}\n`);
say("npm install of the tarballs into a fresh app");
run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", ...tarballs.map((file) => join(tarballDir, file)), ...APP_TOOLS], {
  cwd: app,
  show: true,
});

// 4. The scripts an app writes.
const fixtures = join(root, "scripts", "smoke-app");
for (const file of readdirSync(fixtures)) writeFileSync(join(app, file), readFileSync(join(fixtures, file)));
const node = (script) => run(process.execPath, [script], { cwd: app, show: true });
say("ES module script");
node("esm.mjs");
say("CommonJS script");
node("cjs.cjs");
say("ESM and CJS in one process: core must refuse its second copy");
const mixed = run(process.execPath, ["mixed.mjs"], { cwd: app, allowFailure: true });
if (!/DuplicateCoreError: @blocksparse\/core is loaded twice in this process: version [\d.]+ from its ES module build \(import\), then version [\d.]+ from its CommonJS build \(require\)/.test(mixed.output)) {
  fail(`the mixed ESM/CJS load did not throw DuplicateCoreError naming both builds:\n${mixed.output}`);
}
const tsc = join(app, "node_modules", "typescript", "bin", "tsc");
// node16 (CommonJS app, .d.cts) also checks the published declarations themselves (skipLibCheck off).
for (const config of ["tsconfig.node16.json", "tsconfig.bundler.json"]) {
  say(`tsc --noEmit -p ${config}`);
  run(process.execPath, [tsc, "--noEmit", "-p", config], { cwd: app, show: true });
}
const esbuild = join(app, "node_modules", ".bin", "esbuild");
const bundle = (entry, extra = []) =>
  run(esbuild, [entry, "--bundle", "--platform=browser", "--format=esm", "--minify", "--log-level=warning", "--outfile=/dev/null", ...extra], {
    cwd: app,
    allowFailure: true,
  });
for (const entry of ["browser-format.mjs", "browser-nn.mjs"]) {
  say(`browser bundle of ${entry}`);
  const result = bundle(entry);
  if (result.status !== 0) fail(`esbuild --platform=browser ${entry}:\n${result.output}`);
}
say("a browser bundle of @blocksparse/nn/node must name its Node built-ins");
const nodeOnly = bundle("browser-nn-node.mjs");
if (nodeOnly.status === 0 || !/"node:/.test(nodeOnly.output)) fail(`bundling @blocksparse/nn/node for a browser did not stop at a node: import:\n${nodeOnly.output}`);
say("OK");
