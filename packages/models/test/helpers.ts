import { fileURLToPath } from "node:url";
import { fromStorage, type Tensor } from "@blocksparse/core";
import { loadSafetensors } from "@blocksparse/format/node";

export const fixtures = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

/** The tensors of a reference.safetensors file (int32 inputs, float32 outputs). */
export async function readReference(name: string): Promise<Map<string, Tensor>> {
  const content = await loadSafetensors(fixtures(`${name}/reference.safetensors`));
  const out = new Map<string, Tensor>();
  for (const [key, t] of content.tensors) out.set(key, fromStorage(t.data as Float32Array | Int32Array, t.shape, t.dtype === "I32" ? "int32" : "float32"));
  return out;
}

/** max |got - want| / max |want|: a normwise relative error (elementwise ones blow up near zero). */
export function relativeError(got: Tensor, want: Tensor): number {
  const a = got.dataSync();
  const b = want.dataSync();
  if (a.length !== b.length) throw new Error(`relativeError: ${a.length} values against ${b.length}`);
  let error = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    error = Math.max(error, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return error / scale;
}
