/** Whether this host's typed arrays hold their elements little-endian (x86 and Arm; s390x is big-endian). */
export const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
