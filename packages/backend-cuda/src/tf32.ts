/**
 * The TF32 setting, like PyTorch's `torch.backends.cuda.matmul.allow_tf32`: when allowed, float32
 * bsrLinear, bsrMatmul and sampledMatmul with 32x32, 64x64 or 128x128 blocks run on the tensor cores
 * with inputs rounded to TF32 (10-bit mantissa, relative error ~1e-3) and float32 accumulation.
 * Off by default, so float32 stays exact; `BLOCKSPARSE_ALLOW_TF32=1` turns it on at start.
 */
import { ValueError } from "@blocksparse/core";
import { environmentSwitch } from "./environment";
import type { NativeAddon } from "./native";

let allowed = environmentSwitch("BLOCKSPARSE_ALLOW_TF32", false);
let started: NativeAddon | null = null;

/** Allows (true) or forbids (false) TF32 for float32 block-sparse products, process-wide. */
export function setAllowTf32(allow: boolean): void {
  if (typeof allow !== "boolean") throw new ValueError(`setAllowTf32: allow must be a boolean, got ${typeof allow}`);
  allowed = allow;
  started?.setAllowTf32(allow);
}

/** Whether float32 block-sparse products may run in TF32. */
export function allowTf32(): boolean {
  return allowed;
}

/** Gives a freshly started addon the current setting. */
export function applyTf32Setting(addon: NativeAddon): void {
  addon.setAllowTf32(allowed);
  started = addon;
}
