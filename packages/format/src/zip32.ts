import { BsrFormatError, gibibytes as gib } from "./errors.js";

/** fflate writes no ZIP64: sizes and offsets are 32-bit fields, and 0xffffffff means "see the ZIP64 record". */
const ZIP32_LIMIT = 0xffffffff;

/** The largest archive checkZip32Sizes lets through: every archive encodeScipyNpz writes fits. */
export const MAX_ZIP32_ARCHIVE_BYTES = ZIP32_LIMIT - 1;

/**
 * fflate's deflate addresses its output (the input plus 5 bytes per 7000, under 1.6 MiB at
 * 2 GiB) with signed 32-bit arithmetic, so output past 2 GiB comes out silently truncated.
 */
const MAX_DEFLATE_BYTES = 2 ** 31 - 2 ** 22;

/** The deflate level for a member of `bytes`: 0 (stored) where fflate's deflate would corrupt it. */
export const deflateLevel = <Level extends number>(bytes: number, level: Level): Level | 0 => (bytes < MAX_DEFLATE_BYTES ? level : 0);

/**
 * Refuses, before anything is built or written, an archive of `members` (name, uncompressed
 * bytes) that a zip writer without ZIP64 would write corrupt: a member, or the whole archive,
 * of 4 GiB or more. The archive bound assumes incompressible data (deflate then stores it,
 * never adding more than 8 bytes per 16 KiB) plus each member's local and central headers.
 */
export function checkZip32Sizes(members: readonly (readonly [name: string, bytes: number])[], instead: string): void {
  let archive = 22;
  let largest = members[0];
  for (const member of members) {
    const [name, bytes] = member;
    if (bytes >= ZIP32_LIMIT) {
      throw new BsrFormatError(name, `would be ${bytes} bytes (${gib(bytes)}), past the 4 GiB a zip without ZIP64 holds; ${instead}`);
    }
    archive += 30 + 46 + 2 * name.length + bytes + 8 * Math.ceil(bytes / 16384) + 8;
    if (largest === undefined || bytes > largest[1]) largest = member;
  }
  if (archive >= ZIP32_LIMIT && largest !== undefined) {
    throw new BsrFormatError(
      largest[0],
      `is ${largest[1]} bytes (${gib(largest[1])}) and the archive would reach ${gib(archive)}, past the 4 GiB a zip without ZIP64 holds; ${instead}`,
    );
  }
}
