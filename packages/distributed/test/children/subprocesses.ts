/**
 * A job whose ranks each start a subprocess that runs until killed (as a data loader would) and write its pid to
 * `<out>/subprocess-<rank>.pid` once it runs; then rank 1 exits with code 3 while rank 0 waits. With "stubborn" the
 * subprocesses ignore SIGTERM (only SIGKILL stops them).
 */
import { spawn } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2];
const rank = Number(process.env.RANK);
const ready = join(out, `subprocess-${rank}.ready`);
const ignore = process.argv[3] === "stubborn" ? "process.on('SIGTERM', () => {});" : "";
// It says it runs (its SIGTERM handler in place) by writing `ready`.
const body = `${ignore} require('node:fs').writeFileSync(process.env.READY_FILE, ''); setInterval(() => {}, 1000);`;
const worker = spawn(process.execPath, ["-e", body], { stdio: "ignore", env: { ...process.env, READY_FILE: ready } });
const waitFor = async (path: string) => {
  const deadline = Date.now() + 20_000;
  while (!existsSync(path) && Date.now() < deadline) await new Promise((done) => setTimeout(done, 20));
};
await waitFor(ready);
writeFileSync(join(out, `subprocess-${rank}.pid`), String(worker.pid));
// Once both subprocesses run, so that the test can look for both.
if (rank === 1) {
  await waitFor(join(out, "subprocess-0.pid"));
  process.exit(3);
}
setInterval(() => {}, 1000);
