import { constants } from "node:buffer";
import { randomBytes } from "node:crypto";
import { type FileHandle, lstat, open, readdir, readlink, realpath, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { BsrFormatError, BsrIoError, gibibytes } from "./errors.js";

/**
 * Node.js file plumbing shared by every writer and reader of the node entry: atomic,
 * durable replacement of a file, and positioned reads that never hold more than the
 * bytes asked for.
 */

/** The most bytes one read or write call moves (Node refuses more than 2 GiB - 1 per call). */
export const IO_CHUNK_BYTES = 16 * 2 ** 20;
/** The most bytes one positioned read asks for: Node 20's FileHandle.read aborts the process past 2 GiB - 1. */
const MAX_READ_BYTES = 2 ** 30;

/** The most bytes one buffer holds in this runtime (buffer.constants.MAX_LENGTH: 4 GiB in Node 20, 2^53 - 1 from Node 22). */
export const MAX_BUFFER_BYTES = constants.MAX_LENGTH;

/** "past the 4294967296 bytes (4.00 GiB) one buffer holds in Node.js v20.20.2 (buffer.constants.MAX_LENGTH)". */
export const pastBufferLimit = (limit: number): string =>
  `past the ${limit} bytes (${gibibytes(limit)}) one buffer holds in Node.js ${process.version} (buffer.constants.MAX_LENGTH)`;

/** Re-raises a format error with the file's path in its message (its field stays what it was). */
export function inFile(error: unknown, path: string): unknown {
  if (!(error instanceof BsrFormatError) || error.message.startsWith(`${path}: `)) return error;
  const located = new BsrFormatError(error.field, error.detail, error.position);
  located.message = `${path}: ${located.message}`;
  return located;
}

/** A system error's code (ENOENT, ENOSPC...), when it has one. */
function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** Turns a system error into a BsrIoError naming `path`; format errors pass through. */
export function ioError(operation: "read" | "write", path: string, error: unknown): Error {
  if (error instanceof BsrFormatError || error instanceof BsrIoError) return error;
  const code = codeOf(error);
  // "ENOENT: no such file or directory, open '<temporary>'" -> "no such file or directory (ENOENT)"
  const text = error instanceof Error ? error.message.replace(/^[A-Z]+: /, "").replace(/, \w+ '.*'$/s, "") : String(error);
  const message = code === undefined ? text : `${text} (${code})`;
  return new BsrIoError(operation, path, message, { code, cause: error });
}

/** The file a write to `path` should replace: the final target when `path` is a symbolic link. */
async function writeTarget(path: string): Promise<string> {
  const info = await lstat(path).catch(() => undefined);
  if (info === undefined || !info.isSymbolicLink()) return resolve(path);
  try {
    return await realpath(path);
  } catch {
    // A dangling link: write the file it names, so the link then resolves.
    return resolve(dirname(path), await readlink(path));
  }
}

/** `<name>.<pid>.<12 hex>.tmp`: the pid tells a later save whether the writer is gone. */
const temporaryName = (name: string) => `${name}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return codeOf(error) === "EPERM";
  }
}

/** Removes temporaries of `name` left in `directory` by writers that were killed. */
async function removeStaleTemporaries(directory: string, name: string): Promise<void> {
  const names = await readdir(directory).catch(() => [] as string[]);
  const prefix = `${name}.`;
  for (const candidate of names) {
    if (!candidate.startsWith(prefix)) continue;
    const match = /^(\d+)\.[0-9a-f]{12}\.tmp$/.exec(candidate.slice(prefix.length));
    if (match && !isAlive(Number(match[1]))) await rm(join(directory, candidate), { force: true });
  }
}

/** fsync of a directory makes a rename in it durable; some systems refuse it, which is harmless. */
async function syncDirectory(directory: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(directory, "r");
    await handle.sync();
  } catch (error) {
    if (!["EISDIR", "EINVAL", "EPERM", "EACCES", "ENOTSUP"].includes(codeOf(error) ?? "")) throw error;
  } finally {
    await handle?.close();
  }
}

/** Writes every byte of `bytes` at the handle's current position. */
export async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, at, Math.min(bytes.length - at, IO_CHUNK_BYTES));
    at += bytesWritten;
  }
}

/**
 * Replaces `path` with what `write` puts in a fresh file, so that a crash at any point
 * leaves either the old file or the new one: a temporary file in the same directory,
 * fsync, rename, fsync of the directory. The old file's mode is kept; a symbolic link is
 * written through (its target is replaced, the link stays). The temporary is removed on
 * failure, and temporaries of killed writers of the same file are removed first. System
 * errors come back as BsrIoError naming `path`.
 */
export async function writeFileAtomically(path: string, write: (handle: FileHandle) => Promise<void>): Promise<void> {
  if (typeof path !== "string" || path === "") throw new BsrFormatError("path", `expected a file path, got ${String(path)}`);
  let temporary: string | undefined;
  try {
    const target = await writeTarget(path);
    const directory = dirname(target);
    await removeStaleTemporaries(directory, basename(target));
    const existing = await stat(target).catch(() => undefined);
    if (existing?.isDirectory()) throw new BsrIoError("write", path, "is a directory");
    temporary = join(directory, temporaryName(basename(target)));
    const handle = await open(temporary, "wx", existing ? existing.mode & 0o7777 : 0o666);
    try {
      await write(handle);
      if (existing) await handle.chmod(existing.mode & 0o7777);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, target);
    temporary = undefined;
    await syncDirectory(directory);
  } catch (error) {
    if (temporary !== undefined) await rm(temporary, { force: true }).catch(() => undefined);
    throw ioError("write", path, error);
  }
}

/** Writes `bytes` to `path` atomically and durably (see writeFileAtomically). */
export function writeBytesAtomically(path: string, bytes: Uint8Array): Promise<void> {
  return writeFileAtomically(path, (handle) => writeAll(handle, bytes));
}

/** Opens `path` for reading, or throws a BsrIoError naming it. */
export async function openForReading(path: string): Promise<FileHandle> {
  if (typeof path !== "string" || path === "") throw new BsrFormatError("path", `expected a file path, got ${String(path)}`);
  try {
    return await open(path, "r");
  } catch (error) {
    throw ioError("read", path, error);
  }
}

/**
 * Fills `bytes` from the file at `position`, in calls of at most `chunkBytes` (1 GiB); a file
 * that ends first (it shrank since its size was read) is a BsrFormatError on `field`.
 */
export async function readExactly(
  handle: FileHandle,
  bytes: Uint8Array,
  position: number,
  field: string,
  chunkBytes = MAX_READ_BYTES,
): Promise<void> {
  let at = 0;
  while (at < bytes.length) {
    const { bytesRead } = await handle.read(bytes, at, Math.min(bytes.length - at, chunkBytes), position + at);
    if (bytesRead === 0) {
      throw new BsrFormatError(field, `the file ended ${bytes.length - at} bytes early (it changed while being read)`);
    }
    at += bytesRead;
  }
}

/**
 * The whole file in one buffer, for files read whole (archives, indexes), in reads of at
 * most `chunkBytes`; larger than `limit` bytes (or than a buffer holds: 4 GiB in Node 20) is
 * a BsrFormatError naming the path, the sizes and (`instead`) what to do.
 */
export async function readSmallFile(path: string, limit: number, field: string, instead = "", chunkBytes = MAX_READ_BYTES): Promise<Uint8Array> {
  const handle = await openForReading(path);
  try {
    const { size } = await handle.stat();
    const most = Math.min(limit, MAX_BUFFER_BYTES);
    if (size > most) {
      throw new BsrFormatError(
        field,
        `${path} is ${size} bytes (${gibibytes(size)}), past the ${most} bytes (${gibibytes(most)}) read whole into memory${instead && `; ${instead}`}`,
      );
    }
    const bytes = new Uint8Array(size);
    await readExactly(handle, bytes, 0, field, chunkBytes);
    return bytes;
  } catch (error) {
    throw ioError("read", path, error);
  } finally {
    await handle.close();
  }
}
