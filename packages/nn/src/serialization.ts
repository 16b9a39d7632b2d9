import { type BsrPattern, type DType, fromStorage, Tensor } from "@blocksparse/core";
import {
  BSR_TENSOR_SUFFIXES,
  BsrMatrix,
  bsrMatrixNames,
  decodeSafetensors,
  encodeSafetensors,
  getBsrMatrix,
  putBsrMatrix,
  type SafetensorsContent,
  type SafetensorsTensor,
} from "@blocksparse/format";
import { NnError } from "./errors";
import { BlockSparseWeight, type StateDict, type StateDictEntry } from "./state_dict";

const FILE_DTYPE = { float32: "F32", float16: "F16", bfloat16: "BF16", int32: "I32" } as const satisfies Record<DType, string>;
const TENSOR_DTYPE: Record<string, DType> = { F32: "float32", F16: "float16", BF16: "bfloat16", I32: "int32" };

/** The tensor's storage as it sits on its backend (raw bits for the 16-bit floats). */
function rawValues(t: Tensor) {
  t.throwIfDisposed("saveStateDict");
  return t.backend.readSync(t.dataId);
}

/**
 * A state dict as safetensors content: dense tensors as ordinary entries, each
 * block-sparse weight `<name>` as format's BSR layout (`<name>.crow_indices`,
 * `<name>.col_indices`, `<name>.values` and `<name>.shape` ... metadata), which
 * `torch.sparse_bsr_tensor` rebuilds in Python.
 */
export function stateDictToSafetensors(stateDict: StateDict, metadata: Record<string, string> = {}): SafetensorsContent {
  const content: SafetensorsContent = { tensors: new Map(), metadata: { ...metadata } };
  const claimed = new Map<string, string>();
  const claim = (fileKey: string, owner: string) => {
    const previous = claimed.get(fileKey);
    if (previous !== undefined) throw new NnError(`saveStateDict: entries '${previous}' and '${owner}' both need the file name '${fileKey}'`);
    claimed.set(fileKey, owner);
  };
  for (const [key, entry] of stateDict as Map<string, StateDictEntry>) {
    if (entry instanceof BlockSparseWeight) {
      for (const suffix of Object.values(BSR_TENSOR_SUFFIXES)) claim(`${key}${suffix}`, key);
      const dtype = entry.values.dtype;
      if (dtype === "int32") throw new NnError(`saveStateDict: block-sparse '${key}' has int32 values`);
      putBsrMatrix(content, key, BsrMatrix.fromPattern(entry.pattern, rawValues(entry.values) as Float32Array | Uint16Array, dtype));
    } else if (entry instanceof Tensor) {
      claim(key, key);
      content.tensors.set(key, { dtype: FILE_DTYPE[entry.dtype], shape: [...entry.shape], data: rawValues(entry) } as SafetensorsTensor);
    } else {
      throw new NnError(`saveStateDict: '${key}' is neither a Tensor nor a BlockSparseWeight`);
    }
  }
  return content;
}

/** The state dict held by safetensors content (tensors on the active backend). */
export function stateDictFromSafetensors(content: SafetensorsContent): StateDict {
  const stateDict: StateDict = new Map();
  const bsrParts = new Set<string>();
  for (const name of bsrMatrixNames(content)) {
    const matrix = getBsrMatrix(content, name);
    for (const suffix of Object.values(BSR_TENSOR_SUFFIXES)) bsrParts.add(`${name}${suffix}`);
    const [blockHeight, blockWidth] = matrix.blockShape;
    const values = fromStorage(matrix.values, [matrix.nnzBlocks, blockHeight, blockWidth], matrix.dtype);
    stateDict.set(name, new BlockSparseWeight(matrix.pattern as BsrPattern, values));
  }
  for (const [key, tensor] of content.tensors) {
    if (bsrParts.has(key)) continue;
    const dtype = TENSOR_DTYPE[tensor.dtype];
    if (dtype === undefined) {
      for (const entry of stateDict.values()) entry.dispose();
      throw new NnError(`loadStateDict: '${key}' has dtype ${tensor.dtype}; entries must be F32, F16, BF16 or I32`);
    }
    stateDict.set(key, fromStorage(tensor.data as Float32Array | Uint16Array | Int32Array, tensor.shape, dtype));
  }
  return stateDict;
}

/** The safetensors bytes of a state dict (see stateDictToSafetensors); works in browsers. */
export function saveStateDict(stateDict: StateDict, metadata: Record<string, string> = {}): Uint8Array {
  const content = stateDictToSafetensors(stateDict, metadata);
  return encodeSafetensors(content.tensors, content.metadata);
}

/** The state dict in safetensors bytes, validated (malformed files throw BsrFormatError naming the field). */
export function loadStateDict(bytes: Uint8Array): StateDict {
  return stateDictFromSafetensors(decodeSafetensors(bytes));
}
