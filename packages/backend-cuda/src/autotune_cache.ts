/**
 * The on-disk form of autotuning's choices (CudaBackend.saveAutotune / loadAutotune, and
 * BLOCKSPARSE_CUDA_AUTOTUNE_CACHE): a JSON file naming the GPU it was measured on and, per shape, the chosen
 * route. A training run's first call of each shape times every route once; with the cache, later runs on the
 * same kind of GPU start with those choices and time nothing.
 */
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
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

/**
 * What the addon's kernels run (kernels-cuda/src; native_interface.test.ts reads them there): the tile variants it ships
 * (tc_kernels.h's TileVariant less those kept for measurement in kernels-cuda/dev/, which it has no launcher for), the
 * block shapes of its tensor-core tiles (squareBlocks, and kMmaShapes and kWgmmaShapes in bfloat16/float16), and the
 * decoding path's variants (kDecodeVariants), block sides (decodeBlockSide) and tokens (decodeMaxTokens).
 */
export const TILE_VARIANTS = {
  kDefaultTile: 0,
  kWideTile: 1,
  kXResidentTile: 6,
  kPersistentTile: 7,
  kPingPongTile: 14,
  kPatchPairTile: 33,
  kPingPong3Tile: 34,
} as const;
export const SQUARE_BLOCK_SIDES = [32, 64, 128] as const;
export const MMA_SHAPES = [[16, 16], [16, 32], [32, 16], [32, 64], [64, 32], [64, 128], [128, 64]] as const;
export const WGMMA_SHAPES = [[64, 128], [128, 64], [64, 32], [32, 64]] as const;
export const DECODE_VARIANTS = 6;
export const DECODE_BLOCK_SIDES = [16, 32, 64, 128] as const;
export const DECODE_MAX_TOKENS = { float32: 16, float16: 64, bfloat16: 64 } as const;

type RecordShape = Pick<AutotuneRecord, "product" | "blockShape" | "m" | "rows" | "cols" | "nnzBlocks" | "bias" | "choice"> & {
  dtype: (typeof DTYPES)[number];
};
const isShape = (shapes: readonly (readonly [number, number])[], [R, C]: readonly [number, number]) => shapes.some(([r, c]) => r === R && c === C);

/**
 * Why no call could ever use a record as it stands, or undefined: a shape no call has (W not whole blocks, more blocks
 * than W holds, a bias on a product tuned without one), or a tensor-core route the addon has no kernel for, which it
 * would drop at its first call (dispatch.cu declines it). The dense route runs every shape.
 */
function impossibleRecord(r: RecordShape): { path: string[]; message: string } | undefined {
  const [R, C] = r.blockShape;
  if (r.rows === 0 || r.rows % R !== 0 || r.cols === 0 || r.cols % C !== 0)
    return { path: ["blockShape"], message: `a ${r.rows}x${r.cols} W is not whole ${R}x${C} blocks, as every BsrPattern is` };
  const blocks = (r.rows / R) * (r.cols / C);
  if (r.nnzBlocks > blocks) return { path: ["nnzBlocks"], message: `${r.nnzBlocks} blocks, more than the ${blocks} of a ${r.rows}x${r.cols} W in ${R}x${C} blocks` };
  if (r.bias && r.product !== "bsrLinear") return { path: ["bias"], message: `${r.product} is tuned without a bias (bsrLinear alone has one)` };
  const { dense, path, variant } = r.choice;
  if (dense) return undefined;
  const where = `${r.product} in ${r.dtype} with ${R}x${C} blocks`;
  // The decoding path: bsrLinear with 1 to DECODE_MAX_TOKENS tokens (tc.h), which the default route also takes.
  const decodes =
    r.product === "bsrLinear" && r.m >= 1 && r.m <= DECODE_MAX_TOKENS[r.dtype] && DECODE_BLOCK_SIDES.some((s) => s === R) && DECODE_BLOCK_SIDES.some((s) => s === C);
  if (path === "decode") {
    if (variant < 0 || variant >= DECODE_VARIANTS)
      return { path: ["choice", "variant"], message: `the decoding path's variants are 0-${DECODE_VARIANTS - 1}, not ${variant}` };
    if (!decodes)
      return {
        path: ["choice", "path"],
        message: `the decoding path runs bsrLinear with 1-${DECODE_MAX_TOKENS[r.dtype]} tokens and block sides of ${DECODE_BLOCK_SIDES.join(", ")}, not ${where} and ${r.m} tokens`,
      };
    return undefined;
  }
  if (path === "auto" && variant < 0 && decodes) return undefined;
  // The tile kernels (dispatch.cu, supported): tokens and stored blocks, square blocks of 32, 64 or 128, and in half
  // precision the rectangles of MMA_SHAPES too.
  if (r.m === 0 || r.nnzBlocks === 0)
    return { path: [r.m === 0 ? "m" : "nnzBlocks"], message: "no tensor-core tile runs a call without tokens or stored blocks (the dense route does)" };
  const half = r.dtype !== "float32";
  const square = R === C && SQUARE_BLOCK_SIDES.some((s) => s === R);
  if (!square && !(half && isShape(MMA_SHAPES, [R, C]))) return { path: ["blockShape"], message: `no tensor-core tile runs ${where}` };
  // wgmma's tiles: bfloat16/float16, square blocks or the rectangles of WGMMA_SHAPES whose output tile is 64 wide or more.
  const wgmmaShape = half && (square || (isShape(WGMMA_SHAPES, [R, C]) && (r.product === "bsrLinear" ? R : C) >= 64));
  if (path === "wgmma" && !wgmmaShape) return { path: ["choice", "path"], message: `wgmma has no tile for ${where}` };
  const variants: readonly number[] = Object.values(TILE_VARIANTS);
  if (variant >= 0 && !variants.includes(variant))
    return { path: ["choice", "variant"], message: `the addon has no tile variant ${variant} (its tiles: ${variants.join(", ")})` };
  if (variant > TILE_VARIANTS.kDefaultTile && (path === "mma" || !wgmmaShape))
    return { path: ["choice", "variant"], message: `${where} has one tile${path === "mma" ? " on mma.sync" : ""} (variant -1 or 0), not ${variant}` };
  if (variant === TILE_VARIANTS.kPatchPairTile && (r.product !== "sampledMatmul" || R !== 32 || C !== 32))
    return { path: ["choice", "variant"], message: `the patch tile (${variant}) computes sampledMatmul with 32x32 blocks, not ${where}` };
  return undefined;
}

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
    z.superRefine((r, context) => {
      const wrong = impossibleRecord(r);
      if (wrong) context.addIssue({ code: "custom", input: r, path: wrong.path, message: wrong.message });
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

/**
 * How long a writer waits for another's lock on a cache (`<file>.lock`) before it writes without it, and the age (by
 * its mtime) past which a lock is one a writer left behind when it was killed, and is taken over: a write holds it for
 * milliseconds.
 */
export const AUTOTUNE_LOCK_WAIT_MS = 2000;
export const AUTOTUNE_LOCK_STALE_MS = 5000;
const LOCK_RETRY_MS = 5;

/** Blocks this thread for `ms` (exit handlers cannot wait asynchronously). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Makes `lock` holding `token`, waiting up to AUTOTUNE_LOCK_WAIT_MS while another writer holds it and taking over a
 * stale one. Never throws: returns why it could not ("busy", or the error making it) instead.
 */
function acquireLock(lock: string, token: string): { held: true } | { held: false; why: string } {
  const deadline = Date.now() + AUTOTUNE_LOCK_WAIT_MS;
  for (;;) {
    let fd: number;
    try {
      fd = openSync(lock, "wx");
    } catch (error) {
      if ((error as { code?: unknown }).code !== "EEXIST") return { held: false, why: `cannot make ${lock} (${(error as Error).message})` };
      let age: number;
      try {
        age = Date.now() - statSync(lock).mtimeMs;
      } catch {
        continue; // released meanwhile
      }
      if (age > AUTOTUNE_LOCK_STALE_MS) {
        // Two writers taking over one stale lock at once may both go on: each write is still whole (a rename).
        try {
          unlinkSync(lock);
        } catch {
          // another writer took it over first
        }
        continue;
      }
      if (Date.now() >= deadline) return { held: false, why: `another writer held ${lock} for more than ${AUTOTUNE_LOCK_WAIT_MS / 1000} s` };
      sleepSync(LOCK_RETRY_MS);
      continue;
    }
    try {
      writeFileSync(fd, token);
      return { held: true };
    } catch (error) {
      try {
        unlinkSync(lock);
      } catch {
        // already gone
      }
      return { held: false, why: `cannot write ${lock} (${(error as Error).message})` };
    } finally {
      closeSync(fd);
    }
  }
}

/** Removes the lock if it is still this writer's (a writer that held it past AUTOTUNE_LOCK_STALE_MS lost it to another). */
function releaseLock(lock: string, token: string): void {
  try {
    if (readFileSync(lock, "utf8") === token) unlinkSync(lock);
  } catch {
    // already gone
  }
}

/** What updateAutotuneCache did: wrote the file (`unlocked` saying why it did so without the lock), or left it as it was. */
export type AutotuneCacheUpdate = { written: true; unlocked?: string } | { written: false; error: AutotuneCacheError };

/**
 * What BLOCKSPARSE_CUDA_AUTOTUNE_CACHE does at exit: reads the file again (another process sharing it may have written
 * its choices since), then writes `ours` with the file's records for the shapes `ours` lacks (when measured on this kind
 * of GPU), all while holding `<file>.lock`: processes ending together (the ranks of a data-parallel job) each read the
 * file before the others wrote it, and the last rename dropped their new choices. Synchronous, for exit handlers. A
 * lock another writer holds past AUTOTUNE_LOCK_WAIT_MS, or one that cannot be made, is done without (`unlocked` says
 * why) rather than lose this process's choices. A file that is not a cache of this package ("foreign") is left as it is.
 * Throws AutotuneCacheError when the file cannot be written.
 */
export function updateAutotuneCache(
  file: string,
  device: Pick<DeviceInfo, "name" | "computeCapability">,
  ours: readonly AutotuneRecord[],
): AutotuneCacheUpdate {
  const lock = `${file}.lock`;
  const token = `${process.pid} ${threadId} ${randomBytes(8).toString("hex")}\n`;
  const acquired = acquireLock(lock, token);
  try {
    const found = inspectAutotuneCache(file);
    if (found.kind === "foreign") return { written: false, error: found.error };
    const theirs = found.kind === "cache" && sameDevice(found.cache, device) ? found.cache.records : [];
    writeAutotuneCache(file, serializeAutotuneCache(device, mergeAutotuneRecords(ours, theirs)));
    return acquired.held ? { written: true } : { written: true, unlocked: acquired.why };
  } finally {
    if (acquired.held) releaseLock(lock, token);
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
