import { CoreError } from "@blocksparse/core";

/** Base class of the errors @blocksparse/nn throws itself (shape and value problems use core's ShapeError / ValueError). */
export class NnError extends CoreError {
  override name = "NnError";
}

/** One entry whose shape or kind does not fit the module it is loaded into. */
export interface StateDictMismatch {
  key: string;
  /** What the model holds, e.g. "[10, 4] float32" or "block-sparse [64, 32] (32x32 blocks)". */
  expected: string;
  /** What the state dict holds. */
  got: string;
  /**
   * What does not fit: the shape or kind of weight ("size", the default), a block-sparse entry for a dense parameter of
   * its shape ("layout": the model was not patched as the saved one was), the dtype (an int32 entry for a float
   * parameter), the value itself (not a tensor, disposed, or a field of the wrong type or range), the blocks an
   * optimizer's state follows ("pattern"), or an option the state was made with that differs from the loading object's ("option").
   */
  reason?: "size" | "layout" | "dtype" | "type" | "pattern" | "option";
}

/** loadStateDict (a module's or an optimizer's) refused a state dict: keys missing or unexpected (strict), or entries that do not fit. */
export class StateDictError extends NnError {
  override name = "StateDictError";
  constructor(
    readonly missingKeys: string[],
    readonly unexpectedKeys: string[],
    readonly mismatches: StateDictMismatch[],
    where = "loadStateDict",
  ) {
    const parts: string[] = [];
    if (missingKeys.length > 0) parts.push(`missing keys: ${missingKeys.join(", ")}`);
    if (unexpectedKeys.length > 0) parts.push(`unexpected keys: ${unexpectedKeys.join(", ")}`);
    for (const m of mismatches) parts.push(`${m.reason ?? "size"} mismatch for ${m.key}: the checkpoint has ${m.got}, the model has ${m.expected}`);
    if (mismatches.some((m) => m.reason === "layout")) {
      parts.push("to load a block-sparse entry, patch the model as the saved one was first, or load its dense weight: tensor(entry.toMatrix().toDense(), entry.shape)");
    }
    super(`${where}: ${parts.join("; ")}`);
  }
}
