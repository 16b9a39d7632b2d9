import { type BsrPattern, type DType, fromStorage, optionsArg, Tensor } from "@blocksparse/core";
import {
  BSR_TENSOR_SUFFIXES,
  BsrFormatError,
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
import type { OptimizerStateDict } from "./optim";
import { BlockSparseWeight, disposeStateDict, type StateDict, type StateDictEntry } from "./state_dict";

const FILE_DTYPE = { float32: "F32", float16: "F16", bfloat16: "BF16", int32: "I32" } as const satisfies Record<DType, string>;
const TENSOR_DTYPE: Record<string, DType> = { F32: "float32", F16: "float16", BF16: "bfloat16", I32: "int32" };

/** "null", "a number", "Array": what a wrong argument was, for messages. */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  return typeof value === "object" ? (value.constructor?.name ?? "an object") : `a ${typeof value}`;
}

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
  if (!(stateDict instanceof Map)) throw new NnError(`saveStateDict: expected a state dict (a Map of name to entry), got ${describeValue(stateDict)}`);
  if (metadata === null || typeof metadata !== "object") throw new NnError(`saveStateDict: metadata must be an object of strings, got ${describeValue(metadata)}`);
  const content: SafetensorsContent = { tensors: new Map(), metadata: Object.assign(Object.create(null), metadata) };
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
      // Loaders take every '<name>.crow_indices' for a block-sparse matrix's part: the file would not load back.
      if (key.endsWith(BSR_TENSOR_SUFFIXES.crowIndices)) throw new NnError(`saveStateDict: dense entry '${key}' ends in .crow_indices, which names a block-sparse part; rename it`);
      claim(key, key);
      content.tensors.set(key, { dtype: FILE_DTYPE[entry.dtype], shape: [...entry.shape], data: rawValues(entry) } as SafetensorsTensor);
    } else {
      throw new NnError(`saveStateDict: '${key}' is neither a Tensor nor a BlockSparseWeight`);
    }
  }
  return content;
}

/**
 * The state dict held by safetensors content (tensors on the active backend). Nothing is
 * left allocated when it throws. With `consume`, each file tensor is dropped from
 * `content` once uploaded, so a checkpoint is never held twice on the host.
 */
export function stateDictFromSafetensors(content: SafetensorsContent, options: { consume?: boolean } = {}): StateDict {
  if (content === null || typeof content !== "object" || !(content.tensors instanceof Map)) {
    throw new NnError("loadStateDict: expected safetensors content { tensors: Map, metadata }");
  }
  const { consume } = optionsArg("stateDictFromSafetensors", options, ["consume"]);
  const stateDict: StateDict = new Map();
  try {
    const bsrParts = new Set<string>();
    for (const name of bsrMatrixNames(content)) {
      if (content.tensors.has(name)) {
        throw new BsrFormatError(name, `a dense tensor has the name of the block-sparse matrix whose parts are ${name}.values...; rename one of them`);
      }
      const matrix = getBsrMatrix(content, name);
      const parts = Object.values(BSR_TENSOR_SUFFIXES).map((suffix) => `${name}${suffix}`);
      for (const part of parts) bsrParts.add(part);
      const [blockHeight, blockWidth] = matrix.blockShape;
      const values = fromStorage(matrix.values, [matrix.nnzBlocks, blockHeight, blockWidth], matrix.dtype);
      stateDict.set(name, new BlockSparseWeight(matrix.pattern as BsrPattern, values));
      if (consume) for (const part of parts) content.tensors.delete(part);
    }
    for (const [key, tensor] of [...content.tensors]) {
      if (bsrParts.has(key)) continue;
      const dtype = TENSOR_DTYPE[tensor.dtype];
      if (dtype === undefined) {
        throw new BsrFormatError(key, `dtype ${tensor.dtype} cannot be loaded; state dict entries are F32, F16, BF16 or I32`);
      }
      stateDict.set(key, fromStorage(tensor.data as Float32Array | Uint16Array | Int32Array, tensor.shape, dtype));
      if (consume) content.tensors.delete(key);
    }
  } catch (error) {
    disposeStateDict(stateDict);
    throw error;
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
  return stateDictFromSafetensors(decodeSafetensors(bytes), { consume: true });
}

/**
 * An optimizer's state dict as safetensors content: its tensors as stateDictToSafetensors stores them ("<index>.<name>",
 * block-sparse ones with their pattern), its kind, hyperparameters, parameter groups, steps and fresh keys as metadata
 * ("optimizer", "optimizer.hyperparameters", "optimizer.paramGroups", "optimizer.steps" and, when any,
 * "optimizer.fresh", all but the first JSON, which gives numbers back exactly).
 */
export function optimizerStateToSafetensors(stateDict: OptimizerStateDict, metadata: Record<string, string> = {}): SafetensorsContent {
  if (stateDict === null || typeof stateDict !== "object") throw new NnError(`saveOptimizerState: expected optimizer.stateDict(), got ${describeValue(stateDict)}`);
  const { optimizer, hyperparameters, paramGroups, steps, tensors, fresh } = stateDict;
  return stateDictToSafetensors(tensors, {
    ...metadata,
    optimizer: String(optimizer),
    "optimizer.hyperparameters": JSON.stringify(hyperparameters),
    "optimizer.steps": JSON.stringify(steps),
    ...(paramGroups === undefined ? {} : { "optimizer.paramGroups": JSON.stringify(paramGroups) }),
    // Written only when there are any, so that such files load in versions that do not know it.
    ...(fresh === undefined || fresh.length === 0 ? {} : { "optimizer.fresh": JSON.stringify(fresh) }),
  });
}

/** The optimizer state dict held by safetensors content (tensors on the active backend; see optimizerStateToSafetensors). */
export function optimizerStateFromSafetensors(content: SafetensorsContent): OptimizerStateDict {
  const metadata = content?.metadata ?? {};
  const read = (key: string, absent?: unknown) => {
    if (absent !== undefined && !Object.hasOwn(metadata, key)) return absent;
    if (!Object.hasOwn(metadata, key)) throw new NnError(`loadOptimizerState: the file has no '${key}' metadata, so it holds no optimizer's state (saveOptimizerState writes one)`);
    try {
      return key === "optimizer" ? metadata[key] : JSON.parse(metadata[key]);
    } catch {
      throw new NnError(`loadOptimizerState: the file's '${key}' metadata is not JSON: ${metadata[key].slice(0, 80)}`);
    }
  };
  const optimizer = read("optimizer");
  const hyperparameters = read("optimizer.hyperparameters");
  const steps = read("optimizer.steps");
  // Absent from files saved before state tensors not yet written were named rather than saved as zeros.
  const fresh = read("optimizer.fresh", []);
  // Absent from files saved before optimizers had parameter groups: they hold one.
  const paramGroups = read("optimizer.paramGroups", null) ?? undefined;
  return { optimizer, hyperparameters, ...(paramGroups === undefined ? {} : { paramGroups }), steps, tensors: stateDictFromSafetensors(content, { consume: true }), fresh };
}

/** The safetensors bytes of `optimizer.stateDict()`: resume training with optimizer.loadStateDict(loadOptimizerState(bytes)). */
export function saveOptimizerState(stateDict: OptimizerStateDict, metadata: Record<string, string> = {}): Uint8Array {
  const content = optimizerStateToSafetensors(stateDict, metadata);
  return encodeSafetensors(content.tensors, content.metadata);
}

/** The optimizer state dict in safetensors bytes from saveOptimizerState (tensors on the active backend; dispose them when loaded). */
export function loadOptimizerState(bytes: Uint8Array): OptimizerStateDict {
  return optimizerStateFromSafetensors(decodeSafetensors(bytes));
}
