/**
 * GFLOP/s of the js backend's compute functions against straightforward loops, single
 * threaded. Run: pnpm -F @blocksparse/core exec tsx bench/compute.bench.ts [--quick]
 * Flops count the non-zero work only: 2 * M * nnz * R * C for the block-sparse products.
 */
import { BsrPattern, SeededRandom } from "@blocksparse/format";
import { blockNormsF32, bsrLinearF32, bsrMatmulF32, matmulF32, sampledMatmulF32 } from "../src/backends/js/compute";

const quick = process.argv.includes("--quick");
const minSeconds = quick ? 0.3 : 1.5;

const generator = new SeededRandom(42);
const random = (): number => generator.next();
const randomF32 = (length: number): Float32Array => Float32Array.from({ length }, () => 2 * random() - 1);

/**
 * Best seconds per call, by the wall clock and by this process's CPU time, over repeated
 * calls lasting at least minSeconds (after one warm-up call). On a shared machine the CPU
 * time is the steadier figure: it leaves out the time other processes held the core.
 */
function time(run: () => void): { wall: number; cpu: number } {
  run();
  let wall = Number.POSITIVE_INFINITY;
  let cpu = Number.POSITIVE_INFINITY;
  let total = 0;
  while (total < minSeconds) {
    const startCpu = process.cpuUsage();
    const start = process.hrtime.bigint();
    run();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const used = process.cpuUsage(startCpu);
    wall = Math.min(wall, seconds);
    cpu = Math.min(cpu, (used.user + used.system) / 1e6);
    total += seconds;
  }
  return { wall, cpu };
}

const header = ["kernel", "naive GFLOP/s (cpu)", "blocked GFLOP/s (cpu)", "blocked GFLOP/s (wall)", "blocked ms (cpu)", "speedup"];
const rows: string[][] = [];
function report(name: string, flops: number, naive: (() => void) | null, blocked: () => void): void {
  const fast = time(blocked);
  const slow = naive ? time(naive) : null;
  const gflops = (seconds: number) => (flops / seconds / 1e9).toFixed(2);
  const row = [name, slow ? gflops(slow.cpu) : "-", gflops(fast.cpu), gflops(fast.wall), (fast.cpu * 1e3).toFixed(1), slow ? `${(slow.cpu / fast.cpu).toFixed(1)}x` : "-"];
  rows.push(row);
  console.log(row.join("\t"));
}

// Straightforward loops, as a baseline: the i-p-j order with a float64 row accumulator.
function naiveMatmul(a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number): void {
  const row = new Float64Array(n);
  for (let i = 0; i < m; i++) {
    row.fill(0);
    for (let p = 0; p < k; p++) {
      const aip = a[i * k + p];
      for (let j = 0, o = p * n; j < n; j++) row[j] += aip * b[o + j];
    }
    c.set(row, i * n);
  }
}

interface Pattern {
  rows: number;
  cols: number;
  blockHeight: number;
  blockWidth: number;
  blockRows: number;
  blockCols: number;
  nnz: number;
  blockRowPtr: Int32Array;
  blockColIdx: Int32Array;
  blockColPtr: Int32Array;
  blockRowIdx: Int32Array;
  valueIndex: Int32Array;
}

/** Exactly round(density * blocks) blocks, spread evenly over the rows. */
function pattern(rows: number, cols: number, block: number, density: number): Pattern {
  const blockRows = rows / block;
  const blockCols = cols / block;
  const perRow = Math.round(density * blockCols);
  const flat: number[] = [];
  for (let br = 0; br < blockRows; br++) {
    for (const bc of generator.sample(blockCols, perRow)) flat.push(br * blockCols + bc);
  }
  const built = BsrPattern.fromFlatBlocks([rows, cols], [block, block], flat);
  const { blockRowPtr, blockColIdx, nnzBlocks: nnz } = built;
  const { blockColPtr, blockRowIdx, valueIndex } = built.columnIndex;
  return { rows, cols, blockHeight: block, blockWidth: block, blockRows, blockCols, nnz, blockRowPtr, blockColIdx, blockColPtr, blockRowIdx, valueIndex };
}

// The block-sparse baselines walk the blocks with the innermost loop over one block's row.
function naiveLinear(p: Pattern, x: Float32Array, values: Float32Array, y: Float32Array, tokens: number): void {
  const R = p.blockHeight;
  const C = p.blockWidth;
  y.fill(0, 0, tokens * p.rows);
  for (let t = 0; t < tokens; t++) {
    for (let br = 0; br < p.blockRows; br++) {
      for (let q = p.blockRowPtr[br]; q < p.blockRowPtr[br + 1]; q++) {
        const xo = t * p.cols + p.blockColIdx[q] * C;
        for (let r = 0; r < R; r++) {
          let acc = 0;
          for (let c = 0, v = (q * R + r) * C; c < C; c++) acc += values[v + c] * x[xo + c];
          y[t * p.rows + br * R + r] += acc;
        }
      }
    }
  }
}

function naiveBsrMatmul(p: Pattern, dy: Float32Array, values: Float32Array, dx: Float32Array, tokens: number): void {
  const R = p.blockHeight;
  const C = p.blockWidth;
  dx.fill(0, 0, tokens * p.cols);
  for (let t = 0; t < tokens; t++) {
    for (let br = 0; br < p.blockRows; br++) {
      for (let q = p.blockRowPtr[br]; q < p.blockRowPtr[br + 1]; q++) {
        const xo = t * p.cols + p.blockColIdx[q] * C;
        for (let r = 0; r < R; r++) {
          const g = dy[t * p.rows + br * R + r];
          for (let c = 0, v = (q * R + r) * C; c < C; c++) dx[xo + c] += g * values[v + c];
        }
      }
    }
  }
}

function naiveSampled(p: Pattern, dy: Float32Array, x: Float32Array, dw: Float32Array, tokens: number): void {
  const R = p.blockHeight;
  const C = p.blockWidth;
  dw.fill(0, 0, p.nnz * R * C);
  for (let t = 0; t < tokens; t++) {
    for (let br = 0; br < p.blockRows; br++) {
      for (let q = p.blockRowPtr[br]; q < p.blockRowPtr[br + 1]; q++) {
        const xo = t * p.cols + p.blockColIdx[q] * C;
        for (let r = 0; r < R; r++) {
          const g = dy[t * p.rows + br * R + r];
          for (let c = 0, w = (q * R + r) * C; c < C; c++) dw[w + c] += g * x[xo + c];
        }
      }
    }
  }
}

console.log(`node ${process.version}, single thread${quick ? ", quick" : ""}`);
console.log(header.join("\t"));

for (const size of [512, 1024]) {
  const a = randomF32(size * size);
  const b = randomF32(size * size);
  const c = new Float32Array(size * size);
  const flops = 2 * size ** 3;
  report(`matmul ${size}^3`, flops, () => naiveMatmul(a, b, c, size, size, size), () => matmulF32({ a, b, c, m: size, n: size, k: size }));
  report(`matmul ${size}^3 A^T B^T`, flops, null, () => matmulF32({ a, b, c, m: size, n: size, k: size, transposeA: true, transposeB: true }));
}

const tokens = 512;
const size = 1024;
const block = 32;
for (const density of [0.25, 0.5, 1]) {
  const p = pattern(size, size, block, density);
  const values = randomF32(p.nnz * block * block);
  const x = randomF32(tokens * size);
  const dy = randomF32(tokens * size);
  const out = new Float32Array(tokens * size);
  const dw = new Float32Array(p.nnz * block * block);
  const flops = 2 * tokens * p.nnz * block * block;
  const tag = `M=${tokens} ${size}x${size} b${block} d=${density}`;
  report(`bsrLinear ${tag}`, flops, () => naiveLinear(p, x, values, out, tokens), () => bsrLinearF32({ ...p, x, values, y: out, tokens }));
  report(`bsrMatmul ${tag}`, flops, () => naiveBsrMatmul(p, dy, values, out, tokens), () => bsrMatmulF32({ ...p, dy, values, dx: out, tokens }));
  report(`sampledMatmul ${tag}`, flops, () => naiveSampled(p, dy, x, dw, tokens), () => sampledMatmulF32({ ...p, dy, x, dw, tokens }));
}

// One token (a vector times a matrix): the few-row loops.
{
  const a = randomF32(size);
  const b = randomF32(size * size);
  const c = new Float32Array(size);
  report(`matmul 1x${size}x${size}`, 2 * size * size, () => naiveMatmul(a, b, c, 1, size, size), () => matmulF32({ a, b, c, m: 1, n: size, k: size }));
  const p = pattern(size, size, block, 0.5);
  const values = randomF32(p.nnz * block * block);
  const x = randomF32(size);
  const y = new Float32Array(size);
  const flops = 2 * p.nnz * block * block;
  report(`bsrLinear M=1 ${size}x${size} b${block} d=0.5`, flops, () => naiveLinear(p, x, values, y, 1), () => bsrLinearF32({ ...p, x, values, y, tokens: 1 }));
  report(`bsrMatmul M=1 ${size}x${size} b${block} d=0.5`, flops, () => naiveBsrMatmul(p, x, values, y, 1), () => bsrMatmulF32({ ...p, dy: x, values, dx: y, tokens: 1 }));
}

{
  const blockCount = 1024;
  const blockSize = 32 * 32;
  const values = randomF32(blockCount * blockSize);
  const norms = new Float32Array(blockCount);
  report(`blockNorms ${blockCount} x 32x32`, 2 * blockCount * blockSize, null, () => blockNormsF32({ values, norms, blockCount, blockSize }));
}

console.log(`\n| ${header.join(" | ")} |\n|---|${"---:|".repeat(header.length - 1)}`);
for (const row of rows) console.log(`| ${row.join(" | ")} |`);
