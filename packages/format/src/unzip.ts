import { Inflate, inflateSync } from "fflate";
import { crc32 } from "./crc32.js";
import { BsrFormatError } from "./errors.js";

/**
 * The members of a zip archive held in memory (SciPy's .npz, up to 4 GiB), for the npz entry.
 * Sizes and offsets are read unsigned, zip64 extras included, and checked against the
 * archive's length before a member is allocated or read; each member is checked against the
 * CRC-32 of its central directory entry (NumPy streams members with data descriptors, so the
 * local headers hold no sizes or CRC).
 */

/**
 * A deflate stream longer than this is inflated in pieces of this size: fflate's one-shot
 * inflate addresses its input with signed 32-bit arithmetic, wrong past 2 GiB.
 */
const INFLATE_CHUNK_BYTES = 2 ** 30;
/** A deflate stream inflates at most 1032-fold (a 258-byte match per 2 bits). */
const MAX_DEFLATE_RATIO = 1032;
/** A 32-bit size or offset that reads 0xffffffff is in the entry's zip64 extra field. */
const ZIP64_FIELD = 0xffffffff;

/** A member as the central directory records it. */
interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  /** Where the member's local header starts. */
  headerOffset: number;
}

function fail(field: string, why: string): never {
  throw new BsrFormatError(field, why);
}

const damaged = (why: string): never => fail("npz", `not a readable zip archive (${why})`);

/** The 8-byte values of the zip64 extra field (id 1) among the extra fields at `start`, if there is one. */
function zip64Values(view: DataView, start: number, length: number): number[] | undefined {
  const end = start + length;
  for (let at = start; at + 4 <= end; at += 4 + view.getUint16(at + 2, true)) {
    if (view.getUint16(at, true) !== 1) continue;
    const fieldEnd = Math.min(at + 4 + view.getUint16(at + 2, true), end);
    const values: number[] = [];
    for (let value = at + 4; value + 8 <= fieldEnd; value += 8) values.push(Number(view.getBigUint64(value, true)));
    return values;
  }
  return undefined;
}

/** Every entry of the central directory (zip64 included), its fields within the archive. */
function centralDirectory(bytes: Uint8Array, view: DataView): ZipEntry[] {
  let end = -1;
  for (let at = bytes.length - 22; at >= Math.max(0, bytes.length - 22 - 0xffff); at--) {
    if (view.getUint32(at, true) === 0x06054b50) {
      end = at;
      break;
    }
  }
  if (end < 0) damaged("no end of central directory record");
  let count = view.getUint16(end + 10, true);
  let offset = view.getUint32(end + 16, true);
  if ((count === 0xffff || offset === ZIP64_FIELD) && end >= 20 && view.getUint32(end - 20, true) === 0x07064b50) {
    const zip64End = Number(view.getBigUint64(end - 12, true));
    if (zip64End + 56 > bytes.length || view.getUint32(zip64End, true) !== 0x06064b50) damaged("bad zip64 end record");
    count = Number(view.getBigUint64(zip64End + 32, true));
    offset = Number(view.getBigUint64(zip64End + 48, true));
  }
  const entries: ZipEntry[] = [];
  const decoder = new TextDecoder();
  for (let index = 0; index < count; index++) {
    if (offset + 46 > bytes.length || view.getUint32(offset, true) !== 0x02014b50) damaged(`central directory entry ${index} is damaged`);
    const extraStart = offset + 46 + view.getUint16(offset + 28, true);
    const extraLength = view.getUint16(offset + 30, true);
    if (extraStart + extraLength > bytes.length) damaged(`central directory entry ${index} runs past the end`);
    const name = decoder.decode(bytes.subarray(offset + 46, extraStart));
    // The zip64 extra field holds, in this order, each of the three that reads 0xffffffff.
    const wide = zip64Values(view, extraStart, extraLength) ?? [];
    let next = 0;
    const widen = (field: number, what: string) =>
      field !== ZIP64_FIELD ? field : (wide[next++] ?? fail(name, `its ${what} reads 0xffffffff and no zip64 extra field gives it`));
    const size = widen(view.getUint32(offset + 24, true), "size");
    const compressedSize = widen(view.getUint32(offset + 20, true), "compressed size");
    const headerOffset = widen(view.getUint32(offset + 42, true), "local header offset");
    entries.push({ name, method: view.getUint16(offset + 10, true), crc: view.getUint32(offset + 16, true), compressedSize, size, headerOffset });
    offset = extraStart + extraLength + view.getUint16(offset + 32, true);
  }
  return entries;
}

/** `size` bytes inflated from `deflated`, in one call or, past `chunkBytes`, in pieces of that size. */
function inflate(name: string, deflated: Uint8Array, size: number, chunkBytes: number): Uint8Array {
  if (size > MAX_DEFLATE_RATIO * deflated.length) {
    fail(name, `records ${size} bytes inflated from ${deflated.length}, more than deflate expands to (${MAX_DEFLATE_RATIO}-fold)`);
  }
  let out: Uint8Array;
  try {
    out = new Uint8Array(size);
  } catch (error) {
    return fail(name, `cannot hold its ${size} bytes in memory (${(error as Error).message})`);
  }
  let at = 0;
  try {
    if (deflated.length <= chunkBytes) at = inflateSync(deflated, { out }).length;
    else {
      const inflater = new Inflate((piece) => {
        if (at + piece.length > size) fail(name, `inflates past the ${size} bytes the archive records`);
        out.set(piece, at);
        at += piece.length;
      });
      // Stops once all `size` bytes are out, so that bytes after the stream are never buffered.
      for (let from = 0; from < deflated.length && at < size; from += chunkBytes) {
        const to = Math.min(from + chunkBytes, deflated.length);
        inflater.push(deflated.subarray(from, to), to === deflated.length);
      }
    }
  } catch (error) {
    if (error instanceof BsrFormatError) throw error;
    fail(name, `not a deflate stream (${(error as Error).message})`);
  }
  if (at !== size) fail(name, `inflates to ${at} bytes, not the ${size} the archive records`);
  return out;
}

/** A member's contents, from where its local header says its data starts. */
function memberBytes(bytes: Uint8Array, view: DataView, entry: ZipEntry, chunkBytes: number): Uint8Array {
  const { name, headerOffset, compressedSize, size } = entry;
  const truncated = `of the ${bytes.length}-byte archive (is it truncated?)`;
  if (headerOffset + 30 > bytes.length) fail(name, `its local header at offset ${headerOffset} lies past the end ${truncated}`);
  if (view.getUint32(headerOffset, true) !== 0x04034b50) fail(name, `no local header at offset ${headerOffset} (the archive is damaged)`);
  const start = headerOffset + 30 + view.getUint16(headerOffset + 26, true) + view.getUint16(headerOffset + 28, true);
  if (start + compressedSize > bytes.length) fail(name, `its ${compressedSize} bytes from offset ${start} run past the end ${truncated}`);
  const data = bytes.subarray(start, start + compressedSize);
  if (entry.method === 8) return inflate(name, data, size, chunkBytes);
  if (entry.method !== 0) fail(name, `uses zip compression method ${entry.method}; only stored (0) and deflate (8) are read`);
  if (size !== compressedSize) fail(name, `is stored in ${compressedSize} bytes but records ${size}`);
  return data;
}

/** Every member of the zip archive `bytes` as [name, inflated size], from its central directory alone. */
export function zipMemberSizes(bytes: Uint8Array): [name: string, size: number][] {
  return centralDirectory(bytes, new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)).map((entry) => [entry.name, entry.size]);
}

/** The names of every member of the zip archive `bytes`, for messages. */
export function zipMemberNames(bytes: Uint8Array): string[] {
  return zipMemberSizes(bytes).map(([name]) => name);
}

/**
 * The members of the zip archive `bytes` named in `names` (those it lacks are left out), each
 * checked against its CRC-32; a stored member is a view into `bytes`. `inflateChunkBytes` is
 * the longest deflate stream inflated in one call (tests make it small).
 */
export function unzipMembers(bytes: Uint8Array, names: ReadonlySet<string>, inflateChunkBytes = INFLATE_CHUNK_BYTES): Map<string, Uint8Array> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const members = new Map<string, Uint8Array>();
  for (const entry of centralDirectory(bytes, view)) {
    if (!names.has(entry.name)) continue;
    if (members.has(entry.name)) fail(entry.name, "is in the archive twice (which copy is meant is ambiguous)");
    const member = memberBytes(bytes, view, entry, inflateChunkBytes);
    const actual = crc32(member);
    if (actual !== entry.crc) {
      const hex = (n: number) => n.toString(16).padStart(8, "0");
      fail(entry.name, `CRC-32 ${hex(actual)} differs from the ${hex(entry.crc)} the archive records (the file is corrupt)`);
    }
    members.set(entry.name, member);
  }
  return members;
}
