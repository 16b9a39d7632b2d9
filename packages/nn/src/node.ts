import { loadSafetensors, saveSafetensors, saveShardedSafetensors } from "@blocksparse/format/node";
import { NnError } from "./errors";
import { type LoadStateDictOptions, type LoadStateDictResult, Module } from "./module";
import { Optimizer } from "./optim";
import { describeValue, optimizerStateFromSafetensors, optimizerStateToSafetensors, stateDictFromSafetensors, stateDictToSafetensors } from "./serialization";
import { disposeStateDict, type StateDict } from "./state_dict";

/** Node.js file helpers; the main entry stays free of `node:` imports. */

export interface SaveOptions {
  /**
   * Write a sharded checkpoint of at most this many tensor bytes per shard into the
   * directory `path` (`model-00001-of-0000N.safetensors` + `model.safetensors.index.json`,
   * as transformers does) instead of one file.
   */
  maxShardSize?: number;
}

function checkPath(where: string, path: unknown): asserts path is string {
  if (typeof path !== "string" || path === "") throw new NnError(`${where}: path must be a non-empty string, got ${describeValue(path)}`);
}

function checkModel(where: string, model: unknown): asserts model is Module {
  if (!(model instanceof Module)) throw new NnError(`${where}: model must be a Module, got ${describeValue(model)}`);
}

/**
 * Writes a state dict as a safetensors file, or a sharded checkpoint with `maxShardSize`
 * (atomically and durably: a crash leaves the old file or the new one). File errors are
 * format's BsrIoError naming `path`.
 */
export async function saveSafetensorsFile(
  stateDict: StateDict,
  path: string,
  metadata: Record<string, string> = {},
  options: SaveOptions = {},
): Promise<void> {
  checkPath("saveSafetensorsFile", path);
  const content = stateDictToSafetensors(stateDict, metadata);
  if (options.maxShardSize === undefined) await saveSafetensors(path, content.tensors, content.metadata);
  else await saveShardedSafetensors(path, content.tensors, content.metadata, { maxShardSize: options.maxShardSize });
}

/**
 * Reads a checkpoint into a state dict (tensors on the active backend; dispose them when
 * done): a `.safetensors` file, a sharded checkpoint's index file, or a directory holding
 * either. Nothing stays allocated when it throws.
 */
export async function loadSafetensorsFile(path: string): Promise<StateDict> {
  checkPath("loadSafetensorsFile", path);
  return stateDictFromSafetensors(await loadSafetensors(path), { consume: true });
}

/** Saves `model.stateDict()` to `path` (a directory of shards with `maxShardSize`). */
export async function save(model: Module, path: string, metadata: Record<string, string> = {}, options: SaveOptions = {}): Promise<void> {
  checkModel("save", model);
  checkPath("save", path);
  const stateDict = model.stateDict();
  try {
    await saveSafetensorsFile(stateDict, path, metadata, options);
  } finally {
    disposeStateDict(stateDict);
  }
}

/**
 * Loads the checkpoint at `path` (a file, a sharded checkpoint's index, or a directory)
 * into `model` (strict by default; block-sparse layers adopt the file's patterns, never
 * another block shape). A refused load leaves the model unchanged and nothing allocated.
 */
export async function load(model: Module, path: string, options: LoadStateDictOptions = {}): Promise<LoadStateDictResult> {
  checkModel("load", model);
  const stateDict = await loadSafetensorsFile(path);
  try {
    return model.loadStateDict(stateDict, options);
  } finally {
    disposeStateDict(stateDict);
  }
}

function checkOptimizer(where: string, optimizer: unknown): asserts optimizer is Optimizer {
  if (!(optimizer instanceof Optimizer)) throw new NnError(`${where}: optimizer must be an Optimizer (SGD, Adam, AdamW), got ${describeValue(optimizer)}`);
}

/** Saves `optimizer.stateDict()` to the safetensors file `path` (atomically), beside the model's checkpoint. */
export async function saveOptimizer(optimizer: Optimizer, path: string, metadata: Record<string, string> = {}): Promise<void> {
  checkOptimizer("saveOptimizer", optimizer);
  checkPath("saveOptimizer", path);
  const stateDict = optimizer.stateDict();
  try {
    const content = optimizerStateToSafetensors(stateDict, metadata);
    await saveSafetensors(path, content.tensors, content.metadata);
  } finally {
    disposeStateDict(stateDict.tensors);
  }
}

/**
 * Loads the file of saveOptimizer into `optimizer` (Optimizer.loadStateDict: load the model first). A refused load
 * leaves the optimizer unchanged and nothing allocated.
 */
export async function loadOptimizer(optimizer: Optimizer, path: string): Promise<void> {
  checkOptimizer("loadOptimizer", optimizer);
  checkPath("loadOptimizer", path);
  const stateDict = optimizerStateFromSafetensors(await loadSafetensors(path));
  try {
    optimizer.loadStateDict(stateDict);
  } finally {
    disposeStateDict(stateDict.tensors);
  }
}
