import { Inflate, inflateSync } from "fflate";
import { crc32 } from "./crc32.js";
import { BsrFormatError } from "./errors.js";

/**
 * The members of a zip archive held in memory (SciPy's .npz, up to 4 GiB), for the npz entry.
 * Sizes and offsets are read unsigned, zip64 extras included, and checked against the
 * archive's length before a member is allocated or read. The central directory is what is read (as
 * Python's zipfile reads it): each member's local header must agree with it, its data must end before
 * the next member's local header, and its bytes must match the CRC-32 it records.
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
  /** The name as the central directory spells it, to compare with the local header's. */
  nameBytes: Uint8Array;
  /** General purpose bit flags. */
  flags: number;
  /** 0 stored, 8 deflate. */
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  /** Where the member's local header starts. */
  headerOffset: number;
  /**
   * Where the next member's local header (or the central directory) starts: the member's data ends by then.
   * Python's zipfile refuses one that runs past it ("Overlapped entries", its guard against zip bombs).
   */
  end: number;
  /** What starts at `end`. */
  endsAt: "the next member's local header" | "the central directory";
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
  let size = view.getUint32(end + 12, true);
  let offset = view.getUint32(end + 16, true);
  // Where the central directory ends: at the end record, or at the zip64 end record before it.
  let directoryEnd = end;
  if (end >= 20 && view.getUint32(end - 20, true) === 0x07064b50) {
    // With a zip64 locator its record's values are the archive's, as Python's zipfile takes them.
    const zip64End = Number(view.getBigUint64(end - 12, true));
    if (zip64End + 56 <= end - 20 && view.getUint32(zip64End, true) === 0x06064b50) {
      count = Number(view.getBigUint64(zip64End + 32, true));
      size = Number(view.getBigUint64(zip64End + 40, true));
      offset = Number(view.getBigUint64(zip64End + 48, true));
      directoryEnd = zip64End;
    } else if (count === 0xffff || size === ZIP64_FIELD || offset === ZIP64_FIELD) damaged("bad zip64 end record");
  }
  // Python's zipfile reads the entries the directory's bytes hold, whatever the count says, from where the end record
  // implies it starts: an archive whose count, size, offset and end record disagree reads differently in different readers.
  if (offset + size !== directoryEnd) {
    damaged(`the end record places the ${size}-byte central directory at offset ${offset}, ending at ${offset + size}, not at ${directoryEnd} where the end record starts`);
  }
  const directoryStart = offset;
  const entries: ZipEntry[] = [];
  const decoder = new TextDecoder();
  for (let index = 0; offset < directoryEnd; index++) {
    if (offset + 46 > directoryEnd || view.getUint32(offset, true) !== 0x02014b50) damaged(`central directory entry ${index} is damaged`);
    const extraStart = offset + 46 + view.getUint16(offset + 28, true);
    const extraLength = view.getUint16(offset + 30, true);
    const entryEnd = extraStart + extraLength + view.getUint16(offset + 32, true);
    if (entryEnd > directoryEnd) damaged(`central directory entry ${index} runs past the end of the central directory`);
    const nameBytes = bytes.subarray(offset + 46, extraStart);
    const name = decoder.decode(nameBytes);
    // The zip64 extra field holds, in this order, each of the three that reads 0xffffffff.
    const wide = zip64Values(view, extraStart, extraLength) ?? [];
    let next = 0;
    const widen = (field: number, what: string) =>
      field !== ZIP64_FIELD ? field : (wide[next++] ?? fail(name, `its ${what} reads 0xffffffff and no zip64 extra field gives it`));
    const inflatedSize = widen(view.getUint32(offset + 24, true), "size");
    const compressedSize = widen(view.getUint32(offset + 20, true), "compressed size");
    const headerOffset = widen(view.getUint32(offset + 42, true), "local header offset");
    // Python's zipfile opens no archive holding an entry that needs a zip version past 6.3 to extract.
    const version = view.getUint8(offset + 6);
    if (version > 63) fail(name, `needs zip version ${Math.floor(version / 10)}.${version % 10} to extract; Python's zipfile reads up to 6.3`);
    const [flags, method, crc] = [view.getUint16(offset + 8, true), view.getUint16(offset + 10, true), view.getUint32(offset + 16, true)];
    entries.push({ name, nameBytes, flags, method, crc, compressedSize, size: inflatedSize, headerOffset, end: directoryStart, endsAt: "the central directory" });
    offset = entryEnd;
  }
  if (entries.length !== count) damaged(`the end record counts ${count} entries, the central directory holds ${entries.length}`);
  // Each member's data ends where the next local header (by offset) or the central directory starts: a walk down the
  // sorted offsets (members sharing a local header share its end).
  const byOffset = [...entries].sort((a, b) => a.headerOffset - b.headerOffset);
  let bound: Pick<ZipEntry, "end" | "endsAt"> = { end: directoryStart, endsAt: "the central directory" };
  for (let i = byOffset.length - 1; i >= 0; i--) {
    Object.assign(byOffset[i], bound);
    if (i > 0 && byOffset[i - 1].headerOffset < byOffset[i].headerOffset) bound = { end: byOffset[i].headerOffset, endsAt: "the next member's local header" };
  }
  return entries;
}

/** `size` bytes inflated from `deflated`, in one call or, past `chunkBytes`, in pieces of that size. */
function inflate(name: string, deflated: Uint8Array, size: number, chunkBytes: number): Uint8Array {
  if (size > MAX_DEFLATE_RATIO * deflated.length) {
    fail(name, `records ${size} bytes inflated from ${deflated.length}, more than deflate expands to (${MAX_DEFLATE_RATIO}-fold)`);
  }
  const oneCall = deflated.length <= chunkBytes;
  let out: Uint8Array;
  try {
    // One byte more in one call: fflate drops what a stream writes past the buffer it is given, so a stream longer than
    // the archive records came out cut to that size, read without a word wherever its CRC-32 matched what was kept.
    out = new Uint8Array(oneCall ? size + 1 : size);
  } catch (error) {
    return fail(name, `cannot hold its ${size} bytes in memory (${(error as Error).message})`);
  }
  const overflow = () => fail(name, `inflates past the ${size} bytes the archive records`);
  let at = 0;
  try {
    // fflate gives back the whole buffer for an empty input: no bytes come out of it.
    if (oneCall) at = deflated.length === 0 ? 0 : inflateSync(deflated, { out }).length;
    else {
      const inflater = new Inflate((piece) => {
        if (at + piece.length > size) overflow();
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
    // A stored block that does not fit the buffer given is copied in whole, and throws.
    if (oneCall && error instanceof RangeError) overflow();
    fail(name, `not a deflate stream (${(error as Error).message})`);
  }
  if (at > size) overflow();
  if (at !== size) fail(name, `inflates to ${at} bytes, not the ${size} the archive records`);
  return oneCall ? out.subarray(0, size) : out;
}

/** General purpose flag bits: 0 the member is encrypted, 3 its CRC and sizes follow its data (a data descriptor). */
const ENCRYPTED = 1 << 0;
const DATA_DESCRIPTOR = 1 << 3;

const text = (name: Uint8Array) => JSON.stringify(new TextDecoder().decode(name));
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((byte, i) => byte === b[i]);

/**
 * Refuses a local header that disagrees with the member's central directory entry, which the reader trusts
 * (as Python's zipfile does): another name (Python refuses it too: "File name in directory ... and header ...
 * differ"), another compression method, or, where the local header holds them (no data descriptor), another
 * CRC-32 or sizes. Readers that stream local headers would read other bytes than this one, or none.
 */
function checkLocalHeader(view: DataView, bytes: Uint8Array, entry: ZipEntry, nameAt: number, extraAt: number, extraLength: number): void {
  const { name, headerOffset } = entry;
  const differ = (what: string, local: string | number, central: string | number): never =>
    fail(name, `its local header at offset ${headerOffset} gives ${what} ${local}, the central directory ${central} (a damaged or ambiguous archive)`);
  const localName = bytes.subarray(nameAt, extraAt);
  if (!sameBytes(localName, entry.nameBytes)) differ("the name", text(localName), text(entry.nameBytes));
  const method = view.getUint16(headerOffset + 8, true);
  if (method !== entry.method) differ("compression method", method, entry.method);
  if ((view.getUint16(headerOffset + 6, true) & DATA_DESCRIPTOR) !== 0) return;
  const crc = view.getUint32(headerOffset + 14, true);
  const hex = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;
  if (crc !== entry.crc) differ("CRC-32", hex(crc), hex(entry.crc));
  // Sizes that read 0xffffffff are in the local zip64 extra field, which holds both there (size first).
  let size: number | undefined = view.getUint32(headerOffset + 22, true);
  let compressedSize: number | undefined = view.getUint32(headerOffset + 18, true);
  if (size === ZIP64_FIELD || compressedSize === ZIP64_FIELD) {
    const wide = zip64Values(view, extraAt, extraLength) ?? [];
    if (size === ZIP64_FIELD) size = wide[0];
    if (compressedSize === ZIP64_FIELD) compressedSize = wide[1];
  }
  // A size the local header leaves to a zip64 field it lacks says nothing to compare.
  if (size !== undefined && size !== entry.size) differ("size", size, entry.size);
  if (compressedSize !== undefined && compressedSize !== entry.compressedSize) differ("compressed size", compressedSize, entry.compressedSize);
}

/** A member's contents, from where its local header says its data starts. */
function memberBytes(bytes: Uint8Array, view: DataView, entry: ZipEntry, chunkBytes: number): Uint8Array {
  const { name, headerOffset, compressedSize, size } = entry;
  const truncated = `of the ${bytes.length}-byte archive (is it truncated?)`;
  if (headerOffset + 30 > bytes.length) fail(name, `its local header at offset ${headerOffset} lies past the end ${truncated}`);
  if (view.getUint32(headerOffset, true) !== 0x04034b50) fail(name, `no local header at offset ${headerOffset} (the archive is damaged)`);
  const nameAt = headerOffset + 30;
  const extraAt = nameAt + view.getUint16(headerOffset + 26, true);
  const extraLength = view.getUint16(headerOffset + 28, true);
  const start = extraAt + extraLength;
  if (start > bytes.length) fail(name, `its local header at offset ${headerOffset} runs past the end ${truncated}`);
  checkLocalHeader(view, bytes, entry, nameAt, extraAt, extraLength);
  if ((entry.flags & ENCRYPTED) !== 0) fail(name, "is encrypted, which this reader does not read");
  if (start + compressedSize > bytes.length) fail(name, `its ${compressedSize} bytes from offset ${start} run past the end ${truncated}`);
  if (start + compressedSize > entry.end) {
    fail(name, `its ${compressedSize} bytes from offset ${start} run past offset ${entry.end}, where ${entry.endsAt} starts (overlapping members: a damaged archive or a zip bomb)`);
  }
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
