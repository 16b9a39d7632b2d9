import { bytesPerElement } from "@blocksparse/core";
import type { Module } from "./module";

/** Numbers in the model's parameters, frozen ones included (as sum(p.numel() for p in model.parameters())): for a block-sparse weight, its stored values only. */
export function parameterCount(module: Module): number {
  return module.parameters().reduce((n, p) => n + p.size, 0);
}

/** Bytes of every parameter's storage, plus the int32 block indices of block-sparse weights. */
export function weightBytes(module: Module): number {
  let bytes = 0;
  for (const parameter of module.parameters()) {
    bytes += parameter.size * bytesPerElement(parameter.dtype);
    const pattern = parameter.pattern;
    if (pattern) bytes += 4 * (pattern.blockRows + 1 + pattern.nnzBlocks);
  }
  return bytes;
}
