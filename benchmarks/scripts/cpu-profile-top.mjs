#!/usr/bin/env node
// Prints the functions with the most self time in V8 .cpuprofile files (node --cpu-prof).
//   node cpu-profile-top.mjs DIR_OR_FILE [count]
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

const [target, countArg] = process.argv.slice(2);
if (!target) {
  console.error("usage: cpu-profile-top.mjs DIR_OR_FILE [count]");
  process.exit(2);
}
// A count that is no positive integer printed nothing and exited 0 (slice(0, NaN) is empty).
const count = countArg === undefined ? 30 : /^\d+$/.test(countArg) ? Number(countArg) : Number.NaN;
if (!(count >= 1)) {
  console.error(`cpu-profile-top.mjs: count must be a positive integer, got ${JSON.stringify(countArg)}`);
  process.exit(2);
}
const stats = statSync(target, { throwIfNoEntry: false });
if (stats === undefined) {
  console.error(`cpu-profile-top.mjs: ${target} does not exist`);
  process.exit(2);
}
const files = stats.isDirectory() ? readdirSync(target).filter((f) => f.endsWith(".cpuprofile")).map((f) => join(target, f)) : [target];
const self = new Map();
let total = 0;
if (files.length === 0) {
  console.error(`cpu-profile-top.mjs: ${target} holds no .cpuprofile file (node --cpu-prof --cpu-prof-dir ${target} writes them)`);
  process.exit(1);
}
for (const file of files) {
  const profile = JSON.parse(readFileSync(file, "utf8"));
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  profile.samples.forEach((id, i) => {
    const node = nodes.get(id);
    const dt = profile.timeDeltas[i] ?? 0;
    const url = node.callFrame.url.split("/").slice(-2).join("/");
    const key = `${node.callFrame.functionName || "(anonymous)"} ${url}:${node.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  });
}
for (const [key, t] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, count)) {
  console.log(`${((100 * t) / total).toFixed(1).padStart(5)}%  ${key}`);
}
