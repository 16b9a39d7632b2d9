import { BsrMatrix, BsrPattern, SeededRandom, bsrMatricesToSafetensors, decodeSafetensors, encodeSafetensors, getBsrMatrix } from "@blocksparse/format";
import { measure, timingRecord } from "../measure";
import type { BenchRecord } from "../record";
import { type Check, checkEqual } from "../validate";
import type { CaseGroup, Suite, SuiteConfig } from "./types";

const DENSITY = 0.25;
const BLOCK = 32;

function toRecord(name: string, params: Record<string, number | string>, measured: ReturnType<typeof measure>, metrics: Record<string, number>): BenchRecord {
  return {
    suite: "format",
    name,
    params,
    checks: measured.checks,
    timing: timingRecord(measured),
    metrics,
  };
}

function mbPerSecond(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1e3);
}

/** Float64 block norms, and whether every kept block is at least as strong as every dropped one. */
export function checkStrongestBlocks(dense: Float32Array, size: number, block: number, pattern: BsrPattern): Check {
  const blocksPerSide = size / block;
  const norms = new Float64Array(blocksPerSide * blocksPerSide);
  for (let r = 0; r < size; r++) {
    for (let c = 0; c < size; c++) norms[Math.floor(r / block) * blocksPerSide + Math.floor(c / block)] += dense[r * size + c] ** 2;
  }
  const mask = pattern.blockMask();
  let weakestKept = Number.POSITIVE_INFINITY;
  let strongestDropped = 0;
  for (let i = 0; i < norms.length; i++) {
    if (mask[i]) weakestKept = Math.min(weakestKept, norms[i]);
    else strongestDropped = Math.max(strongestDropped, norms[i]);
  }
  const expected = Math.round(DENSITY * norms.length);
  const ok = pattern.nnzBlocks === expected && weakestKept >= strongestDropped;
  return {
    what: "kept blocks are the strongest",
    relError: ok ? 0 : Number.POSITIVE_INFINITY,
    tolerance: 0,
    ok,
    ...(ok ? {} : { detail: `${pattern.nnzBlocks} blocks kept (expected ${expected}), weakest kept ${weakestKept}, strongest dropped ${strongestDropped}` }),
  };
}

/** The column index built by sorting (block column, block row) pairs: an independent reference. */
export function referenceColumnIndex(pattern: BsrPattern): { blockColPtr: Int32Array; blockRowIdx: Int32Array; valueIndex: Int32Array } {
  const entries: Array<[number, number, number]> = [];
  for (let row = 0; row < pattern.blockRows; row++) {
    for (let k = pattern.blockRowPtr[row]; k < pattern.blockRowPtr[row + 1]; k++) entries.push([pattern.blockColIdx[k], row, k]);
  }
  entries.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const blockColPtr = new Int32Array(pattern.blockCols + 1);
  for (const [col] of entries) blockColPtr[col + 1]++;
  for (let col = 0; col < pattern.blockCols; col++) blockColPtr[col + 1] += blockColPtr[col];
  return { blockColPtr, blockRowIdx: Int32Array.from(entries, (e) => e[1]), valueIndex: Int32Array.from(entries, (e) => e[2]) };
}

function formatGroup(config: SuiteConfig): CaseGroup {
  const size = config.quick ? 1024 : 2048;
  const params = { rows: size, cols: size, blockSize: BLOCK, density: DENSITY, dtype: "float32" };
  const dense = new Float32Array(size * size);
  new SeededRandom(7).fillNormal(dense, 0, 1);
  const denseBytes = dense.byteLength;
  const plan = config.plan;
  let matrix: BsrMatrix | undefined;
  const getMatrix = (): BsrMatrix => (matrix ??= BsrMatrix.fromDense(dense, [size, size], { blockShape: [BLOCK, BLOCK], density: DENSITY }));
  return {
    cases: [
      {
        suite: "format",
        name: "dense → BSR",
        params,
        execute: () => {
          const measured = measure(
            {
              name: "dense → BSR",
              run: () => BsrMatrix.fromDense(dense, [size, size], { blockShape: [BLOCK, BLOCK], density: DENSITY }),
              validate: (m) => {
                const back = m.toDense();
                const mask = m.pattern.blockMask();
                const expected = new Float32Array(dense.length);
                for (let i = 0; i < dense.length; i++) {
                  const r = Math.floor(i / size);
                  const c = i % size;
                  if (mask[Math.floor(r / BLOCK) * (size / BLOCK) + Math.floor(c / BLOCK)]) expected[i] = dense[i];
                }
                return [checkStrongestBlocks(dense, size, BLOCK, m.pattern), checkEqual("values of the kept blocks, zeros elsewhere", back, expected)];
              },
            },
            plan,
          );
          return toRecord("dense → BSR", params, measured, { mbPerSecond: mbPerSecond(denseBytes, measured.summary.median), bytes: denseBytes });
        },
      },
      {
        suite: "format",
        name: "column index + coordinates",
        params,
        execute: () => {
          const { pattern } = getMatrix();
          const init = { shape: pattern.shape, blockShape: pattern.blockShape, blockRowPtr: pattern.blockRowPtr, blockColIdx: pattern.blockColIdx };
          const expected = referenceColumnIndex(pattern);
          const measured = measure(
            {
              name: "column index",
              // A fresh pattern each call, since the indices are cached per pattern.
              run: () => {
                const fresh = new BsrPattern(init);
                return { index: fresh.columnIndex, coordinates: fresh.coordinates };
              },
              validate: ({ index, coordinates }) => [
                checkEqual("blockColPtr", index.blockColPtr, expected.blockColPtr),
                checkEqual("blockRowIdx", index.blockRowIdx, expected.blockRowIdx),
                checkEqual("valueIndex", index.valueIndex, expected.valueIndex),
                checkEqual("coordinates.blockCol", coordinates.blockCol, pattern.blockColIdx),
              ],
            },
            plan,
          );
          return toRecord("column index + coordinates", params, measured, { nnzBlocks: pattern.nnzBlocks, blocksPerSecond: pattern.nnzBlocks / (measured.summary.median / 1e3) });
        },
      },
      {
        suite: "format",
        name: "safetensors write",
        params,
        execute: () => {
          const m = getMatrix();
          const content = bsrMatricesToSafetensors({ weight: m });
          const measured = measure(
            {
              name: "safetensors write",
              run: () => encodeSafetensors(content.tensors, content.metadata),
              validate: (bytes) => [checkEqual("values read back", getBsrMatrix(decodeSafetensors(bytes), "weight").values, m.values)],
            },
            plan,
          );
          const bytes = encodeSafetensors(content.tensors, content.metadata).byteLength;
          return toRecord("safetensors write", params, measured, { mbPerSecond: mbPerSecond(bytes, measured.summary.median), bytes });
        },
      },
      {
        suite: "format",
        name: "safetensors read",
        params,
        execute: () => {
          const m = getMatrix();
          const content = bsrMatricesToSafetensors({ weight: m });
          const bytes = encodeSafetensors(content.tensors, content.metadata);
          const measured = measure(
            {
              name: "safetensors read",
              run: () => getBsrMatrix(decodeSafetensors(bytes), "weight"),
              validate: (back) => [
                checkEqual("values", back.values, m.values),
                checkEqual("blockRowPtr", back.pattern.blockRowPtr, m.pattern.blockRowPtr),
                checkEqual("blockColIdx", back.pattern.blockColIdx, m.pattern.blockColIdx),
              ],
            },
            plan,
          );
          return toRecord("safetensors read", params, measured, { mbPerSecond: mbPerSecond(bytes.byteLength, measured.summary.median), bytes: bytes.byteLength });
        },
      },
    ],
  };
}

export const formatSuite: Suite = {
  name: "format",
  description: "dense to BSR, the column index, safetensors write and read (host work, MB/s)",
  plan: (config) => [formatGroup(config)],
};
