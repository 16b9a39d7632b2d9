import { loadSafetensors, saveSafetensors } from "@blocksparse/format/node";
import type { LoadStateDictOptions, LoadStateDictResult, Module } from "./module";
import { stateDictFromSafetensors, stateDictToSafetensors } from "./serialization";
import { disposeStateDict, type StateDict } from "./state_dict";

/** Node.js file helpers; the main entry stays free of `node:` imports. */

/** Writes a state dict as a safetensors file (atomically: a crash never leaves half a file). */
export async function saveSafetensorsFile(stateDict: StateDict, path: string, metadata: Record<string, string> = {}): Promise<void> {
  const content = stateDictToSafetensors(stateDict, metadata);
  await saveSafetensors(path, content.tensors, content.metadata);
}

/** Reads a safetensors file into a state dict (tensors on the active backend; dispose them when done). */
export async function loadSafetensorsFile(path: string): Promise<StateDict> {
  return stateDictFromSafetensors(await loadSafetensors(path));
}

/** Saves `model.stateDict()` to `path`. */
export async function save(model: Module, path: string, metadata: Record<string, string> = {}): Promise<void> {
  const stateDict = model.stateDict();
  try {
    await saveSafetensorsFile(stateDict, path, metadata);
  } finally {
    disposeStateDict(stateDict);
  }
}

/** Loads the file at `path` into `model` (strict by default; block-sparse layers adopt the file's patterns). */
export async function load(model: Module, path: string, options: LoadStateDictOptions = {}): Promise<LoadStateDictResult> {
  const stateDict = await loadSafetensorsFile(path);
  try {
    return model.loadStateDict(stateDict, options);
  } finally {
    disposeStateDict(stateDict);
  }
}
