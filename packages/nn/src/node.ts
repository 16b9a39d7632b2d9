import { optionsArg } from "@blocksparse/core";
import { loadSafetensors, saveSafetensors, saveShardedSafetensors } from "@blocksparse/format/node";
import { NnError } from "./errors";
import { type LoadStateDictOptions, type LoadStateDictResult, Module } from "./module";
import { Optimizer } from "./optim";
import { describeValue, optimizerStateFromSafetensors, optimizerStateToSafetensors, stateDictFromSafetensors, stateDictToSafetensors } from "./serialization";
import { SparseOptimizer, type SparseOptimizerState } from "./sparse_training";
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
  const { maxShardSize } = optionsArg("saveSafetensorsFile", options, ["maxShardSize"]);
  const content = stateDictToSafetensors(stateDict, metadata);
  if (maxShardSize === undefined) await saveSafetensors(path, content.tensors, content.metadata);
  else await saveShardedSafetensors(path, content.tensors, content.metadata, { maxShardSize });
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
  optionsArg("save", options, ["maxShardSize"]);
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
  checkPath("load", path);
  optionsArg("load", options, ["strict"]);
  const stateDict = await loadSafetensorsFile(path);
  try {
    return model.loadStateDict(stateDict, options);
  } finally {
    disposeStateDict(stateDict);
  }
}

/** The metadata key of a SparseOptimizer's state (JSON) in an optimizer file. */
const SPARSE_OPTIMIZER_KEY = "sparseOptimizer";

/** The optimizer to save or load, and the SparseOptimizer when one was passed (its attached optimizer is the one). */
function optimizerOf(where: string, target: unknown): [Optimizer, SparseOptimizer | undefined] {
  if (target instanceof SparseOptimizer) {
    if (target.optimizer === undefined) {
      const several = target.optimizers.length > 1;
      throw new NnError(
        `${where}: the SparseOptimizer has ${several ? `${target.optimizers.length} optimizers attached: pass each optimizer in a file of its own` : "no optimizer attached (attachOptimizer)"}; keep its state alone as JSON.stringify(sparse.stateDict())`,
      );
    }
    return [target.optimizer, target];
  }
  if (!(target instanceof Optimizer)) throw new NnError(`${where}: optimizer must be an Optimizer (SGD, Adam, AdamW) or a SparseOptimizer with one attached, got ${describeValue(target)}`);
  return [target, undefined];
}

/**
 * Saves `optimizer.stateDict()` to the safetensors file `path` (atomically), beside the model's checkpoint. Given a
 * SparseOptimizer, saves its attached optimizer's state and, as JSON in the 'sparseOptimizer' metadata, its own.
 */
export async function saveOptimizer(optimizer: Optimizer | SparseOptimizer, path: string, metadata: Record<string, string> = {}): Promise<void> {
  const [target, sparse] = optimizerOf("saveOptimizer", optimizer);
  checkPath("saveOptimizer", path);
  const stateDict = target.stateDict();
  try {
    const content = optimizerStateToSafetensors(stateDict, sparse ? { ...metadata, [SPARSE_OPTIMIZER_KEY]: JSON.stringify(sparse.stateDict()) } : metadata);
    await saveSafetensors(path, content.tensors, content.metadata);
  } finally {
    disposeStateDict(stateDict.tensors);
  }
}

/**
 * Loads the file of saveOptimizer into `optimizer` (Optimizer.loadStateDict: load the model first). Given a
 * SparseOptimizer, loads its attached optimizer and its own state (SparseOptimizer.loadStateDict), which the file
 * must hold; an Optimizer ignores that state. A refused load leaves both unchanged and nothing allocated.
 */
export async function loadOptimizer(optimizer: Optimizer | SparseOptimizer, path: string): Promise<void> {
  const [target, sparse] = optimizerOf("loadOptimizer", optimizer);
  checkPath("loadOptimizer", path);
  const content = await loadSafetensors(path);
  const sparseState = sparse && readSparseState(content.metadata);
  const stateDict = optimizerStateFromSafetensors(content);
  const previous = sparse?.stateDict();
  try {
    if (sparse) sparse.loadStateDict(sparseState as SparseOptimizerState);
    target.loadStateDict(stateDict);
  } catch (error) {
    if (previous) sparse?.loadStateDict(previous);
    throw error;
  } finally {
    disposeStateDict(stateDict.tensors);
  }
}

function readSparseState(metadata: Record<string, string> | undefined): SparseOptimizerState {
  const text = metadata?.[SPARSE_OPTIMIZER_KEY];
  if (text === undefined) {
    throw new NnError(
      `loadOptimizer: the file has no '${SPARSE_OPTIMIZER_KEY}' metadata: it was saved from an Optimizer, not a SparseOptimizer; loadOptimizer(sparse.optimizer, path) loads it and leaves the SparseOptimizer's schedule as it is`,
    );
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new NnError(`loadOptimizer: the file's '${SPARSE_OPTIMIZER_KEY}' metadata is not JSON: ${text.slice(0, 80)}`);
  }
}
