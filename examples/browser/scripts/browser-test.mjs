#!/usr/bin/env node
// The real-browser check (opt-in: `npx pnpm@10.34.9 test:browser` at the root, after `build`): bundles the
// example for browsers, serves it, opens it in headless Chromium (Debian's `chromium` package, or
// CHROMIUM=/path), where a Worker builds, trains, saves and reloads a small block-sparse model under a
// strict CSP; then runs the same job in Node and fails unless the losses and outputs are bit-identical.
import { existsSync, readFileSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";

const exampleDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const distDir = join(exampleDir, "dist");
const started = performance.now();
const say = (line) => console.log(`test:browser [${((performance.now() - started) / 1000).toFixed(1)}s] ${line}`);

if (process.env.CHROMIUM && !(existsSync(process.env.CHROMIUM) && statSync(process.env.CHROMIUM).isFile())) {
  console.error(`test:browser: CHROMIUM=${process.env.CHROMIUM} is not a file: point it at a Chromium or Chrome executable, or unset it to use /usr/bin/chromium`);
  process.exit(1);
}
const executablePath = [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"].find((path) => path && existsSync(path));
if (!executablePath) {
  console.error("test:browser: no Chromium found: `apt-get install -y chromium` (Debian), or set CHROMIUM=/path/to/chrome");
  process.exit(1);
}

// 1. Bundles: the page and its Worker for browsers (the packages' built ESM entries), the job for Node.
const shared = { bundle: true, format: "esm", target: "es2022", sourcemap: true, logLevel: "warning" };
await build({ ...shared, entryPoints: [join(exampleDir, "src/main.ts"), join(exampleDir, "src/worker.ts")], outdir: distDir, platform: "browser", minify: true });
await build({ ...shared, entryPoints: [join(exampleDir, "src/train.ts")], outfile: join(distDir, "train.node.mjs"), platform: "node" });
say("bundled");

// 2. The page, served from this folder.
const types = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };
const server = createServer((request, response) => {
  const pathname = new URL(request.url ?? "/", "http://localhost").pathname;
  if (pathname === "/favicon.ico") {
    response.writeHead(204).end(); // the browser asks; the example has none
    return;
  }
  const path = join(exampleDir, pathname.replace(/\/$/, "/index.html"));
  if (!path.startsWith(exampleDir) || !existsSync(path)) {
    response.writeHead(404).end();
    return;
  }
  response.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" }).end(readFileSync(path));
});
await new Promise((done) => server.listen(0, "127.0.0.1", done));
const url = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
let inBrowser;
const problems = [];
try {
  const page = await browser.newPage();
  // Any problem the page reports ends the wait at once (the check fails on it anyway), rather than at the timeout.
  let reportProblem;
  const problemReported = new Promise((_, reject) => {
    reportProblem = reject;
  });
  problemReported.catch(() => {});
  const report = (text) => {
    problems.push(text);
    reportProblem(new Error(text));
  };
  page.on("console", (message) => {
    if (message.type() === "error" || /Content Security Policy|unsafe-eval/.test(message.text())) report(message.text());
  });
  page.on("pageerror", (error) => report(String(error)));
  try {
    await page.goto(url);
    await Promise.race([page.waitForFunction(() => "blocksparseResult" in window, null, { timeout: 120_000 }), problemReported]);
  } catch (error) {
    const status = await page.textContent("#status").catch(() => null);
    console.error(`test:browser: FAILED: ${problems.length > 0 ? `the page reported: ${problems.join(" | ")}` : String(error)}${status ? ` (status: ${status})` : ""}`);
    process.exitCode = 1;
  }
  if (process.exitCode !== 1) {
    inBrowser = await page.evaluate(() => window.blocksparseResult);
    say(`${await browser.version()}: ${await page.textContent("#status")}`);
  }
} finally {
  await browser.close();
  server.close();
}

if (process.exitCode === 1) process.exit(1);

// 3. The same job in Node, and the comparison.
const { trainAndReload } = await import(pathToFileURL(join(distDir, "train.node.mjs")).href);
const inNode = trainAndReload(30);
const fail = (line) => {
  console.error(`test:browser: FAILED: ${line}`);
  process.exit(1);
};
if (problems.length > 0) fail(`the page reported: ${problems.join(" | ")}`);
if (!inBrowser.ok) fail(`the Worker failed: ${inBrowser.error}`);
const browserResult = inBrowser.result;
if (!browserResult.reloadedMatches) fail("the reloaded model answers differently in the browser");
const same = (a, b) => a.length === b.length && a.every((value, i) => Object.is(value, b[i]));
if (!same(browserResult.losses, inNode.losses)) fail(`losses differ: browser ${browserResult.losses} vs Node ${inNode.losses}`);
if (!same(browserResult.outputs, inNode.outputs)) fail(`outputs differ: browser ${browserResult.outputs} vs Node ${inNode.outputs}`);
if (browserResult.savedBytes !== inNode.savedBytes) fail(`saved ${browserResult.savedBytes} bytes in the browser, ${inNode.savedBytes} in Node`);
say(
  `OK: 30 Adam steps, loss ${inNode.losses[0].toFixed(4)} -> ${inNode.losses.at(-1).toFixed(4)}, accuracy ${(100 * inNode.accuracy).toFixed(1)}%; losses, outputs and the ${inNode.savedBytes}-byte file are bit-identical in the browser and in Node`,
);
