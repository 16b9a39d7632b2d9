/** Trains in a Worker, so the page stays responsive; posts the result (or the error) back. */
import { trainAndReload } from "./train";

self.onmessage = (event: MessageEvent<{ steps: number }>) => {
  try {
    self.postMessage({ ok: true, result: trainAndReload(event.data.steps) });
  } catch (error) {
    self.postMessage({ ok: false, error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
  }
};
