import {
  BsrPattern,
  OutOfMemoryError,
  ValueError,
  adamUpdate,
  bsrLinear,
  bsrMatmul,
  crossEntropy,
  crossEntropyBackward,
  randn,
  sampledMatmul,
  tensor,
  tidy,
  zeros,
  type Tensor,
} from "@blocksparse/core";
import { CudaBackend, CudaOutOfMemoryError } from "../src/index";
import { beforeAll, describe, expect, test } from "vitest";
import { cudaMissing, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("memory.test.ts");

describe.skipIf(cudaMissing)("cuda memory: caching allocator, out of memory, bad inputs, no leaks", () => {
  let backend: CudaBackend;
  beforeAll(() => {
    backend = useCuda();
  });

  test("the start-up warm-up ran (unless turned off) and leaves no buffer behind", () => {
    if (process.env.BLOCKSPARSE_CUDA_WARMUP === "0") expect(backend.warmUpMs).toBeNull();
    else expect(backend.warmUpMs).toBeGreaterThan(0);
    const before = backend.memory();
    expect(backend.warmUp()).toBeGreaterThan(0);
    const after = backend.memory();
    expect(after.buffers).toBe(before.buffers);
    expect(after.bytesInUse).toBe(before.bytesInUse);
    expect(after.deviceBytesInUse).toBe(before.deviceBytesInUse);
  });

  test("a freed buffer is reused from the cache without cudaMalloc, and releaseCache gives memory back", () => {
    const bytes = 256 * 1024 * 1024;
    const first = backend.allocate("float32", bytes / 4);
    backend.free(first);
    const cached = backend.memory();
    expect(cached.cachedBytes).toBeGreaterThanOrEqual(bytes);
    const second = backend.allocate("float32", bytes / 4);
    const reused = backend.memory();
    expect(reused.cudaMallocCalls).toBe(cached.cudaMallocCalls);
    expect(reused.cacheHits).toBe(cached.cacheHits + 1);
    expect(reused.cachedBytes).toBe(cached.cachedBytes - (reused.deviceBytesInUse - cached.deviceBytesInUse));
    backend.free(second);
    const freeBefore = backend.memory().deviceFreeBytes;
    expect(backend.memory().releasableBytes).toBeGreaterThanOrEqual(bytes);
    backend.releaseCache();
    const released = backend.memory();
    // Every wholly free segment went back; free blocks of segments still in use stay for reuse.
    expect(released.releasableBytes).toBe(0);
    expect(released.cachedBytes).toBeLessThanOrEqual(cached.cachedBytes - bytes);
    expect(released.reservedBytes).toBe(released.deviceBytesInUse + released.cachedBytes + released.graphPoolBytes);
    expect(released.deviceFreeBytes - freeBefore).toBeGreaterThanOrEqual(bytes);
  });

  test("a new size is cut from memory already held, and blocks of every size keep their contents as others come and go", () => {
    // A freed 12 MiB buffer's segment serves other large sizes (over 1 MiB: small ones have segments of their
    // own) without cudaMalloc.
    const held = backend.allocate("float32", (12 << 20) / 4);
    backend.free(held);
    const before = backend.memory();
    const cut = [backend.allocate("bfloat16", 3 << 20), backend.allocate("float32", 1_000_003), backend.allocate("float16", 1_000_001)];
    const after = backend.memory();
    expect(after.cudaMallocCalls).toBe(before.cudaMallocCalls);
    expect(after.cacheHits).toBe(before.cacheHits + 3);
    for (const info of cut) backend.free(info);
    // Random sizes (bytes to tens of MiB) allocated, written and freed in random order: each live buffer still
    // holds what was written to it, so no two overlap.
    let seed = 12345;
    const next = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const liveBuffers: { t: Tensor; first: number }[] = [];
    const holds = (values: ArrayLike<number>, first: number) => {
      for (let i = 0; i < values.length; i += 997) if (values[i] !== first + i) return false;
      return values[values.length - 1] === first + values.length - 1;
    };
    for (let k = 0; k < 200; k++) {
      if (liveBuffers.length > 0 && (next() < 0.45 || liveBuffers.length > 24)) {
        const [gone] = liveBuffers.splice(Math.floor(next() * liveBuffers.length), 1);
        expect(holds(gone.t.dataSync(), gone.first)).toBe(true);
        gone.t.dispose();
        continue;
      }
      // 4 bytes to 6 MB, most of them small.
      const n = 1 + Math.floor(next() ** 3 * 1_500_000);
      const first = k * 1000;
      liveBuffers.push({ t: tensor(Float32Array.from({ length: n }, (_, i) => first + i), [n], "float32"), first });
    }
    for (const { t, first } of liveBuffers) {
      expect(holds(t.dataSync(), first)).toBe(true);
      t.dispose();
    }
    const end = backend.memory();
    expect(end.reservedBytes).toBe(end.deviceBytesInUse + end.cachedBytes + end.graphPoolBytes);
  }, 60_000);

  test("running out of device memory throws a catchable CudaOutOfMemoryError and leaves the backend usable", () => {
    const before = backend.memory();
    expect(() => backend.allocate("float32", 2 ** 50)).toThrow(CudaOutOfMemoryError);
    expect(() => zeros([2 ** 25, 2 ** 25])).toThrow(/out of memory/);
    const after = backend.memory();
    expect(after.buffers).toBe(before.buffers);
    expect(after.releasableBytes).toBe(0); // the cache was released before the retry
    const t = tensor([1, 2, 3], [3], "float32");
    expect(Array.from(t.dataSync())).toEqual([1, 2, 3]);
    t.dispose();
  });

  test("a memory limit caps what the allocator holds: past it a CudaOutOfMemoryError naming the limit, then lifted", () => {
    backend.releaseCache();
    const held = backend.memory().reservedBytes;
    const mib = 2 ** 20;
    expect(backend.setMemoryLimit(held + 64 * mib)).toBeNull();
    try {
      const fits = backend.allocate("float32", (32 * mib) / 4); // a 32 MiB segment of its own: under the limit
      expect(backend.memory().reservedBytes).toBeLessThanOrEqual(held + 64 * mib);
      expect(() => backend.allocate("float32", (48 * mib) / 4)).toThrow(CudaOutOfMemoryError);
      expect(() => backend.allocate("float32", (48 * mib) / 4)).toThrow(/memory limit of \d+ bytes/);
      backend.free(fits);
      // The cache released on the failed request's retry: the same 48 MiB now fits under the limit.
      backend.free(backend.allocate("float32", (48 * mib) / 4));
    } finally {
      expect(backend.setMemoryLimit(null)).toBe(held + 64 * mib);
    }
    backend.free(backend.allocate("float32", (256 * mib) / 4)); // no limit
    expect(() => backend.setMemoryLimit(-1)).toThrow(/positive whole number of bytes or null/);
    expect(() => backend.setMemoryLimit(1.5)).toThrow(/positive whole number of bytes or null/);
    expect(() => backend.setMemoryLimit(0)).toThrow(/positive whole number of bytes or null/);
  });

  test("bad native arguments are clear errors, never crashes, and the backend keeps working", () => {
    const { addon } = backend;
    const call = (fn: () => void) => () => backend.native(fn);
    const small = backend.allocate("float32", 4) as unknown as { handle: number };
    const big = backend.allocate("float32", 64) as unknown as { handle: number };
    expect(call(() => addon.free(987654321))).toThrow(/unknown or already freed buffer/);
    expect(call(() => addon.unary(0, 0, big.handle, small.handle, 64))).toThrow(/too small/);
    expect(call(() => addon.unary(99 as 0, 0, big.handle, big.handle, 64))).toThrow(/unknown op/);
    expect(call(() => addon.unary(0, 7, big.handle, big.handle, 64))).toThrow(/unknown dtype/);
    expect(call(() => addon.copyStrided(0, small.handle, 0, [8], big.handle, 0, [1], [4]))).toThrow(/too small/);
    expect(call(() => addon.matmul(0, big.handle, big.handle, small.handle, 1, 8, 8, 8, false, false, 64, 64))).toThrow(
      /too small/,
    );
    expect(call(() => addon.reduce(0, 0, big.handle, small.handle, -1, 2, 2))).toThrow(/non-negative integer/);
    const pattern = BsrPattern.random([4, 4], { blockShape: [2, 2], density: 1, seed: 1 });
    const good = {
      rows: 4,
      cols: 4,
      blockHeight: 2,
      blockWidth: 2,
      blockRows: 2,
      blockCols: 2,
      nnzBlocks: 4,
      blockRowPtr: pattern.blockRowPtr,
      blockColIdx: pattern.blockColIdx,
      blockColPtr: pattern.columnIndex.blockColPtr,
      blockRowIdx: pattern.columnIndex.blockRowIdx,
      valueIndex: pattern.columnIndex.valueIndex,
      coordBlockRow: pattern.coordinates.blockRow,
      coordBlockCol: pattern.coordinates.blockCol,
    };
    expect(call(() => addon.createPattern({ ...good, blockColIdx: Int32Array.of(0, 2, 0, 1) }))).toThrow(/blockColIdx\[1\] = 2/);
    expect(call(() => addon.createPattern({ ...good, blockRowPtr: Int32Array.of(0, 2, 3) }))).toThrow(/must end at nnzBlocks/);
    expect(call(() => addon.createPattern({ ...good, valueIndex: Int32Array.of(0, 0, 1, 3) }))).toThrow(/valueIndex/);
    expect(call(() => addon.createPattern({ ...good, cols: 6 }))).toThrow(/is not blockRows/);
    const handle = backend.native(() => addon.createPattern(good));
    expect(call(() => addon.bsrLinear(0, handle, big.handle, small.handle, null, big.handle, 4, null))).toThrow(/values.*too small/);
    expect(call(() => addon.bsrLinear(0, handle + 1000, big.handle, big.handle, null, big.handle, 4, null))).toThrow(/unknown or freed pattern/);
    expect(call(() => addon.bsrLinear(0, handle, big.handle, big.handle, null, big.handle, 4, small.handle))).toThrow(/bsrLinear residual.*too small/);
    expect(call(() => addon.bsrLinear(0, handle, big.handle, big.handle, null, big.handle, 4, big.handle))).toThrow(/y must be a buffer of its own \(not the residual\)/);
    backend.native(() => addon.freePattern(handle));
    backend.free(small as never);
    backend.free(big as never);
    const t = tensor([1, -2], [2], "float32");
    expect(Array.from(t.dataSync())).toEqual([1, -2]);
    t.dispose();
  });

  test("strides and batch strides that would wrap int64 are refused before the launch, never read past the buffer", () => {
    const { addon } = backend;
    const call = (fn: () => void) => () => backend.native(fn);
    const one = backend.allocate("float32", 1) as unknown as { handle: number };
    const wide = backend.allocate("float32", 4097) as unknown as { handle: number };
    // 4096 steps of 2^52 elements reach 2^64, which int64 wraps to 0: a one-element buffer would have passed.
    const stride = 2 ** 52;
    expect(call(() => addon.copyStrided(0, one.handle, 0, [stride], wide.handle, 0, [1], [4097]))).toThrow(ValueError);
    expect(call(() => addon.copyStrided(0, one.handle, 0, [stride], wide.handle, 0, [1], [4097]))).toThrow(/copyStrided src: the strides reach past 2\^53/);
    expect(call(() => addon.binary(0, 0, one.handle, [stride], wide.handle, [1], wide.handle, [4097]))).toThrow(/binary a: the strides reach past 2\^53/);
    expect(call(() => addon.where(0, wide.handle, [1], one.handle, [stride], wide.handle, [1], wide.handle, [4097]))).toThrow(/where a: the strides reach past 2\^53/);
    expect(call(() => addon.matmul(0, one.handle, one.handle, wide.handle, 4097, 1, 1, 1, false, false, stride, 0))).toThrow(/matmul a: too many elements/);
    backend.free(one as never);
    backend.free(wide as never);
    const t = tensor([3, 4], [2], "float32");
    expect(Array.from(t.dataSync())).toEqual([3, 4]);
    t.dispose();
  });

  test("an allocation past 2^53 bytes is out of memory (as on js), not a malformed argument", () => {
    const before = backend.memory().buffers;
    expect(() => backend.allocate("float32", 2 ** 52)).toThrow(CudaOutOfMemoryError);
    expect(() => backend.allocate("float32", 2 ** 52)).toThrow(OutOfMemoryError);
    expect(() => zeros([2 ** 52], "float32")).toThrow(OutOfMemoryError);
    expect(backend.memory().buffers).toBe(before);
  });

  test("setCublasEnabled and sampledPlan name an argument of the wrong kind in a ValueError", () => {
    expect(() => backend.setCublasEnabled("no" as never)).toThrow(ValueError);
    expect(() => backend.setCublasEnabled(1 as never)).toThrow("setCublasEnabled: enabled must be a boolean, got 1");
    expect(backend.setCublasEnabled(true)).toBe(backend.build.cublas);
    const pattern = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 7 });
    expect(() => backend.sampledPlan({} as never, 64, "float16")).toThrow("sampledPlan: pattern must be a BsrPattern, got object");
    expect(() => backend.sampledPlan(pattern, 64, "int32")).toThrow("sampledPlan: dtype must be float32, float16 or bfloat16, got \"int32\"");
    expect(() => backend.sampledPlan(pattern, 64, "float64" as never)).toThrow(ValueError);
    expect(typeof backend.sampledPlan(pattern, 64, "float16")).toBe("string");
  });

  test("a pattern's indices are uploaded once and freed with the backend", () => {
    const own = new CudaBackend();
    const pattern = BsrPattern.random([64, 64], { blockShape: [32, 32], density: 0.5, seed: 5 });
    const before = own.memory();
    const x = own.allocate("float32", 64);
    const values = own.allocate("float32", pattern.nnzBlocks * 1024);
    for (let i = 0; i < 3; i++) own.pattern(pattern);
    expect(own.memory().patterns).toBe(1);
    own.free(x);
    own.free(values);
    own.dispose();
    const after = backend.memory();
    expect(after.deviceBytesInUse).toBe(before.deviceBytesInUse);
    expect(() => own.allocate("float32", 1)).toThrow(/disposed/);
  });

  test("device memory in use returns to its baseline after 300 training steps", () => {
    const pattern = BsrPattern.random([128, 256], { blockShape: [32, 32], density: 0.25, seed: 9 });
    const params: Tensor[] = [randn([pattern.nnzBlocks, 32, 32], { seed: 1, std: 0.05 })];
    let m = zeros(params[0].shape);
    let v = zeros(params[0].shape);
    const targets = tensor(Array.from({ length: 64 }, (_, i) => i % 128), [64], "int32");
    backend.pattern(pattern); // its indices stay on the device as long as the pattern lives
    const baseline = backend.memory();
    let cudaMallocCallsAfterWarmup = 0;
    for (let step = 1; step <= 300; step++) {
      const next = tidy(() => {
        const x = randn([64, 256], { seed: step });
        const logits = bsrLinear(x, params[0], pattern);
        const loss = crossEntropy(logits, targets);
        const dlogits = crossEntropyBackward(logits, targets, tensor(new Array(64).fill(1 / 64), [64], "float32"));
        bsrMatmul(dlogits, params[0], pattern);
        const grad = sampledMatmul(dlogits, x, pattern);
        loss.dispose();
        return adamUpdate(params[0], grad, m, v, { lr: 1e-3, step });
      });
      params[0].dispose();
      m.dispose();
      v.dispose();
      params[0] = next.param;
      m = next.m;
      v = next.v;
      if (step === 10) cudaMallocCallsAfterWarmup = backend.memory().cudaMallocCalls;
    }
    const end = backend.memory();
    expect(end.buffers).toBe(baseline.buffers);
    expect(end.bytesInUse).toBe(baseline.bytesInUse);
    expect(end.deviceBytesInUse).toBe(baseline.deviceBytesInUse);
    // After warm-up every allocation is served from the cache.
    expect(end.cudaMallocCalls).toBe(cudaMallocCallsAfterWarmup);
    for (const t of [params[0], m, v, targets]) t.dispose();
  });
});
