/**
 * A job whose ranks each start a subprocess that runs until killed (as a data loader would) and write its pid to
 * `<out>/subprocess-<rank>.pid`; then rank 1 exits with code 3 while rank 0 waits.
 */
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2];
const rank = Number(process.env.RANK);
const worker = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
writeFileSync(join(out, `subprocess-${rank}.pid`), String(worker.pid));
if (rank === 1) {
  // Once both pids are written, so that the test can look for both subprocesses.
  const deadline = Date.now() + 20_000;
  const { existsSync } = await import("node:fs");
  while (!existsSync(join(out, "subprocess-0.pid")) && Date.now() < deadline) await new Promise((done) => setTimeout(done, 20));
  process.exit(3);
}
setInterval(() => {}, 1000);
