import { type BsrExtraContent, bsrMatricesToSafetensors, getBsrMatrices } from "./bsr-safetensors.js";
import { readSmallFile, writeBytesAtomically } from "./files.js";
import type { BsrMatrix } from "./matrix.js";
import { decodeScipyNpz, encodeScipyNpz } from "./npz.js";
import { loadSafetensors, saveSafetensors, saveShardedSafetensors } from "./safetensors-file.js";
import { MAX_ZIP32_ARCHIVE_BYTES } from "./zip32.js";

/** Node.js file helpers. The main entry stays free of `node:` imports. */

export { writeFileAtomically } from "./files.js";
export {
  loadSafetensors,
  SHARD_INDEX_SUFFIX,
  type ShardedSaveOptions,
  saveSafetensors,
  saveShardedSafetensors,
  shardFileName,
} from "./safetensors-file.js";

/** .npz archives are unzipped in memory, so they are read whole: up to the largest saveScipyNpz writes. */
const MAX_NPZ_BYTES = MAX_ZIP32_ARCHIVE_BYTES;

/**
 * Writes BSR matrices (and any dense tensors and metadata) to a safetensors file, or with
 * `maxShardSize` to a sharded checkpoint in the directory `path`.
 */
export async function saveBsrMatrices(
  path: string,
  matrices: Map<string, BsrMatrix> | Record<string, BsrMatrix>,
  extra: BsrExtraContent = {},
  options: { maxShardSize?: number } = {},
): Promise<void> {
  const content = bsrMatricesToSafetensors(matrices, extra);
  const maxShardSize = options?.maxShardSize; // null options are none
  if (maxShardSize === undefined) await saveSafetensors(path, content.tensors, content.metadata);
  else await saveShardedSafetensors(path, content.tensors, content.metadata, { maxShardSize });
}

/** Reads every BSR matrix of a safetensors checkpoint (a file, an index file or a directory). */
export async function loadBsrMatrices(path: string): Promise<Map<string, BsrMatrix>> {
  return getBsrMatrices(await loadSafetensors(path));
}

/** Writes a `scipy.sparse.load_npz`-readable file (atomically). */
export async function saveScipyNpz(path: string, matrix: BsrMatrix, options: { compressed?: boolean } = {}): Promise<void> {
  await writeBytesAtomically(path, encodeScipyNpz(matrix, options));
}

/** Reads a `scipy.sparse.save_npz` file holding a BSR or CSR matrix. */
export async function loadScipyNpz(path: string): Promise<BsrMatrix> {
  const instead = ".npz archives are unzipped in memory; save large matrices as safetensors, which loadBsrMatrices streams";
  return decodeScipyNpz(await readSmallFile(path, MAX_NPZ_BYTES, "npz", instead));
}
