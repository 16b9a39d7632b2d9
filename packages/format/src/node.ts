import { type BsrExtraContent, bsrMatricesToSafetensors, getBsrMatrices } from "./bsr-safetensors.js";
import { BsrFormatError, checkOptionKeys, gibibytes } from "./errors.js";
import { inFile, MAX_BUFFER_BYTES, pastBufferLimit, readSmallFile, writeBytesAtomically } from "./files.js";
import type { BsrMatrix } from "./matrix.js";
import { decodeScipyNpz, encodeScipyNpz, SCIPY_NPZ_MEMBERS } from "./npz.js";
import { loadSafetensors, saveSafetensors, saveShardedSafetensors } from "./safetensors-file.js";
import { zipMemberSizes } from "./unzip.js";
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
  checkOptionKeys(options, ["maxShardSize"]);
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

/**
 * Refuses, from the central directory and before anything is inflated, a member that
 * decodeScipyNpz reads whose recorded size is past what one buffer holds in this runtime.
 */
function checkNpzMembersFit(bytes: Uint8Array): void {
  // np.load reads a member named `data` in place of `data.npy`: both are members decodeScipyNpz may read.
  const read = new Set<string>(SCIPY_NPZ_MEMBERS.flatMap((name) => [name, name.slice(0, -".npy".length)]));
  for (const [name, size] of zipMemberSizes(bytes)) {
    if (!read.has(name) || size <= MAX_BUFFER_BYTES) continue;
    throw new BsrFormatError(name, `inflates to ${size} bytes (${gibibytes(size)}), ${pastBufferLimit(MAX_BUFFER_BYTES)}; each member is inflated into one buffer`);
  }
}

/** Reads a `scipy.sparse.save_npz` file holding a BSR or CSR matrix; format errors name the file. */
export async function loadScipyNpz(path: string): Promise<BsrMatrix> {
  const instead = ".npz archives are unzipped in memory; save large matrices as safetensors, which loadBsrMatrices streams";
  const bytes = await readSmallFile(path, MAX_NPZ_BYTES, "npz", instead);
  try {
    checkNpzMembersFit(bytes);
    return decodeScipyNpz(bytes);
  } catch (error) {
    throw inFile(error, path);
  }
}
