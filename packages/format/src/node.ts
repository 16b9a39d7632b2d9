import { randomBytes } from "node:crypto";
import { readFile, rename, rm, writeFile } from "node:fs/promises";
import { bsrMatricesToSafetensors, getBsrMatrices } from "./bsr-safetensors.js";
import type { BsrMatrix } from "./matrix.js";
import { decodeScipyNpz, encodeScipyNpz } from "./npz.js";
import { decodeSafetensors, encodeSafetensors, type SafetensorsContent, type SafetensorsTensor } from "./safetensors.js";

/** Node.js file helpers. The main entry stays free of `node:` imports. */

/** Writes bytes to a temporary file renamed into place, so a crash never leaves half a file. */
async function writeAtomically(path: string, bytes: Uint8Array): Promise<void> {
  const temporary = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(temporary, bytes);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
}

/** Writes a safetensors file (atomically). */
export async function saveSafetensors(
  path: string,
  tensors: Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>,
  metadata: Record<string, string> = {},
): Promise<void> {
  await writeAtomically(path, encodeSafetensors(tensors, metadata));
}

/** Reads and validates a safetensors file. */
export async function loadSafetensors(path: string): Promise<SafetensorsContent> {
  return decodeSafetensors(await readFile(path));
}

/** Writes BSR matrices (and any dense tensors and metadata) to a safetensors file. */
export async function saveBsrMatrices(
  path: string,
  matrices: Map<string, BsrMatrix> | Record<string, BsrMatrix>,
  extra: Partial<SafetensorsContent> = {},
): Promise<void> {
  const content = bsrMatricesToSafetensors(matrices, extra);
  await saveSafetensors(path, content.tensors, content.metadata);
}

/** Reads every BSR matrix of a safetensors file. */
export async function loadBsrMatrices(path: string): Promise<Map<string, BsrMatrix>> {
  return getBsrMatrices(await loadSafetensors(path));
}

/** Writes a `scipy.sparse.load_npz`-readable file (atomically). */
export async function saveScipyNpz(path: string, matrix: BsrMatrix, options: { compressed?: boolean } = {}): Promise<void> {
  await writeAtomically(path, encodeScipyNpz(matrix, options));
}

/** Reads a `scipy.sparse.save_npz` file holding a BSR or CSR matrix. */
export async function loadScipyNpz(path: string): Promise<BsrMatrix> {
  return decodeScipyNpz(await readFile(path));
}
