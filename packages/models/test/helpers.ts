import { fileURLToPath } from "node:url";
import { fromStorage, memory, type Tensor } from "@blocksparse/core";
import { loadSafetensors } from "@blocksparse/format/node";
import { maxRelativeError } from "@blocksparse/models";

export const fixtures = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

/** The tensors of a reference.safetensors file (int32 inputs, float32 outputs). */
export async function readReference(name: string): Promise<Map<string, Tensor>> {
  const content = await loadSafetensors(fixtures(`${name}/reference.safetensors`));
  const out = new Map<string, Tensor>();
  for (const [key, t] of content.tensors) out.set(key, fromStorage(t.data as Float32Array | Int32Array, t.shape, t.dtype === "I32" ? "int32" : "float32"));
  return out;
}

/** The comparison the PyTorch checks use (max |got - want| / max |want|). */
export const relativeError = maxRelativeError;

/** The tensors a call leaves behind (it throws or not). */
export function leftBehind(run: () => unknown): number {
  const before = memory().numTensors;
  try {
    run();
  } catch {
    // The count is what is checked.
  }
  return memory().numTensors - before;
}
