/**
 * The cpu backend's caching allocator: freed buffers are reused by size class, reused memory never
 * shows through (outputs and zeros stay right), live counts return to where they were (no leak),
 * releaseCache/dispose drop the cache, the limit holds, and running out of memory is a typed error.
 */
import { BsrPattern, ValueError, bsrLinear, bsrMatmul, cast, gelu, getBackendInstance, matmul, mul, randn, setBackend, sum, tensor, tidy, zeros } from "@blocksparse/core";
import { BufferCache, CpuBackend, CpuOutOfMemoryError, sizeClass } from "../src/index";
import type { JsBuffer } from "@blocksparse/core/js-kernels";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("memory.test.ts");

describe("sizeClass", () => {
  it("reserves 256 bytes at least, then at most 25% more than asked, and a class is its own class", () => {
    expect(sizeClass(0)).toBe(256);
    expect(sizeClass(1)).toBe(256);
    expect(sizeClass(256)).toBe(256);
    expect(sizeClass(257)).toBe(320);
    expect(sizeClass(4 * 2 ** 20)).toBe(4 * 2 ** 20);
    let previous = 0;
    for (let bytes = 1; bytes < 2 ** 26; bytes = Math.ceil(bytes * 1.37) + 3) {
      const reserved = sizeClass(bytes);
      expect(reserved).toBeGreaterThanOrEqual(bytes);
      expect(reserved).toBeLessThanOrEqual(Math.max(256, bytes * 1.25));
      expect(reserved).toBeGreaterThanOrEqual(previous);
      expect(sizeClass(reserved)).toBe(reserved);
      previous = reserved;
    }
  });

  it("BufferCache keeps freed buffers up to its limit and hands them back by class", () => {
    let made = 0;
    const cache = new BufferCache((bytes) => {
      made++;
      return new ArrayBuffer(bytes);
    }, 1024);
    const a = cache.take(300);
    expect(a.byteLength).toBe(320);
    cache.give(a);
    expect(cache.take(310)).toBe(a); // same class
    expect(cache.take(310)).not.toBe(a); // taken already: a new one
    expect(made).toBe(2);
    const big = cache.take(1000);
    cache.give(big); // 1024 bytes: exactly the limit
    cache.give(cache.take(300)); // would go over: dropped
    expect(cache.stats()).toEqual({ cachedBytes: 1024, cachedBuffers: 1, cacheHits: 1, cacheMisses: 4 });
    cache.release();
    expect(cache.stats().cachedBytes).toBe(0);
    expect(cache.take(1000)).not.toBe(big);
  });

  it("a padded BufferCache makes each buffer its class plus the pad and counts classes", () => {
    const cache = new BufferCache((bytes) => new ArrayBuffer(bytes), 1024, 64);
    const a = cache.take(300);
    expect(a.byteLength).toBe(320 + 64);
    cache.give(a);
    expect(cache.stats().cachedBytes).toBe(320);
    expect(cache.take(310)).toBe(a);
    cache.give(new ArrayBuffer(300)); // not a class plus the pad: not kept
    expect(cache.stats().cachedBuffers).toBe(0);
  });

  it("limitBytes must be a number >= 0, and lowering it drops cached buffers down to it, the largest first", () => {
    const cache = new BufferCache((bytes) => new ArrayBuffer(bytes), 4096);
    for (const bad of [Number.NaN, -1, "1024", null, undefined]) {
      expect(() => {
        cache.limitBytes = bad as number;
      }, String(bad)).toThrow(ValueError);
      expect(cache.limitBytes).toBe(4096);
    }
    expect(() => new BufferCache((bytes) => new ArrayBuffer(bytes), Number.NaN)).toThrow(/limitBytes must be a number >= 0/);
    const small = cache.take(256);
    const large = cache.take(2048);
    cache.give(small);
    cache.give(large);
    expect(cache.stats()).toMatchObject({ cachedBytes: 2304, cachedBuffers: 2 });
    cache.limitBytes = 1024; // the 2 KiB buffer goes, the 256 bytes stay
    expect(cache.stats()).toMatchObject({ cachedBytes: 256, cachedBuffers: 1 });
    expect(cache.take(256)).toBe(small);
    expect(cache.take(2048)).not.toBe(large);
    cache.give(small);
    cache.limitBytes = 0;
    expect(cache.stats()).toMatchObject({ cachedBytes: 0, cachedBuffers: 0 });
    cache.limitBytes = Number.POSITIVE_INFINITY; // no cap
    for (let i = 0; i < 3; i++) cache.give(new ArrayBuffer(1 << 20));
    expect(cache.stats().cachedBytes).toBe(3 << 20);
  });
});

describe.skipIf(cpuMissing)("cpu memory: caching allocator, no leaks, out of memory", () => {
  let backend: CpuBackend;
  beforeAll(() => {
    setBackend("cpu");
    backend = getBackendInstance("cpu") as CpuBackend;
  });
  afterEach(() => {
    backend.poisonAllocations = false;
  });

  const storageOf = (dataId: object) => (dataId as JsBuffer).values;

  it("a freed buffer's memory serves the next allocation of its class, whatever the dtype", () => {
    const first = backend.allocate("float32", 1 << 20);
    const memory = storageOf(first).buffer;
    backend.free(first);
    const cached = backend.memory();
    expect(cached.cachedBytes).toBeGreaterThanOrEqual(4 << 20);
    const second = backend.allocate("float16", 2 << 20); // same bytes, another dtype
    const reused = backend.memory();
    expect(storageOf(second).buffer).toBe(memory);
    expect(storageOf(second)).toBeInstanceOf(Uint16Array);
    expect(storageOf(second).length).toBe(2 << 20);
    expect(reused.cacheHits).toBe(cached.cacheHits + 1);
    expect(reused.cacheMisses).toBe(cached.cacheMisses);
    expect(reused.cachedBytes).toBe(cached.cachedBytes - (4 << 20));
    backend.free(second);
  });

  it("a half kernel's scratch (its inputs widened, its output's staging) comes from the cache and goes back to it", () => {
    for (const dtype of ["bfloat16", "float16"] as const) {
      const x = randn([4096], { seed: 5, dtype });
      const once = () => tidy(() => Array.from(gelu(mul(x, x)).dataSync()));
      const take = backend.cache.take.bind(backend.cache);
      const requested: number[] = [];
      backend.cache.take = (bytes: number) => {
        requested.push(bytes);
        return take(bytes);
      };
      let first: number[];
      try {
        first = once();
      } finally {
        backend.cache.take = take;
      }
      // Float32 scratch of 4096 elements (16 KiB) beside the 8 KiB half outputs.
      expect(requested.filter((bytes) => bytes === 4 * 4096).length, dtype).toBeGreaterThanOrEqual(3);
      const after = backend.memory();
      // The same kernels again: every scratch array and output comes from memory the first call gave back.
      expect(once()).toEqual(first);
      const again = backend.memory();
      expect(again.cacheMisses, dtype).toBe(after.cacheMisses);
      expect(again.cacheHits, dtype).toBeGreaterThan(after.cacheHits);
      expect(again.buffers, dtype).toBe(after.buffers);
      // And the values are the float32 math rounded once, as on the js backend.
      const reference = tidy(() => Array.from(cast(gelu(cast(mul(x, x), "float32")), dtype).dataSync()));
      expect(first).toEqual(reference);
      x.dispose();
    }
  });

  it("repeated products allocate nothing new after the first call, and live buffers and bytes return to the start", () => {
    const pattern = BsrPattern.random([256, 192], { blockShape: [32, 32], density: 0.5, seed: 1 });
    const x = randn([300, 192], { seed: 2 });
    const w = randn([192, 256], { seed: 3 });
    const values = randn([pattern.nnzBlocks, 32, 32], { seed: 4 });
    const step = () =>
      tidy(() => {
        const y = bsrLinear(x, values, pattern);
        return sum(matmul(y, w, { transposeB: true })).dataSync()[0];
      });
    const start = backend.memory();
    const expected = step();
    const misses = backend.memory().cacheMisses;
    for (let i = 0; i < 5; i++) expect(step()).toBe(expected);
    const end = backend.memory();
    expect(end.cacheMisses).toBe(misses);
    expect(end.cacheHits).toBeGreaterThan(start.cacheHits);
    expect(end.buffers).toBe(start.buffers);
    expect(end.bytesInUse).toBe(start.bytesInUse);
    for (const t of [x, w, values]) t.dispose();
  });

  it("reused memory never shows through: zeros are zeros and a product's output is all written", () => {
    const litter = (size: number) => {
      const id = backend.allocate("float32", size);
      storageOf(id).fill(1e30);
      backend.free(id);
    };
    litter(3000);
    let hits = backend.memory().cacheHits;
    const z = zeros([3000]);
    expect(backend.memory().cacheHits).toBe(hits + 1);
    expect(Array.from(z.dataSync()).every((v) => v === 0)).toBe(true);
    z.dispose();
    const a = randn([50, 70], { seed: 5 });
    const b = randn([70, 60], { seed: 6 });
    const reference = matmul(a.to("js"), b.to("js")).dataSync();
    litter(50 * 60);
    hits = backend.memory().cacheHits;
    const out = matmul(a, b);
    expect(backend.memory().cacheHits).toBe(hits + 1);
    const values = out.dataSync();
    for (let i = 0; i < reference.length; i++) expect(Math.abs(values[i] - reference[i])).toBeLessThan(1e-4);
    for (const t of [a, b, out]) t.dispose();
  });

  it("a read is a copy the cache never hands out again", () => {
    const t = tensor([1, 2, 3, 4], [4]);
    const read = t.dataSync();
    t.dispose();
    const next = tensor([9, 9, 9, 9], [4]);
    expect(Array.from(read)).toEqual([1, 2, 3, 4]);
    next.dispose();
  });

  it("releaseCache and dispose drop the cache; the limit caps it", () => {
    backend.free(backend.allocate("float32", 1 << 16));
    expect(backend.memory().cachedBytes).toBeGreaterThan(0);
    backend.releaseCache();
    expect(backend.memory()).toMatchObject({ cachedBytes: 0, cachedBuffers: 0 });
    const limit = backend.cache.limitBytes;
    try {
      backend.cache.limitBytes = 1 << 20;
      backend.free(backend.allocate("float32", 1 << 19)); // 2 MiB: over the limit, dropped
      expect(backend.memory().cachedBytes).toBe(0);
      backend.free(backend.allocate("float32", 1 << 17)); // 512 KiB: kept
      expect(backend.memory().cachedBytes).toBe(1 << 19);
    } finally {
      backend.cache.limitBytes = limit;
    }
    const own = new CpuBackend();
    own.free(own.allocate("int32", 1000));
    expect(own.memory().cachedBuffers).toBe(1);
    own.dispose();
    expect(own.memory()).toMatchObject({ cachedBytes: 0, cachedBuffers: 0, buffers: 0, bytesInUse: 0 });
  });

  it("releaseCache and dispose free the addon's packed-operand scratch too, and the next product is still right", () => {
    // A product over many tokens packs the whole weight: that copy used to stay allocated for the life of the process.
    const pattern = BsrPattern.random([256, 256], { blockShape: [32, 32], density: 1, seed: 7 });
    const x = randn([64, 256], { seed: 8 });
    const values = randn([pattern.nnzBlocks, 32, 32], { seed: 9 });
    const product = () => tidy(() => Array.from(bsrLinear(x, values, pattern).dataSync()));
    const expected = product();
    expect(backend.addon.scratchBytes()).toBeGreaterThanOrEqual(256 * 256 * 4);
    backend.releaseCache();
    expect(backend.addon.scratchBytes()).toBe(0);
    expect(product()).toEqual(expected);
    expect(backend.addon.scratchBytes()).toBeGreaterThan(0);
    new CpuBackend().dispose();
    expect(backend.addon.scratchBytes()).toBe(0);
    // Few tokens: each thread's sums over a block column (tokens x C floats) are scratch too, counted and freed.
    const wide = BsrPattern.dense([4, 8192], [4, 8192]);
    tidy(() => bsrMatmul(randn([8, 4], { seed: 10 }), randn([1, 4, 8192], { seed: 11 }), wide).dataSync());
    expect(backend.addon.scratchBytes()).toBeGreaterThanOrEqual(8 * 8192 * 4);
    backend.releaseCache();
    expect(backend.addon.scratchBytes()).toBe(0);
    for (const t of [x, values]) t.dispose();
  });

  it("poisons reused buffers too", () => {
    backend.free(backend.allocate("float32", 4096));
    backend.poisonAllocations = true;
    const id = backend.allocate("float32", 4096);
    expect(backend.memory().cacheHits).toBeGreaterThan(0);
    expect(Number.isNaN(storageOf(id)[4095])).toBe(true);
    backend.free(id);
  });

  it("running out of memory throws CpuOutOfMemoryError and leaves the backend usable", () => {
    const before = backend.memory();
    expect(() => backend.allocate("float32", 2 ** 44)).toThrow(CpuOutOfMemoryError);
    expect(backend.memory().buffers).toBe(before.buffers);
    const t = tensor([1, 2, 3], [3]);
    expect(Array.from(t.dataSync())).toEqual([1, 2, 3]);
    t.dispose();
  });

  it("storage starts on a cache line: at the buffer's alignment offset, a multiple of 4 below 64, for every dtype and for reused memory", () => {
    for (const bytes of [8, 1000, 4096, 3 << 20]) {
      const offset = backend.addon.alignmentOffset(new ArrayBuffer(bytes));
      expect(offset % 4).toBe(0);
      expect(offset).toBeGreaterThanOrEqual(0);
      expect(offset).toBeLessThan(64);
    }
    for (const dtype of ["float32", "float16", "bfloat16", "int32"] as const) {
      const first = backend.allocate(dtype, 1000);
      const values = storageOf(first);
      expect(values.byteOffset).toBe(backend.addon.alignmentOffset(values.buffer as ArrayBuffer));
      expect(values.length).toBe(1000);
      expect(values.byteOffset + values.byteLength).toBeLessThanOrEqual(values.buffer.byteLength);
      backend.free(first);
      const second = backend.allocate(dtype, 1000);
      expect(storageOf(second).buffer).toBe(values.buffer);
      expect(storageOf(second).byteOffset).toBe(values.byteOffset);
      backend.free(second);
    }
    expect(() => backend.addon.alignmentOffset(new Float32Array(4) as unknown as ArrayBuffer)).toThrow(/must be an ArrayBuffer/);
  });

  it("huge-page advice covers whole 2 MiB pages inside the buffer, or nothing where unsupported", () => {
    const buffer = new ArrayBuffer(9 * 2 ** 20);
    const advised = backend.addon.adviseHugePages(buffer);
    expect(advised % 2 ** 21).toBe(0);
    expect(advised).toBeLessThanOrEqual(buffer.byteLength);
    expect(() => backend.addon.adviseHugePages(new Float32Array(4) as unknown as ArrayBuffer)).toThrow(/must be an ArrayBuffer/);
  });
});
