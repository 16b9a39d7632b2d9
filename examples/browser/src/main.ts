/** The page: starts the Worker, shows its result, and leaves it on window for the headless check. */
import type { TrainResult } from "./train";

type Reply = { ok: true; result: TrainResult } | { ok: false; error: string };

const status = document.getElementById("status") as HTMLElement;
const worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
const started = performance.now();
worker.onmessage = (event: MessageEvent<Reply>) => {
  const reply = event.data;
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  status.textContent = reply.ok
    ? `trained in a Worker in ${seconds} s: loss ${reply.result.losses[0]!.toFixed(4)} -> ${reply.result.losses.at(-1)!.toFixed(4)}, accuracy ${(100 * reply.result.accuracy).toFixed(1)}%, saved ${reply.result.savedBytes} bytes, reloaded model ${reply.result.reloadedMatches ? "answers the same" : "DIFFERS"}`
    : `failed: ${reply.error}`;
  (window as unknown as { blocksparseResult: Reply }).blocksparseResult = reply;
};
worker.postMessage({ steps: 30 });
