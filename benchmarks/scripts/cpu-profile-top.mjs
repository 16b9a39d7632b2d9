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
const files = statSync(target).isDirectory() ? readdirSync(target).filter((f) => f.endsWith(".cpuprofile")).map((f) => join(target, f)) : [target];
const self = new Map();
let total = 0;
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
for (const [key, t] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(countArg ?? 30))) {
  console.log(`${((100 * t) / total).toFixed(1).padStart(5)}%  ${key}`);
}
