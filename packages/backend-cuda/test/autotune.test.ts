import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BsrPattern, bsrLinear, bsrMatmul, bsrMatmulActivationBackward, runKernel, sampledMatmul, type Tensor, tidy } from "@blocksparse/core";
import { reference } from "@blocksparse/core/testing";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { AutotuneCacheError, serializeAutotuneCache } from "../src/autotune_cache";
import type { AutotuneRecord } from "../src/native";
import { cudaMissing, expectClose, random, randomTensor, reportCudaAvailability, useCuda } from "./cuda";

reportCudaAvailability("autotune.test.ts");

/** y = x W^T + bias, dx = dy W and dW = dy^T x on W's blocks, in float64 from the values the tensors hold. */
function references(pattern: BsrPattern, values: Float64Array, x: Float64Array, dy: Float64Array, bias: Float64Array, m: number) {
  const [rows, cols] = pattern.shape;
  const [R, C] = pattern.blockShape;
  const { blockRow, blockCol } = pattern.coordinates;
  const y = new Float64Array(m * rows);
  const dx = new Float64Array(m * cols);
  const dw = new Float64Array(pattern.nnzBlocks * R * C);
  for (let i = 0; i < m; i++) y.set(bias, i * rows);
  for (let p = 0; p < pattern.nnzBlocks; p++) {
    for (let i = 0; i < m; i++) {
      const rowBase = i * rows + blockRow[p] * R;
      const colBase = i * cols + blockCol[p] * C;
      for (let r = 0; r < R; r++) {
        const g = dy[rowBase + r];
        let sum = 0;
        for (let c = 0; c < C; c++) {
          const w = values[(p * R + r) * C + c];
          sum += x[colBase + c] * w;
          dx[colBase + c] += g * w;
          dw[(p * R + r) * C + c] += g * x[colBase + c];
        }
        y[rowBase + r] += sum;
      }
    }
  }
  return { y, dx, dw };
}

describe.skipIf(cudaMissing)("first-use autotuning of the block-sparse products", () => {
  beforeAll(() => {
    const backend = useCuda();
    backend.clearAutotune();
    backend.setAutotune(true);
  });
  afterAll(() => {
    const backend = useCuda();
    backend.setAutotune(false);
    backend.clearAutotune();
  });

  // 64x64 blocks with ragged token counts (1000, 2100: the weight gradient then has token splits to try), 32x32
  // blocks, and the rectangles 128x64, 64x128 and 64x32 (wgmma tiles on sm_90a besides mma.sync's); every output
  // poisoned (NaN) before it is written.
  const CASES: { shape: [number, number]; block: [number, number]; m: number }[] = [
    { shape: [512, 256], block: [64, 64], m: 1000 },
    { shape: [256, 512], block: [64, 64], m: 2100 },
    { shape: [256, 384], block: [32, 32], m: 300 },
    { shape: [512, 256], block: [128, 64], m: 1000 },
    { shape: [256, 512], block: [64, 128], m: 2100 },
    { shape: [256, 512], block: [64, 32], m: 1000 },
  ];
  for (const dtype of ["bfloat16", "float16"] as const) {
    for (const { shape, block: [br, bc], m } of CASES) {
      test(`W ${shape.join("x")} in ${br}x${bc} blocks, ${m} tokens, ${dtype}: tuned once, matches float64, repeats exactly`, () => {
        const backend = useCuda(); // outputs poisoned (NaN) until written
        const next = random(br * 31 + bc + m);
        const pattern = BsrPattern.random(shape, { blockShape: [br, bc], density: 0.5, seed: m });
        tidy(() => {
            const values = randomTensor(next, [pattern.nnzBlocks, br, bc], dtype);
            const bias = randomTensor(next, [shape[0]], dtype);
            const x = randomTensor(next, [m, shape[1]], dtype);
            const dy = randomTensor(next, [m, shape[0]], dtype);
            const before = backend.autotuneRecords().length;
            const run = () => ({
              y: bsrLinear(x.t, values.t, pattern, bias.t).dataSync(),
              dx: bsrMatmul(dy.t, values.t, pattern).dataSync(),
              dw: sampledMatmul(dy.t, x.t, pattern).dataSync(),
            });
            const first = run();
            const ref = references(pattern, values.values, x.values, dy.values, bias.values, m);
            const label = `${shape.join("x")} ${br}x${bc} ${m} tokens ${dtype}`;
            expectClose(first.y, ref.y, dtype, `bsrLinear ${label}`);
            expectClose(first.dx, ref.dx, dtype, `bsrMatmul ${label}`);
            expectClose(first.dw, ref.dw, dtype, `sampledMatmul ${label}`);
            // One record per product, each naming a route that was timed.
            const records = backend
              .autotuneRecords()
              .filter((r) => r.m === m && r.rows === shape[0] && r.cols === shape[1] && r.dtype === dtype && r.blockShape[0] === br && r.blockShape[1] === bc);
            expect(records.map((r) => r.product).sort()).toEqual(["bsrLinear", "bsrMatmul", "sampledMatmul"]);
            for (const record of records) {
              expect(record.blockShape).toEqual([br, bc]);
              expect(record.nnzBlocks).toBe(pattern.nnzBlocks);
              expect(record.timings.length, `${record.product}: candidates timed`).toBeGreaterThan(0);
              expect(record.timings.map((t) => t.route)).toContain(record.route);
              for (const t of record.timings) expect(t.ms).toBeGreaterThan(0);
              const fastest = Math.min(...record.timings.map((t) => t.ms));
              expect(record.timings.find((t) => t.route === record.route)?.ms).toBe(fastest);
              // cuBLAS's dense product (over the scattered blocks, or with dW's blocks sampled out) is timed beside
              // the tensor-core routes.
              const dense = record.product === "sampledMatmul" ? "dense product, sampled" : "dense product, scattered blocks";
              if (backend.build.cublas) expect(record.timings.map((t) => t.route), `${record.product}: the dense route timed`).toContain(dense);
            }
            expect(records.find((r) => r.product === "bsrLinear")?.bias).toBe(true);
            // The second call reuses the records and gives the same bits.
            const second = run();
            expect(backend.autotuneRecords().length).toBe(before + 3);
            for (const key of ["y", "dx", "dw"] as const) {
              const a = first[key];
              const b = second[key];
              let same = a.length === b.length;
              for (let i = 0; same && i < a.length; i++) same = Object.is(a[i], b[i]);
              expect(same, `${key}: the second call repeats the first exactly`).toBe(true);
            }
        });
      });
    }
  }

  // bsrLinearActivation and bsrMatmulActivationBackward (a layer's forward with its activation, the next layer's dX
  // through it) tune under keys of their own, each route timed with its epilogue: fused in the X-resident tile or
  // cuBLASLt's GELU epilogue where the route has one, else the route and then the pass. 32x32 blocks and a 256-wide
  // slab, where the X-resident tile is among the routes on sm_90a.
  describe("fused activations", () => {
    const [rows, cols, m] = [512, 256, 1000];
    const pattern = BsrPattern.random([rows, cols], { blockShape: [32, 32], density: 0.5, seed: 31 });
    const gelu = (v: number) => reference.gelu(v, "tanh");
    const geluGrad = (v: number) => reference.geluGrad(v, "tanh");

    /** The two fused calls on fresh random inputs (outputs poisoned until written), checked against float64 math. */
    function runFused(seed: number, what: string) {
      const next = random(seed);
      return tidy(() => {
        const values = randomTensor(next, [pattern.nnzBlocks, 32, 32], "bfloat16");
        const bias = randomTensor(next, [rows], "bfloat16");
        const x = randomTensor(next, [m, cols], "bfloat16");
        const dy = randomTensor(next, [m, rows], "bfloat16");
        const pre = randomTensor(next, [m, cols], "bfloat16");
        const ref = references(pattern, values.values, x.values, dy.values, bias.values, m);
        const [a, z] = runKernel("BsrLinearActivation", { x: x.t, values: values.t, bias: bias.t }, { pattern, activation: "gelu_tanh" }) as Tensor[];
        const [dpre, dbias] = bsrMatmulActivationBackward(dy.t, values.t, pattern, pre.t, "gelu_tanh");
        const out = { z: z.dataSync(), a: a.dataSync(), dpre: dpre.dataSync(), dbias: dbias.dataSync() };
        const dpreRef = ref.dx.map((g, i) => g * geluGrad(pre.values[i]));
        const dbiasRef = new Float64Array(cols);
        for (let i = 0; i < dpreRef.length; i++) dbiasRef[i % cols] += dpreRef[i];
        expectClose(out.z, ref.y, "bfloat16", `bsrLinearActivation z, ${what}`);
        expectClose(out.a, ref.y.map(gelu), "bfloat16", `bsrLinearActivation gelu(z), ${what}`);
        expectClose(out.dpre, dpreRef, "bfloat16", `bsrMatmulActivationBackward dpre, ${what}`);
        expectClose(out.dbias, dbiasRef, "bfloat16", `bsrMatmulActivationBackward dbias, ${what}`);
        return out;
      });
    }
    const fusedRecords = (backend: ReturnType<typeof useCuda>) =>
      backend.autotuneRecords().filter((r) => r.epilogue !== "none" && r.m === m && r.rows === rows && r.cols === cols && r.nnzBlocks === pattern.nnzBlocks);

    test("each fused call tunes once under its own key (apart from the bare product's), matches float64 and repeats exactly", () => {
      const backend = useCuda();
      backend.clearAutotune();
      const first = runFused(41, "tuned");
      const records = fusedRecords(backend);
      expect(records.map((r) => `${r.product} ${r.epilogue} ${r.bias}`).sort()).toEqual(["bsrLinear activation true", "bsrMatmul activationBackward false"]);
      for (const record of records) {
        expect(record.timings.length, `${record.epilogue}: candidates timed`).toBeGreaterThan(0);
        const fastest = Math.min(...record.timings.map((t) => t.ms));
        expect(record.timings.find((t) => t.route === record.route)?.ms).toBe(fastest);
        if (backend.build.cublas) expect(record.timings.map((t) => t.route)).toContain("dense product, scattered blocks");
      }
      // The bare products of the same shapes were not tuned by the fused calls.
      expect(backend.autotuneRecords().filter((r) => r.epilogue === "none" && r.m === m && r.rows === rows)).toEqual([]);
      // Same inputs again (same seed): the records are reused (no new key) and the bits repeat.
      const second = runFused(41, "tuned, again");
      expect(fusedRecords(backend)).toHaveLength(2);
      for (const key of ["z", "a", "dpre", "dbias"] as const) {
        const same = first[key].length === second[key].length && first[key].every((v, i) => Object.is(v, second[key][i]));
        expect(same, `${key}: the second call repeats the first exactly`).toBe(true);
      }
    });

    test("a chosen route runs with its epilogue: the X-resident tile's (sm_90a), cuBLASLt's over the scattered blocks, mma.sync's tile then the pass", () => {
      const backend = useCuda();
      const dir = mkdtempSync(join(tmpdir(), "blocksparse-autotune-fused-"));
      const record = (product: "bsrLinear" | "bsrMatmul", choice: AutotuneRecord["choice"]): AutotuneRecord => ({
        product,
        dtype: "bfloat16",
        blockShape: [32, 32],
        m,
        rows,
        cols,
        nnzBlocks: pattern.nnzBlocks,
        bias: product === "bsrLinear",
        epilogue: product === "bsrLinear" ? "activation" : "activationBackward",
        route: "",
        choice,
        timings: [],
      });
      const xResident = { dense: false, path: "wgmma", variant: 6, splits: 0 } as const;
      const choices: [string, AutotuneRecord["choice"]][] = [
        ["the dense route", { dense: true, path: "auto", variant: -1, splits: 0 }],
        ["mma.sync's tile", { dense: false, path: "mma", variant: -1, splits: 0 }],
        ...(backend.device.computeCapability === "9.0" ? [["the X-resident tile", xResident] as [string, AutotuneRecord["choice"]]] : []),
      ];
      try {
        for (const [what, choice] of choices) {
          if (choice.dense && !backend.build.cublas) continue;
          backend.clearAutotune();
          const file = join(dir, "cache.json");
          writeFileSync(file, serializeAutotuneCache(backend.device, [record("bsrLinear", choice), record("bsrMatmul", choice)]));
          expect(backend.loadAutotune(file).imported).toBe(2);
          runFused(53, what);
          // Both ran on the loaded route: no record was dropped (a declined route drops its record) or tuned again.
          const records = fusedRecords(backend);
          expect(records.map((r) => r.choice), what).toEqual([choice, choice]);
          for (const r of records) expect(r.timings, `${what}: not tuned again`).toEqual([]);
        }
      } finally {
        backend.clearAutotune();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  // dW's patch tile (32x32, sm_90a) is timed by autotuning from 2048 tokens where the pattern has its pair records:
  // built at upload while autotuning is on, from density 0.1, and on a GPU whose fixed rules dispatch the tile (memory
  // peaking at 4.5 TB/s or more, unless BLOCKSPARSE_CUDA_PATCH_DW says otherwise) for densities in its band, 0.15-0.28.
  test("32x32 dW: the patch tile is among the timed routes on sm_90a, and runs when chosen (matches float64)", () => {
    const backend = useCuda();
    const onWgmma = backend.device.computeCapability === "9.0";
    const [rows, cols, m] = [512, 768, 2100];
    const pattern = BsrPattern.random([rows, cols], { blockShape: [32, 32], density: 0.2, seed: 61 });
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-autotune-patch-"));
    const next = random(61);
    try {
      tidy(() => {
        const x = randomTensor(next, [m, cols], "bfloat16");
        const dy = randomTensor(next, [m, rows], "bfloat16");
        const values = new Float64Array(pattern.nnzBlocks * 32 * 32);
        const ref = references(pattern, values, x.values, dy.values, new Float64Array(rows), m).dw;
        const isOurs = (r: AutotuneRecord) => r.product === "sampledMatmul" && r.m === m && r.rows === rows && r.cols === cols;
        backend.clearAutotune();
        expectClose(sampledMatmul(dy.t, x.t, pattern).dataSync(), ref, "bfloat16", "sampledMatmul, tuned");
        const tuned = backend.autotuneRecords().filter(isOurs);
        expect(tuned).toHaveLength(1);
        const routes = tuned[0].timings.map((t) => t.route);
        if (onWgmma) expect(routes).toContain("wgmma patch tile");
        else expect(routes).not.toContain("wgmma patch tile");
        if (!onWgmma) return;
        // The tile chosen (as a cache file from a GPU where it won would choose it): it runs, and is not dropped.
        const choice = { dense: false, path: "wgmma", variant: 33, splits: 0 } as const;
        const record: AutotuneRecord = { ...tuned[0], route: "", choice, timings: [] };
        const file = join(dir, "cache.json");
        writeFileSync(file, serializeAutotuneCache(backend.device, [record]));
        backend.clearAutotune();
        expect(backend.loadAutotune(file).imported).toBe(1);
        expectClose(sampledMatmul(dy.t, x.t, pattern).dataSync(), ref, "bfloat16", "sampledMatmul on the patch tile");
        const loaded = backend.autotuneRecords().filter(isOurs);
        expect(loaded.map((r) => [r.route, r.timings.length])).toEqual([["wgmma patch tile", 0]]);

        // A pattern first uploaded while autotuning was off has records only where the fixed rules may take the tile; one
        // below density 0.1 has none: not a candidate.
        const routesOf = (p: BsrPattern) => {
          backend.clearAutotune();
          sampledMatmul(dy.t, x.t, p).dispose();
          return backend.autotuneRecords().find((r) => r.product === "sampledMatmul" && r.nnzBlocks === p.nnzBlocks && r.m === m)?.timings.map((t) => t.route);
        };
        const uploadedUntuned = BsrPattern.random([rows, cols], { blockShape: [32, 32], density: 0.2, seed: 62 });
        backend.setAutotune(false);
        try {
          sampledMatmul(dy.t, x.t, uploadedUntuned).dispose();
        } finally {
          backend.setAutotune(true);
        }
        const untunedRoutes = routesOf(uploadedUntuned);
        expect(untunedRoutes?.length, "uploaded while autotuning was off: tuned now").toBeGreaterThan(0);
        const forced = process.env.BLOCKSPARSE_CUDA_PATCH_DW;
        const rulesTakeTile = forced === "1" || (forced !== "0" && backend.device.memoryBandwidth >= 4.5e12);
        if (rulesTakeTile) expect(untunedRoutes, "records built for the fixed rules' band").toContain("wgmma patch tile");
        else expect(untunedRoutes).not.toContain("wgmma patch tile");
        const sparse = BsrPattern.random([rows, cols], { blockShape: [32, 32], density: 0.06, seed: 63 });
        const sparseRoutes = routesOf(sparse);
        expect(sparseRoutes?.length, "density 0.06: tuned").toBeGreaterThan(0);
        expect(sparseRoutes).not.toContain("wgmma patch tile");
      });
    } finally {
      backend.clearAutotune();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a block shape with no tensor-core tile keeps the fixed rules while autotuning (no records) and stays exact", () => {
    const backend = useCuda();
    const next = random(11);
    // 8x32 blocks: no tile, so no routes to time; the rules take the dense route here (density 0.5, 2^29 FLOPs).
    const pattern = BsrPattern.random([256, 512], { blockShape: [8, 32], density: 0.5, seed: 11 });
    tidy(() => {
      const before = backend.autotuneRecords().length;
      const m = 2048;
      const values = randomTensor(next, [pattern.nnzBlocks, 8, 32], "bfloat16");
      const bias = randomTensor(next, [256], "bfloat16");
      const x = randomTensor(next, [m, 512], "bfloat16");
      const dy = randomTensor(next, [m, 256], "bfloat16");
      const ref = references(pattern, values.values, x.values, dy.values, bias.values, m);
      expectClose(bsrLinear(x.t, values.t, pattern, bias.t).dataSync(), ref.y, "bfloat16", "bsrLinear 8x32");
      expectClose(bsrMatmul(dy.t, values.t, pattern).dataSync(), ref.dx, "bfloat16", "bsrMatmul 8x32");
      expectClose(sampledMatmul(dy.t, x.t, pattern).dataSync(), ref.dw, "bfloat16", "sampledMatmul 8x32");
      expect(backend.autotuneRecords().length).toBe(before);
    });
  });

  test("decoding-size bsrLinear and float32 products keep their fixed routes (no records) and stay exact", () => {
    const backend = useCuda();
    const next = random(5);
    const pattern = BsrPattern.random([256, 128], { blockShape: [64, 64], density: 0.5, seed: 5 });
    tidy(() => {
      const before = backend.autotuneRecords().length;
      const values = randomTensor(next, [pattern.nnzBlocks, 64, 64], "bfloat16");
      const bias = randomTensor(next, [256], "bfloat16");
      const x = randomTensor(next, [8, 128], "bfloat16");
      const dy = randomTensor(next, [8, 256], "bfloat16");
      const ref = references(pattern, values.values, x.values, dy.values, bias.values, 8);
      expectClose(bsrLinear(x.t, values.t, pattern, bias.t).dataSync(), ref.y, "bfloat16", "bsrLinear, 8 tokens");
      expect(backend.autotuneRecords().length).toBe(before);
      const values32 = randomTensor(next, [pattern.nnzBlocks, 64, 64], "float32");
      const x32 = randomTensor(next, [300, 128], "float32");
      const dy32 = randomTensor(next, [300, 256], "float32");
      const bias32 = randomTensor(next, [256], "float32");
      const ref32 = references(pattern, values32.values, x32.values, dy32.values, bias32.values, 300);
      expectClose(bsrLinear(x32.t, values32.t, pattern, bias32.t).dataSync(), ref32.y, "float32", "bsrLinear float32");
      expectClose(sampledMatmul(dy32.t, x32.t, pattern).dataSync(), ref32.dw, "float32", "sampledMatmul float32");
      expect(backend.autotuneRecords().length).toBe(before);
    });
  });

  test("saveAutotune / loadAutotune: a later process starts with the saved choices and times nothing", () => {
    const backend = useCuda();
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-autotune-"));
    try {
      const file = join(dir, "autotune.json");
      const next = random(77);
      const pattern = BsrPattern.random([256, 512], { blockShape: [64, 64], density: 0.5, seed: 77 });
      tidy(() => {
        const values = randomTensor(next, [pattern.nnzBlocks, 64, 64], "bfloat16");
        const bias = randomTensor(next, [256], "bfloat16");
        const x = randomTensor(next, [700, 512], "bfloat16");
        const dy = randomTensor(next, [700, 256], "bfloat16");
        const ref = references(pattern, values.values, x.values, dy.values, bias.values, 700);
        const run = () => ({
          y: bsrLinear(x.t, values.t, pattern, bias.t).dataSync(),
          dw: sampledMatmul(dy.t, x.t, pattern).dataSync(),
        });
        run();
        const tuned = backend.autotuneRecords();
        expect(tuned.length).toBeGreaterThanOrEqual(2);
        expect(backend.saveAutotune(file)).toBe(tuned.length);
        const saved = JSON.parse(readFileSync(file, "utf8"));
        expect(saved.device.name).toBe(backend.device.name);
        expect(saved.records.length).toBe(tuned.length);

        // As a new process would: nothing tuned, then the file's choices, no timing on the next calls.
        backend.clearAutotune();
        expect(backend.loadAutotune(file)).toEqual({ imported: tuned.length, records: tuned.length, sameDevice: true });
        const loaded = backend.autotuneRecords();
        const key = (r: (typeof tuned)[number]) => `${r.product} ${r.dtype} ${r.m} ${r.rows} ${r.cols} ${r.nnzBlocks} ${r.bias}`;
        const byKey = new Map(loaded.map((r) => [key(r), r]));
        for (const r of tuned) {
          const again = byKey.get(key(r));
          expect(again?.choice, `${r.product}: the saved choice`).toEqual(r.choice);
          expect(again?.route).toBe(r.route);
          expect(again?.timings).toEqual([]);
        }
        const out = run();
        expectClose(out.y, ref.y, "bfloat16", "bsrLinear on the loaded route");
        expectClose(out.dw, ref.dw, "bfloat16", "sampledMatmul on the loaded route");
        expect(backend.autotuneRecords().length, "no shape tuned again").toBe(tuned.length);
        // Loading again adds nothing: each shape already has its record.
        expect(backend.loadAutotune(file).imported).toBe(0);

        // Measured on another kind of GPU: left out whole.
        const other = join(dir, "other.json");
        writeFileSync(other, JSON.stringify({ ...saved, device: { ...saved.device, name: "another GPU" } }));
        backend.clearAutotune();
        expect(backend.loadAutotune(other)).toEqual({ imported: 0, records: tuned.length, sameDevice: false });
        expect(backend.autotuneRecords()).toEqual([]);

        // A record out of range names its field; a missing file names itself.
        const bad = join(dir, "bad.json");
        writeFileSync(bad, JSON.stringify({ ...saved, records: [{ ...saved.records[0], choice: { ...saved.records[0].choice, path: "tiles" } }] }));
        expect(() => backend.loadAutotune(bad)).toThrow(AutotuneCacheError);
        expect(() => backend.loadAutotune(bad)).toThrow(/records\.0\.choice\.path/);
        expect(() => backend.loadAutotune(join(dir, "missing.json"))).toThrow(/missing\.json: cannot read it/);
        expect(backend.autotuneRecords()).toEqual([]);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("useAutotuneCache (BLOCKSPARSE_CUDA_AUTOTUNE_CACHE): loads the file, tunes what it lacks, writes all back at exit", () => {
    const backend = useCuda();
    const dir = mkdtempSync(join(tmpdir(), "blocksparse-autotune-env-"));
    const exitBefore = process.listeners("exit");
    try {
      const file = join(dir, "cache.json");
      const next = random(91);
      const pattern = BsrPattern.random([256, 256], { blockShape: [32, 32], density: 0.5, seed: 91 });
      tidy(() => {
        const values = randomTensor(next, [pattern.nnzBlocks, 32, 32], "float16");
        const x = randomTensor(next, [500, 256], "float16");
        const dy = randomTensor(next, [500, 256], "float16");
        backend.clearAutotune();
        bsrLinear(x.t, values.t, pattern).dataSync();
        backend.saveAutotune(file);
        backend.clearAutotune();
        backend.setAutotune(false);
        backend.useAutotuneCache(file);
        expect(backend.setAutotune(true), "autotuning was turned on").toBe(true);
        expect(backend.autotuneRecords().map((r) => r.product)).toEqual(["bsrLinear"]);
        // A shape the file lacks tunes now; both are written back when the process exits.
        bsrMatmul(dy.t, values.t, pattern).dataSync();
        // Called again (a CLI per run, a loop): still one exit listener, which writes each file once.
        for (let i = 0; i < 11; i++) backend.useAutotuneCache(file);
        const added = process.listeners("exit").filter((l) => !exitBefore.includes(l));
        expect(added.length).toBe(1);
        (added[0] as () => void)();
        process.removeListener("exit", added[0]);
        const written = JSON.parse(readFileSync(file, "utf8"));
        expect(written.records.map((r: { product: string }) => r.product).sort()).toEqual(["bsrLinear", "bsrMatmul"]);
      });
      // A broken file warns and starts from scratch.
      const broken = join(dir, "broken.json");
      writeFileSync(broken, "not json");
      const warnings: string[] = [];
      const onWarning = (w: Error) => warnings.push(w.message);
      process.on("warning", onWarning);
      try {
        backend.useAutotuneCache(broken);
      } finally {
        for (const l of process.listeners("exit").filter((l) => !exitBefore.includes(l))) process.removeListener("exit", l);
      }
      return new Promise<void>((resolve) => {
        setImmediate(() => {
          process.removeListener("warning", onWarning);
          expect(warnings.some((m) => /broken\.json: not JSON.*tuning from scratch/.test(m))).toBe(true);
          resolve();
        });
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("setAutotune refuses a non-boolean and reports the previous setting", () => {
    const backend = useCuda();
    expect(() => backend.setAutotune("yes" as unknown as boolean)).toThrow(/setAutotune/);
    expect(backend.setAutotune(true)).toBe(true);
  });
});
