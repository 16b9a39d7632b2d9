import { BsrFormatError, gibibytes as gib } from "./errors.js";

/** fflate writes no ZIP64: sizes and offsets are 32-bit fields, and 0xffffffff means "see the ZIP64 record". */
const ZIP32_LIMIT = 0xffffffff;

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
