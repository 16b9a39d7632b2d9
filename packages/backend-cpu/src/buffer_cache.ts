/**
 * The cpu backend's caching allocator. A fresh ArrayBuffer costs one page fault per 4 KiB page the
 * first time a kernel writes it (a 32 MiB output: 8192 faults, more than the product itself on a
 * virtual machine), so a freed buffer's memory is kept and handed to the next allocation of its size
 * class, as the CUDA backend's allocator does with device memory. The cache holds at most
 * `limitBytes`; a freed buffer that would go over is left to the garbage collector.
 */
import { ValueError } from "@blocksparse/core";

/** Bytes reserved for a request: 256 at least, then four classes per power of two (at most 25% slack). */
export function sizeClass(byteLength: number): number {
  if (byteLength <= 256) return 256;
  let power = 256;
  while (power * 2 < byteLength) power *= 2;
  const step = power / 4;
  return Math.ceil(byteLength / step) * step;
}

/** The allocator's figures, as `memory()` reports them. */
export interface BufferCacheStats {
  /** Bytes of freed buffers held for reuse. */
  cachedBytes: number;
  cachedBuffers: number;
  /** Allocations served from the cache. */
  cacheHits: number;
  /** Allocations that needed a new ArrayBuffer. */
  cacheMisses: number;
}

/** Default cap on the cached bytes: 1 GiB. */
export const DEFAULT_CACHE_LIMIT_BYTES = 2 ** 30;

/** `limit`, checked: a number >= 0 (Infinity: no cap). A NaN had lifted the cap in silence (every comparison false). */
function checkedLimit(limit: unknown): number {
  if (typeof limit !== "number" || Number.isNaN(limit) || limit < 0) {
    throw new ValueError(`cpu: cache.limitBytes must be a number >= 0 (Infinity for no limit), got ${typeof limit === "number" ? limit : typeof limit}`);
  }
  return limit;
}

export class BufferCache {
  private limit: number;
  private readonly free = new Map<number, ArrayBuffer[]>();
  private cachedBytes = 0;
  private cachedBuffers = 0;
  private cacheHits = 0;
  private cacheMisses = 0;

  /**
   * @param newBuffer makes the memory of a size class when the cache has none (a plain ArrayBuffer,
   *   or one the backend prepares, e.g. advised to use huge pages)
   * @param padBytes bytes every buffer holds beyond its class (room to start the storage on a cache
   *   line); the figures and the limit count the classes
   */
  constructor(
    private readonly newBuffer: (bytes: number) => ArrayBuffer,
    limitBytes = DEFAULT_CACHE_LIMIT_BYTES,
    private readonly padBytes = 0,
  ) {
    this.limit = checkedLimit(limitBytes);
  }

  /** The most bytes the cache keeps (default 1 GiB; Infinity: no cap). */
  get limitBytes(): number {
    return this.limit;
  }

  /** A lower limit drops cached buffers, the largest first, until the cache holds no more than it. */
  set limitBytes(limit: number) {
    this.limit = checkedLimit(limit);
    for (const bytes of [...this.free.keys()].sort((a, b) => b - a)) {
      const list = this.free.get(bytes) as ArrayBuffer[];
      while (this.cachedBytes > this.limit && list.pop() !== undefined) {
        this.cachedBytes -= bytes;
        this.cachedBuffers--;
      }
      if (list.length === 0) this.free.delete(bytes);
    }
  }

  /** An ArrayBuffer of sizeClass(byteLength) + padBytes bytes: a cached one when there is one (contents unspecified), else a new zeroed one. */
  take(byteLength: number): ArrayBuffer {
    const bytes = sizeClass(byteLength);
    const cached = this.free.get(bytes)?.pop();
    if (cached !== undefined) {
      this.cachedBytes -= bytes;
      this.cachedBuffers--;
      this.cacheHits++;
      return cached;
    }
    this.cacheMisses++;
    return this.newBuffer(bytes + this.padBytes);
  }

  /** Keeps a buffer `take` returned, once nothing uses it, for the next request of its class (unless over the limit). */
  give(buffer: ArrayBuffer): void {
    const bytes = buffer.byteLength - this.padBytes;
    if (bytes !== sizeClass(bytes) || this.cachedBytes + bytes > this.limit) return;
    let list = this.free.get(bytes);
    if (list === undefined) {
      list = [];
      this.free.set(bytes, list);
    }
    list.push(buffer);
    this.cachedBytes += bytes;
    this.cachedBuffers++;
  }

  /** Drops every cached buffer (the garbage collector returns their memory). */
  release(): void {
    this.free.clear();
    this.cachedBytes = 0;
    this.cachedBuffers = 0;
  }

  stats(): BufferCacheStats {
    return { cachedBytes: this.cachedBytes, cachedBuffers: this.cachedBuffers, cacheHits: this.cacheHits, cacheMisses: this.cacheMisses };
  }
}
