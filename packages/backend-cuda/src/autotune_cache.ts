/**
 * The on-disk form of autotuning's choices (CudaBackend.saveAutotune / loadAutotune, and
 * BLOCKSPARSE_CUDA_AUTOTUNE_CACHE): a JSON file naming the GPU it was measured on and, per shape, the chosen
 * route. A training run's first call of each shape times every route once; with the cache, later runs on the
 * same kind of GPU start with those choices and time nothing.
 */
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { threadId } from "node:worker_threads";
import { ValueError } from "@blocksparse/core";
import * as z from "zod/mini";
import type { AutotuneRecord, DeviceInfo } from "./native";

export const AUTOTUNE_CACHE_FORMAT = "blocksparse-cuda-autotune";
/**
 * 2 since candidates are timed on the device (the stream held while a route's calls are queued): version 1's timings of
 * small products measured the host's queueing, and its choices can be far off (a tuned step 1.46x slower than the fixed
 * rules'), so its files are outdated: never loaded, rewritten with new choices.
 */
export const AUTOTUNE_CACHE_VERSION = 2;

/** A cache file that cannot be read as one (not JSON, another format or version, a record out of range), or written. */
export class AutotuneCacheError extends ValueError {
  override name = "AutotuneCacheError";
}

export const PRODUCTS = ["bsrLinear", "bsrMatmul", "sampledMatmul"] as const;
export const TC_PATHS = ["auto", "mma", "wgmma", "decode"] as const;
/** What a record's call fused after its product (native.ts, AutotuneRecord.epilogue); a file without it means "none". */
export const EPILOGUES = ["none", "activation", "activationBackward"] as const;
const DTYPES = ["float32", "float16", "bfloat16"] as const;

const count = z.int().check(z.nonnegative());
const side = z.int().check(z.positive(), z.lte(65536));

const choiceSchema = z.object({
  dense: z.boolean(),
  path: z.enum(TC_PATHS),
  variant: z.int().check(z.gte(-1), z.lte(255)),
  splits: z.int().check(z.nonnegative(), z.lte(65535)),
});

const recordSchema = z
  .object({
    product: z.enum(PRODUCTS),
    dtype: z.enum(DTYPES),
    blockShape: z.tuple([side, side]),
    m: count,
    rows: count,
    cols: count,
    nnzBlocks: count.check(z.lte(2 ** 31 - 1)),
    bias: z.boolean(),
    /** Absent in files written before fused calls were tuned apart: "none". */
    epilogue: z.optional(z.enum(EPILOGUES)),
    choice: choiceSchema,
    /** Informational: what autotuneRecords reported. */
    route: z.optional(z.string()),
    timings: z.optional(z.array(z.object({ route: z.string(), ms: z.number() }))),
  })
  .check(
    z.refine((r) => (r.epilogue ?? "none") === "none" || r.product === (r.epilogue === "activation" ? "bsrLinear" : "bsrMatmul"), {
      error: "an activation follows bsrLinear, its backward bsrMatmul",
      path: ["epilogue"],
    }),
  );

const cacheSchema = z.object({
  format: z.literal(AUTOTUNE_CACHE_FORMAT),
  version: z.literal(AUTOTUNE_CACHE_VERSION),
  device: z.object({ name: z.string(), computeCapability: z.string() }),
  records: z.array(recordSchema),
});

export type AutotuneCache = z.infer<typeof cacheSchema>;
export type AutotuneCacheRecord = AutotuneCache["records"][number];

/** Parses a cache file's text; throws AutotuneCacheError naming the file and the first field that is wrong. */
export function parseAutotuneCache(text: string, file: string): AutotuneCache {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new AutotuneCacheError(`autotune cache ${file}: not JSON (${(error as Error).message})`);
  }
  const version = ourVersion(json);
  if (version !== undefined && version < AUTOTUNE_CACHE_VERSION)
    throw new AutotuneCacheError(
      `autotune cache ${file}: version ${version}, written by an earlier version of this package, whose timings of small products measured the host rather than the GPU: its choices are not used (this version writes version ${AUTOTUNE_CACHE_VERSION})`,
    );
  if (version !== undefined && version > AUTOTUNE_CACHE_VERSION)
    throw new AutotuneCacheError(
      `autotune cache ${file}: version ${version}, written by a newer version of this package (this one reads and writes version ${AUTOTUNE_CACHE_VERSION})`,
    );
  const parsed = cacheSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue.path.length > 0 ? issue.path.join(".") : "the file";
    throw new AutotuneCacheError(`autotune cache ${file}: ${where}: ${issue.message}`);
  }
  return parsed.data;
}

/** The version (1 or more) a parsed file of this format says it is, or undefined for anything else. */
function ourVersion(json: unknown): number | undefined {
  const header = json as { format?: unknown; version?: unknown } | null;
  if (typeof header !== "object" || header === null || header.format !== AUTOTUNE_CACHE_FORMAT) return undefined;
  const version = header.version;
  return typeof version === "number" && Number.isInteger(version) && version >= 1 ? version : undefined;
}

/** The cache of `records` measured on `device`, as JSON text. */
export function serializeAutotuneCache(
  device: Pick<DeviceInfo, "name" | "computeCapability">,
  records: readonly (AutotuneRecord | AutotuneCacheRecord)[],
): string {
  const cache: AutotuneCache = {
    format: AUTOTUNE_CACHE_FORMAT,
    version: AUTOTUNE_CACHE_VERSION,
    device: { name: device.name, computeCapability: device.computeCapability },
    records: records.map((r) => ({
      product: r.product,
      dtype: r.dtype as AutotuneCacheRecord["dtype"],
      blockShape: [r.blockShape[0], r.blockShape[1]],
      m: r.m,
      rows: r.rows,
      cols: r.cols,
      nnzBlocks: r.nnzBlocks,
      bias: r.bias,
      epilogue: r.epilogue ?? "none",
      choice: { ...r.choice },
      route: r.route,
      timings: r.timings?.map((t) => ({ route: t.route, ms: t.ms })),
    })),
  };
  return `${JSON.stringify(cache, null, 2)}\n`;
}

/** Whether a cache was measured on this kind of GPU (same name and compute capability). */
export function sameDevice(cache: AutotuneCache, device: Pick<DeviceInfo, "name" | "computeCapability">): boolean {
  return cache.device.name === device.name && cache.device.computeCapability === device.computeCapability;
}

/** Reads and parses a cache file (errors reading it name the file). */
export function readAutotuneCache(file: string): AutotuneCache {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new AutotuneCacheError(`autotune cache ${file}: cannot read it (${(error as Error).message})`);
  }
  return parseAutotuneCache(text, file);
}

/**
 * Writes the text next to the file, then renames it over the file: a reader never sees half a cache. The temporary
 * name is this writer's alone (process, thread and a random part): with the process id alone, two threads of one
 * process (worker_threads share it) wrote one temporary file, and one of them could rename the other's half-written text.
 */
export function writeAutotuneCache(file: string, text: string): void {
  const temporary = `${file}.${process.pid}.${threadId}.${randomBytes(4).toString("hex")}.tmp`;
  let created = false;
  try {
    // Opened first (never a file that is there already), so that a write that fails part-way (a full disk) leaves
    // no half-written temporary behind: it is removed below.
    const fd = openSync(temporary, "wx");
    created = true;
    try {
      writeFileSync(fd, text);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, file);
  } catch (error) {
    try {
      if (created) unlinkSync(temporary);
    } catch {
      // already gone
    }
    throw new AutotuneCacheError(`autotune cache ${file}: cannot write it (${(error as Error).message})`);
  }
}

/**
 * What is at a cache's path, for a writer that must not destroy what is not its own: nothing (or an empty file), a
 * cache, a damaged cache of this format and version or an outdated one (an earlier version's: both safe to rewrite, and
 * neither loaded), or anything else ("foreign": not JSON, another format, a newer version of this one, a path that
 * cannot be read), which is left as it is.
 */
export type AutotuneCacheFile =
  | { kind: "absent" }
  | { kind: "cache"; cache: AutotuneCache }
  | { kind: "damaged"; error: AutotuneCacheError }
  | { kind: "outdated"; error: AutotuneCacheError }
  | { kind: "foreign"; error: AutotuneCacheError };

export function inspectAutotuneCache(file: string): AutotuneCacheFile {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as { code?: unknown }).code === "ENOENT") return { kind: "absent" };
    return { kind: "foreign", error: new AutotuneCacheError(`autotune cache ${file}: cannot read it (${(error as Error).message})`) };
  }
  if (text.trim() === "") return { kind: "absent" };
  try {
    return { kind: "cache", cache: parseAutotuneCache(text, file) };
  } catch (error) {
    const version = (() => {
      try {
        return ourVersion(JSON.parse(text));
      } catch {
        return undefined; // not JSON
      }
    })();
    const kind = version === AUTOTUNE_CACHE_VERSION ? "damaged" : version !== undefined && version < AUTOTUNE_CACHE_VERSION ? "outdated" : "foreign";
    return { kind, error: error as AutotuneCacheError };
  }
}

/** The shape a record is the choice for (every field but the choice and its report). */
function recordKey(r: AutotuneRecord | AutotuneCacheRecord): string {
  return [r.product, r.dtype, r.blockShape[0], r.blockShape[1], r.m, r.rows, r.cols, r.nnzBlocks, r.bias, r.epilogue ?? "none"].join(",");
}

/**
 * `ours`, then the records of `theirs` for shapes `ours` lacks: what a writer puts back over a file that another
 * process (tuning other shapes) may have written since it was read, so that neither loses the other's choices.
 */
export function mergeAutotuneRecords(
  ours: readonly AutotuneRecord[],
  theirs: readonly AutotuneCacheRecord[],
): (AutotuneRecord | AutotuneCacheRecord)[] {
  const known = new Set(ours.map(recordKey));
  const merged: (AutotuneRecord | AutotuneCacheRecord)[] = [...ours];
  for (const record of theirs) {
    const key = recordKey(record);
    if (known.has(key)) continue;
    known.add(key);
    merged.push(record);
  }
  return merged;
}
