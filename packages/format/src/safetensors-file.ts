import type { FileHandle } from "node:fs/promises";
import { mkdir, readdir, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { BSR_METADATA_SUFFIXES, BSR_TENSOR_SUFFIXES, bsrMatrixNames } from "./bsr-safetensors.js";
import { BsrFormatError, BsrIoError, checkOptionKeys, gibibytes, quoted } from "./errors.js";
import {
  inFile,
  ioError,
  MAX_BUFFER_BYTES,
  openForReading,
  pastBufferLimit,
  readExactly,
  readSmallFile,
  writeAll,
  writeBytesAtomically,
  writeFileAtomically,
} from "./files.js";
import {
  encodeSafetensorsHeader,
  MAX_HEADER_BYTES,
  parseSafetensorsHeader,
  repeatedKey,
  type SafetensorsContent,
  type SafetensorsLayout,
  type SafetensorsTensor,
  safetensorsBytes,
  safetensorsHeaderLength,
  safetensorsTensorFromBytes,
} from "./safetensors.js";

/**
 * safetensors files of any size the format allows, streamed: the header is read first
 * (bounded and validated), then each tensor straight into its own buffer with positioned
 * reads; writes go out tensor by tensor in chunks. Memory: the tensors' bytes plus the
 * header plus one chunk. Sharded checkpoints follow Hugging Face's layout.
 */

type TensorsInput = Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>;

/** The index file of a sharded checkpoint: `<prefix>.safetensors.index.json`. */
export const SHARD_INDEX_SUFFIX = ".safetensors.index.json";
const DEFAULT_PREFIX = "model";
/** Index files are JSON of names; a larger one is refused before it is read. */
const MAX_INDEX_BYTES = MAX_HEADER_BYTES;

/** `model-00001-of-00003.safetensors`, as `transformers` names shards. */
export function shardFileName(prefix: string, shard: number, shards: number): string {
  const pad = (n: number) => String(n).padStart(5, "0");
  return `${prefix}-${pad(shard)}-of-${pad(shards)}.safetensors`;
}

/** Writes one tensor's bytes in chunks (big-endian hosts swap one chunk at a time). */
async function writeTensorData(handle: FileHandle, tensor: SafetensorsTensor): Promise<void> {
  const data = tensor.data;
  const perChunk = Math.max(1, Math.floor((16 * 2 ** 20) / data.BYTES_PER_ELEMENT));
  for (let at = 0; at < data.length; at += perChunk) {
    await writeAll(handle, safetensorsBytes(data.subarray(at, at + perChunk)));
  }
}

/** One safetensors file, written atomically and durably; every tensor checked before the file is opened. */
async function writeSafetensorsFile(path: string, tensors: TensorsInput, metadata: Record<string, string>): Promise<void> {
  const { header, ordered } = encodeSafetensorsHeader(tensors, metadata);
  await writeFileAtomically(path, async (handle) => {
    await writeAll(handle, header);
    for (const [, tensor] of ordered) await writeTensorData(handle, tensor);
  });
}

/**
 * Writes a safetensors file, atomically and durably (a crash leaves the old file or the
 * new one; see writeFileAtomically). Every tensor is checked before the file is opened.
 * A sharded checkpoint of the same name beside it (`<prefix>.safetensors` beside
 * `<prefix>.safetensors.index.json`) is removed once the file is written: the index, then
 * its `<prefix>-NNNNN-of-NNNNN.safetensors` shards, so that the folder holds one checkpoint.
 */
export async function saveSafetensors(path: string, tensors: TensorsInput, metadata: Record<string, string> = {}): Promise<void> {
  await writeSafetensorsFile(path, tensors, metadata);
  const name = basename(path);
  if (!name.endsWith(".safetensors")) return;
  const prefix = name.slice(0, -".safetensors".length);
  const index = join(dirname(path), `${prefix}${SHARD_INDEX_SUFFIX}`);
  if (!(await isFile(index))) return;
  await removeFile(index);
  await removeOtherShards(dirname(path), prefix, new Set());
}

/** Deletes a file a save replaces (a BsrIoError naming it when it cannot). */
async function removeFile(path: string): Promise<void> {
  await rm(path, { force: true }).catch((error) => {
    throw ioError("write", path, error);
  });
}

const isFile = (path: string) =>
  stat(path).then(
    (info) => info.isFile(),
    () => false,
  );

/** The file's header, validated against its size (see parseSafetensorsHeader). */
async function readLayout(handle: FileHandle): Promise<SafetensorsLayout> {
  const { size } = await handle.stat();
  const prefix = new Uint8Array(Math.min(8, size));
  await readExactly(handle, prefix, 0, "header");
  const headerLength = safetensorsHeaderLength(prefix, size);
  const json = new Uint8Array(headerLength);
  await readExactly(handle, json, 8, "header");
  return parseSafetensorsHeader(json, size);
}

/**
 * Refuses a tensor larger than one Uint8Array can be in this runtime (buffer.constants.MAX_LENGTH:
 * 4 GiB in Node 20), before anything is allocated: each tensor is read into one buffer.
 */
export function checkTensorsFit(layout: SafetensorsLayout, limit: number = MAX_BUFFER_BYTES): void {
  for (const { name, dtype, shape, begin, end } of layout.entries) {
    const bytes = end - begin;
    if (bytes <= limit) continue;
    throw new BsrFormatError(
      name,
      `${dtype} ${JSON.stringify(shape)} is ${bytes} bytes (${gibibytes(bytes)}), ${pastBufferLimit(limit)}; each tensor is read into one buffer`,
    );
  }
}

/** Reads one safetensors file: header first (bounded, validated), then each tensor into its own buffer. */
async function readSafetensorsFile(path: string): Promise<SafetensorsContent> {
  const handle = await openForReading(path);
  try {
    const layout = await readLayout(handle);
    checkTensorsFit(layout);
    const tensors = new Map<string, SafetensorsTensor>();
    for (const entry of layout.entries) {
      const bytes = new Uint8Array(entry.end - entry.begin);
      await readExactly(handle, bytes, layout.dataStart + entry.begin, entry.name);
      tensors.set(entry.name, safetensorsTensorFromBytes(entry, bytes));
    }
    return { tensors, metadata: layout.metadata };
  } catch (error) {
    throw inFile(ioError("read", path, error), path);
  } finally {
    await handle.close();
  }
}

/** Checks one file's header and that each of its tensors fits in a buffer, reading no tensor. */
async function checkSafetensorsHeader(path: string): Promise<void> {
  const handle = await openForReading(path);
  try {
    checkTensorsFit(await readLayout(handle));
  } catch (error) {
    throw inFile(ioError("read", path, error), path);
  } finally {
    await handle.close();
  }
}

/**
 * The path `loadSafetensors` reads for `path`: a file, an index file, or the checkpoint in a directory
 * (model.safetensors before model.safetensors.index.json, as transformers takes them).
 */
async function resolveCheckpoint(path: string): Promise<{ kind: "file" | "index"; path: string }> {
  if (typeof path !== "string" || path === "") throw new BsrFormatError("path", `expected a file or directory path, got ${String(path)}`);
  const info = await stat(path).catch((error) => {
    throw ioError("read", path, error);
  });
  if (!info.isDirectory()) return { kind: path.endsWith(SHARD_INDEX_SUFFIX) ? "index" : "file", path };
  const index = join(path, `${DEFAULT_PREFIX}${SHARD_INDEX_SUFFIX}`);
  const single = join(path, `${DEFAULT_PREFIX}.safetensors`);
  if (await isFile(single)) return { kind: "file", path: single };
  if (await isFile(index)) return { kind: "index", path: index };
  throw new BsrIoError("read", path, `is a directory holding neither ${basename(index)} nor ${basename(single)}`, { code: "ENOENT" });
}

/**
 * An index's `weight_map` as a Map (a tensor named "__proto__" stays an entry). `total_size`
 * is only checked to be a non-negative number: writers disagree on what it counts (storage
 * sizes, tied storage once, a bool as 1/8 byte, so it may be fractional) and transformers does
 * not read it, so it is not compared with the shards.
 */
function parseIndex(bytes: Uint8Array, path: string): { weightMap: Map<string, string>; metadata: Record<string, string> } {
  let parsed: unknown;
  let text: string;
  try {
    // ignoreBOM keeps a byte-order mark in the text (TextDecoder drops it by default), so that it is refused below.
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
    if (text.startsWith("\uFEFF")) {
      throw new BsrFormatError("index", `${path} starts with a UTF-8 byte-order mark (EF BB BF), which JSON readers refuse (Python's json.load: "Unexpected UTF-8 BOM")`);
    }
    parsed = JSON.parse(text);
  } catch (error) {
    if (error instanceof BsrFormatError) throw error;
    throw new BsrFormatError("index", `${path} is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  const repeated = repeatedKey(text);
  if (repeated !== undefined) {
    const field = repeated.owner === undefined ? repeated.key : `${repeated.owner}.${repeated.key}`;
    throw new BsrFormatError(field, `${path} lists this key twice (which ${repeated.owner === "weight_map" ? "shard" : "value"} is meant is ambiguous)`);
  }
  const isObject = (value: unknown): value is Record<string, unknown> =>
    value !== null && typeof value === "object" && !Array.isArray(value);
  if (!isObject(parsed) || !isObject(parsed.weight_map)) {
    throw new BsrFormatError("weight_map", `${path} must be an object with a weight_map of tensor name to shard file`);
  }
  // The index's own text entries (a checkpoint with no tensors keeps its metadata here, having no shard to hold it);
  // numbers such as total_size and transformers' total_parameters describe the files, not the model.
  const metadata: Record<string, string> = Object.create(null);
  if (parsed.metadata !== undefined) {
    if (!isObject(parsed.metadata)) throw new BsrFormatError("metadata", `${path}: expected an object`);
    const declared = parsed.metadata.total_size;
    if (declared !== undefined && (typeof declared !== "number" || !(declared >= 0))) {
      throw new BsrFormatError("metadata.total_size", `${path}: expected a non-negative number, got ${quoted(declared)}`);
    }
    for (const [key, value] of Object.entries(parsed.metadata)) if (typeof value === "string") metadata[key] = value;
  }
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(parsed.weight_map)) {
    // A shard is a plain file name beside the index: never a path that climbs out of it.
    if (typeof file !== "string" || file === "" || file === "." || file === ".." || /[/\\]/.test(file)) {
      throw new BsrFormatError(`weight_map.${name}`, `${path}: expected a shard file name beside the index, got ${quoted(file)}`);
    }
    weightMap.set(name, file);
  }
  return { weightMap, metadata };
}

/** Reads a sharded checkpoint: every shard named by the index, checked against it. */
async function readShardedSafetensors(indexPath: string): Promise<SafetensorsContent> {
  const { weightMap, metadata: indexMetadata } = parseIndex(await readSmallFile(indexPath, MAX_INDEX_BYTES, "index"), indexPath);
  const shards = [...new Set(weightMap.values())];
  const tensors = new Map<string, SafetensorsTensor>();
  const metadata: Record<string, string> = Object.assign(Object.create(null), indexMetadata);
  // Every shard's header first: a tensor too large to hold fails before other shards' gigabytes are read.
  for (const shard of shards) await checkSafetensorsHeader(join(dirname(indexPath), shard));
  for (const shard of shards) {
    const shardPath = join(dirname(indexPath), shard);
    const content = await readSafetensorsFile(shardPath);
    for (const [name, tensor] of content.tensors) {
      const listed = weightMap.get(name);
      if (listed !== shard) {
        const where = listed === undefined ? "the index does not list it" : `the index places it in ${listed}`;
        throw new BsrFormatError(name, `${shardPath} holds this tensor but ${where}`);
      }
      tensors.set(name, tensor);
    }
    for (const [key, value] of Object.entries(content.metadata)) {
      if (key in metadata && metadata[key] !== value) {
        const other = key in indexMetadata ? `the index ${JSON.stringify(indexMetadata[key])}` : `another shard ${JSON.stringify(metadata[key])}`;
        throw new BsrFormatError(`__metadata__.${key}`, `${shardPath} says ${JSON.stringify(value)}, ${other}`);
      }
      metadata[key] = value;
    }
  }
  for (const [name, shard] of weightMap) {
    if (!tensors.has(name)) throw new BsrFormatError(name, `${indexPath} places this tensor in ${shard}, which does not hold it`);
  }
  return { tensors, metadata };
}

/**
 * Reads a safetensors checkpoint: a `.safetensors` file, a sharded checkpoint's
 * `*.safetensors.index.json`, or a directory holding `model.safetensors` or
 * `model.safetensors.index.json` (the single file when it holds both, as transformers does). Validates everything (see parseSafetensorsHeader); a malformed file
 * is a BsrFormatError naming the file key, a file that cannot be read a BsrIoError naming
 * the path. Memory: the tensors' bytes plus one header.
 */
export async function loadSafetensors(path: string): Promise<SafetensorsContent> {
  const checkpoint = await resolveCheckpoint(path);
  return checkpoint.kind === "index" ? readShardedSafetensors(checkpoint.path) : readSafetensorsFile(checkpoint.path);
}

export interface ShardedSaveOptions {
  /** The most tensor bytes a shard holds (a larger single tensor, or one BSR matrix, gets a shard of its own). */
  maxShardSize: number;
  /** File name prefix: `<prefix>-00001-of-0000N.safetensors` and `<prefix>.safetensors.index.json` (default "model"). */
  prefix?: string;
}

/** Groups the tensors into units never split across shards: each BSR matrix's parts stay together. */
function shardUnits(content: SafetensorsContent): { names: string[]; bytes: number; matrices: string[] }[] {
  const matrixOf = new Map<string, string>();
  for (const matrix of bsrMatrixNames(content)) {
    for (const suffix of Object.values(BSR_TENSOR_SUFFIXES)) matrixOf.set(`${matrix}${suffix}`, matrix);
  }
  const units = new Map<string, { names: string[]; bytes: number; matrices: string[] }>();
  for (const [name, tensor] of content.tensors) {
    const matrix = matrixOf.get(name);
    const key = matrix === undefined ? `tensor:${name}` : `matrix:${matrix}`;
    const unit = units.get(key) ?? { names: [], bytes: 0, matrices: matrix === undefined ? [] : [matrix] };
    unit.names.push(name);
    unit.bytes += tensor.data.byteLength;
    units.set(key, unit);
  }
  return [...units.values()];
}

/** Metadata a shard carries: everything but the BSR metadata of matrices kept in other shards. */
function shardMetadata(metadata: Record<string, string>, ownMatrices: Set<string>, allMatrices: string[]): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  const suffixes = Object.values(BSR_METADATA_SUFFIXES);
  for (const [key, value] of Object.entries(metadata)) {
    const foreign = allMatrices.some(
      (matrix) => !ownMatrices.has(matrix) && suffixes.some((suffix) => key === `${matrix}${suffix}`),
    );
    if (!foreign) out[key] = value;
  }
  return out;
}

/**
 * Writes a sharded checkpoint into `directory` as `transformers` does: shards of at most
 * `maxShardSize` tensor bytes (`model-00001-of-00003.safetensors`...) and
 * `model.safetensors.index.json` ({ metadata: { total_size }, weight_map }). A BSR matrix's
 * parts share a shard, and each shard carries the metadata of its own matrices, so any
 * shard reads alone. Each file is replaced atomically, the index last; shards of an
 * earlier save with another count are removed afterwards, and so is a single-file
 * `<prefix>.safetensors` there (it would be read before the index). Returns the paths written.
 */
export async function saveShardedSafetensors(
  directory: string,
  tensors: TensorsInput,
  metadata: Record<string, string> = {},
  options: ShardedSaveOptions,
): Promise<{ index: string; shards: string[] }> {
  if (typeof directory !== "string" || directory === "") {
    throw new BsrFormatError("directory", `expected a directory path, got ${String(directory)}`);
  }
  checkOptionKeys(options, ["maxShardSize", "prefix"]);
  const { maxShardSize, prefix = DEFAULT_PREFIX } = options ?? ({} as ShardedSaveOptions);
  if (typeof maxShardSize !== "number" || !Number.isSafeInteger(maxShardSize) || maxShardSize < 1) {
    throw new BsrFormatError("maxShardSize", `expected a positive integer number of bytes, got ${String(maxShardSize)}`);
  }
  if (typeof prefix !== "string" || !/^[\w.-]+$/.test(prefix)) {
    throw new BsrFormatError("prefix", `expected a plain file name prefix, got ${JSON.stringify(prefix)}`);
  }
  // Checks every tensor and the metadata before anything is written.
  encodeSafetensorsHeader(tensors, metadata);
  const content: SafetensorsContent = {
    tensors: tensors instanceof Map ? tensors : new Map(Object.entries(tensors)),
    metadata,
  };
  // Without tensors the metadata goes in the index, whose own total_size (a number) replaced the caller's without a word.
  if (content.tensors.size === 0 && Object.hasOwn(metadata, "total_size")) {
    throw new BsrFormatError(
      "metadata.total_size",
      "a checkpoint with no tensors keeps its metadata in the index, whose total_size is the byte count of its shards: this entry would be lost (rename it, or save one file with saveSafetensors)",
    );
  }
  const allMatrices = bsrMatrixNames(content);
  const groups: { names: string[]; matrices: Set<string>; bytes: number }[] = [];
  for (const unit of shardUnits(content)) {
    const last = groups.at(-1);
    if (last !== undefined && last.bytes + unit.bytes <= maxShardSize) {
      last.names.push(...unit.names);
      for (const matrix of unit.matrices) last.matrices.add(matrix);
      last.bytes += unit.bytes;
    } else {
      groups.push({ names: [...unit.names], matrices: new Set(unit.matrices), bytes: unit.bytes });
    }
  }
  if (groups.length === 0) groups.push({ names: [], matrices: new Set(), bytes: 0 });
  try {
    await mkdir(directory, { recursive: true });
  } catch (error) {
    throw ioError("write", directory, error);
  }
  const weightMap: Record<string, string> = Object.create(null);
  const shards: string[] = [];
  let totalSize = 0;
  for (const [i, group] of groups.entries()) {
    const file = shardFileName(prefix, i + 1, groups.length);
    const shardTensors = new Map(group.names.map((name) => [name, content.tensors.get(name) as SafetensorsTensor]));
    await writeSafetensorsFile(join(directory, file), shardTensors, shardMetadata(metadata, group.matrices, allMatrices));
    for (const name of group.names) weightMap[name] = file;
    shards.push(join(directory, file));
    totalSize += group.bytes;
  }
  const index = join(directory, `${prefix}${SHARD_INDEX_SUFFIX}`);
  // Without tensors the index names no shard, so a reader would not open the one written: the metadata goes in the index.
  const indexMetadata = content.tensors.size === 0 ? { ...metadata, total_size: totalSize } : { total_size: totalSize };
  const indexJson = JSON.stringify({ metadata: indexMetadata, weight_map: weightMap }, null, 2);
  await writeBytesAtomically(index, new TextEncoder().encode(`${indexJson}\n`));
  await removeOtherShards(directory, prefix, new Set(shards.map((path) => basename(path))));
  // Removed last: until the new index is written, the old single file is the folder's checkpoint.
  const single = join(directory, `${prefix}.safetensors`);
  if (await isFile(single)) await removeFile(single);
  return { index, shards };
}

/** Deletes `<prefix>-NNNNN-of-NNNNN.safetensors` files the new index does not name. */
async function removeOtherShards(directory: string, prefix: string, kept: Set<string>): Promise<void> {
  const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const shardPattern = new RegExp(`^${escaped}-\\d{5}-of-\\d{5}\\.safetensors$`);
  for (const name of await readdir(directory)) {
    if (shardPattern.test(name) && !kept.has(name)) await removeFile(join(directory, name));
  }
}
