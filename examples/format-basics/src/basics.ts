import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BsrMatrix, bsrMatricesToSafetensors, decodeSafetensors, encodeSafetensors, getBsrMatrix } from "@blocksparse/format";
import { loadBsrMatrices, saveBsrMatrices } from "@blocksparse/format/node";

export interface FormatBasicsResult {
  shape: readonly [number, number];
  blockShape: readonly [number, number];
  nnzBlocks: number;
  density: number;
  /** Largest |dense - kept| over the blocks that were kept (0: they are exact). */
  keptBlocksError: number;
  torchValuesShape: [number, number, number];
  scipyIndptr: number[];
  fileBytes: number;
  /** The matrix read back from bytes and from a file equals the one written, bit for bit. */
  bytesRoundTripExact: boolean;
  fileRoundTripExact: boolean;
  /** float16 copy read back: largest error against the float32 values. */
  float16MaxError: number;
  transposeShape: readonly [number, number];
}

function sameBits(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

/** The format tour: dense -> BSR (strongest blocks), PyTorch/SciPy layouts, safetensors in memory and on disk. */
export async function runFormatBasics(log: (line: string) => void = () => {}): Promise<FormatBasicsResult> {
  // A dense 64 x 96 weight, smooth so that some regions are clearly stronger than others.
  const shape = [64, 96] as const;
  const dense = new Float32Array(shape[0] * shape[1]);
  for (let r = 0; r < shape[0]; r++) {
    for (let c = 0; c < shape[1]; c++) dense[r * shape[1] + c] = Math.sin(r / 7) * Math.cos(c / 11);
  }

  // Keep the 25% strongest 16 x 32 blocks (by L2 norm).
  const matrix = BsrMatrix.fromDense(dense, shape, { blockShape: [16, 32], density: 0.25 });
  log(`BSR ${matrix.shape.join("x")}, blocks ${matrix.blockShape.join("x")}: ${matrix.nnzBlocks} of ${matrix.blockRows * matrix.blockCols} kept`);
  log(`  blockRowPtr [${matrix.blockRowPtr.join(", ")}]  blockColIdx [${matrix.blockColIdx.join(", ")}]`);

  const back = matrix.toDense();
  const mask = matrix.blockMask();
  let keptBlocksError = 0;
  for (let r = 0; r < shape[0]; r++) {
    for (let c = 0; c < shape[1]; c++) {
      if (!mask[Math.floor(r / 16) * matrix.blockCols + Math.floor(c / 32)]) continue;
      keptBlocksError = Math.max(keptBlocksError, Math.abs(back[r * shape[1] + c] - dense[r * shape[1] + c]));
    }
  }

  // The layouts PyTorch and SciPy take, as plain typed arrays.
  const torch = matrix.toTorch();
  log(`  torch.sparse_bsr_tensor(crow[${torch.crowIndices.length}], col[${torch.colIndices.length}], values${JSON.stringify(torch.valuesShape)}, size=${JSON.stringify(torch.size)})`);
  const scipy = matrix.toScipy();
  log(`  scipy.sparse.bsr_matrix((data${JSON.stringify(scipy.dataShape)}, indices, indptr), shape=${JSON.stringify(scipy.shape)})`);
  const fromScipy = BsrMatrix.fromScipy(scipy);

  // One safetensors file: the matrix, a float16 copy, and a dense bias.
  const half = matrix.toDType("float16");
  const bias = { dtype: "F32" as const, shape: [shape[0]], data: new Float32Array(shape[0]).fill(0.5) };
  const content = bsrMatricesToSafetensors(
    { "layer.weight": matrix, "layer.weight_f16": half },
    { tensors: new Map([["layer.bias", bias]]), metadata: { example: "format-basics" } },
  );
  const bytes = encodeSafetensors(content.tensors, content.metadata);
  const decoded = decodeSafetensors(bytes);
  const read = getBsrMatrix(decoded, "layer.weight");
  const readHalf = getBsrMatrix(decoded, "layer.weight_f16").valuesAsFloat32();
  let float16MaxError = 0;
  for (let i = 0; i < readHalf.length; i++) {
    float16MaxError = Math.max(float16MaxError, Math.abs(readHalf[i] - matrix.values[i]));
  }
  log(`  safetensors: ${bytes.length} bytes, tensors ${[...decoded.tensors.keys()].join(", ")}`);

  const directory = await mkdtemp(join(tmpdir(), "format-basics-"));
  let fileRoundTripExact: boolean;
  try {
    const path = join(directory, "weights.safetensors");
    await saveBsrMatrices(path, { "layer.weight": matrix });
    const loaded = (await loadBsrMatrices(path)).get("layer.weight");
    fileRoundTripExact = loaded?.pattern.equals(matrix.pattern) === true && sameBits(loaded.values, matrix.values);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }

  const transposed = matrix.transpose();
  log(`  transpose: ${transposed.shape.join("x")} with ${transposed.blockShape.join("x")} blocks`);

  return {
    shape: matrix.shape,
    blockShape: matrix.blockShape,
    nnzBlocks: matrix.nnzBlocks,
    density: matrix.density,
    keptBlocksError,
    torchValuesShape: torch.valuesShape,
    scipyIndptr: Array.from(fromScipy.blockRowPtr),
    fileBytes: bytes.length,
    bytesRoundTripExact: read.pattern.equals(matrix.pattern) && sameBits(read.values, matrix.values),
    fileRoundTripExact,
    float16MaxError,
    transposeShape: transposed.shape,
  };
}
