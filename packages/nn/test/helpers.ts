import { getBackend, JsBackend, memory, registerBackend, removeBackend, setBackend, type Tensor, tensor } from "@blocksparse/core";
import { registerGraphRecordingBackend } from "@blocksparse/core/testing";
import { SeededRandom } from "@blocksparse/format";
import { disposeStateDict, loadOptimizerState, loadStateDict, type Module, type Optimizer, saveOptimizerState, saveStateDict } from "@blocksparse/nn";
import { afterAll, beforeAll } from "vitest";

/** Runs the enclosing describe's tests on the js backend with recorded graphs (registered here), then restores the active backend. */
export function onJsGraphs(): void {
  registerGraphRecordingBackend();
  let previous: string;
  beforeAll(() => {
    previous = getBackend();
    setBackend("js-graphs");
  });
  afterAll(() => setBackend(previous));
}

// A second, independent js backend: tensors on it live in another store, so moves between the two are real.
class SecondBackend extends JsBackend {
  override readonly name = "second";
}

/** Registers the backend "second" (a JsBackend with its own store) for the file's tests; after them, js is active and it is gone. */
export function useSecondBackend(): void {
  registerBackend("second", () => new SecondBackend(), 0);
  afterAll(() => {
    setBackend("js");
    removeBackend("second");
  });
}

/** A seeded synthetic classification problem: x [n, features] ~ N(0, 1), labels from a fixed random linear map. */
export function syntheticClassification(n: number, features: number, classes: number, seed: number): { x: Tensor; y: Tensor } {
  const random = new SeededRandom(seed);
  const x = random.fillNormal(new Float32Array(n * features), 0, 1);
  const map = random.fillNormal(new Float32Array(features * classes), 0, 1);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (let c = 0; c < classes; c++) {
      let score = 0;
      for (let f = 0; f < features; f++) score += x[i * features + f] * map[f * classes + c];
      if (score > bestScore) {
        bestScore = score;
        best = c;
      }
    }
    labels[i] = best;
  }
  return { x: tensor(x, [n, features]), y: tensor(labels, [n], "int32") };
}

/** Tensors alive plus those the finalizer freed: unchanged while garbage is collected across an await (memory()). */
export function liveTensors(): number {
  return memory().numTensors + memory().numCollected;
}

/** Host float64 copy of a tensor's values. */
export function host(t: Tensor): Float64Array {
  return Float64Array.from(t.dataSync());
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** A model's and its optimizer's state dicts as safetensors bytes (the state dicts disposed). */
export function checkpointBytes(model: Module, optimizer: Optimizer): { modelBytes: Uint8Array; optimizerBytes: Uint8Array } {
  const modelDict = model.stateDict();
  const modelBytes = saveStateDict(modelDict);
  disposeStateDict(modelDict);
  const optimizerDict = optimizer.stateDict();
  const optimizerBytes = saveOptimizerState(optimizerDict);
  disposeStateDict(optimizerDict.tensors);
  return { modelBytes, optimizerBytes };
}

/** Loads checkpointBytes()'s bytes into a model and its optimizer. */
export function resumeFromBytes(model: Module, optimizer: Optimizer, { modelBytes, optimizerBytes }: ReturnType<typeof checkpointBytes>): void {
  const modelDict = loadStateDict(modelBytes);
  model.loadStateDict(modelDict);
  disposeStateDict(modelDict);
  const optimizerDict = loadOptimizerState(optimizerBytes);
  optimizer.loadStateDict(optimizerDict);
  disposeStateDict(optimizerDict.tensors);
}

/** The error fn throws: its class and message (["nothing", ""] when it returns). */
export function thrown(fn: () => unknown): [string, string] {
  try {
    fn();
  } catch (error) {
    return [(error as Error).name, (error as Error).message];
  }
  return ["nothing", ""];
}
