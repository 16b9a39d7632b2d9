/**
 * Memory bandwidth from a large typed-array copy. The buffers are written in full before the clock starts: the first
 * write to a fresh array's pages faults each one in, which would count the kernel zeroing memory as copy time (with
 * one repeat, the only time taken).
 */

/** 256 MiB: more than the last-level caches, so the copy streams from and to memory. */
export const COPY_BYTES = 256 * 2 ** 20;

/** A source of ones and a target already holding a copy of it: every page of both written, so none faults when timed. */
export function copyBuffers(bytes: number = COPY_BYTES): { source: Float32Array; target: Float32Array } {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 4 !== 0) throw new RangeError(`copyBuffers: bytes must be a positive multiple of 4, got ${bytes}`);
  const source = new Float32Array(bytes / 4).fill(1);
  const target = new Float32Array(bytes / 4);
  target.set(source);
  return { source, target };
}

/** Bytes per second of `target.set(source)` (read and write both counted), best of `repeats` copies of warmed buffers. */
export function copyBandwidth(repeats: number, bytes: number = COPY_BYTES): number {
  if (!Number.isSafeInteger(repeats) || repeats < 1) throw new RangeError(`copyBandwidth: repeats must be a positive integer, got ${repeats}`);
  const { source, target } = copyBuffers(bytes);
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    target.set(source);
    best = Math.min(best, performance.now() - start);
  }
  return (2 * bytes) / (best / 1e3);
}
