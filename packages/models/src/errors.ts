import { NnError, type StateDictMismatch } from "@blocksparse/nn";

/** Base class of the errors @blocksparse/models throws itself. */
export class ModelsError extends NnError {
  override name = "ModelsError";
}

/** A config.json that does not describe a model this package builds; names the field. */
export class ConfigError extends ModelsError {
  override name = "ConfigError";
}

/**
 * A checkpoint that does not fit the model: every missing, unexpected and mis-shaped key
 * (by its name in the file) in one message; nothing was loaded.
 */
export class CheckpointError extends ModelsError {
  override name = "CheckpointError";
  constructor(
    readonly where: string,
    readonly missingKeys: string[],
    readonly unexpectedKeys: string[],
    readonly mismatches: StateDictMismatch[],
    readonly problems: string[] = [],
  ) {
    const parts = [...problems];
    if (missingKeys.length > 0) parts.push(`missing keys: ${missingKeys.join(", ")}`);
    if (unexpectedKeys.length > 0) parts.push(`unexpected keys: ${unexpectedKeys.join(", ")}`);
    for (const m of mismatches) parts.push(`${m.key}: the checkpoint has ${m.got}, the model expects ${m.expected}`);
    super(`${where}: ${parts.join("; ")}`);
  }
}
