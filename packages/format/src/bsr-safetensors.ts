import * as z from "zod/mini";
import type { BsrDType } from "./dtype.js";
import { BsrFormatError, checkOptionKeys, parseWith } from "./errors.js";
import { BsrMatrix } from "./matrix.js";
import { checkMetadata, checkTensor, entriesOf, type SafetensorsContent, type SafetensorsDType, type SafetensorsTensor } from "./safetensors.js";

/**
 * A BSR matrix `<name>` in a safetensors file is three ordinary tensors, named as PyTorch's
 * BSR parts so that `torch.sparse_bsr_tensor(crow, col, values, size)` rebuilds it:
 *   `<name>.crow_indices` I32 [blockRows + 1], `<name>.col_indices` I32 [nnzBlocks],
 *   `<name>.values` F32 | F16 | BF16 [nnzBlocks, R, C] (read also: F64, and [nnz] for a CSR matrix's parts: 1 x 1 blocks),
 * and string metadata: `<name>.layout` = "bsr", `<name>.layout_version` = "1",
 * `<name>.shape` = "rows,cols", `<name>.block_shape` = "R,C", `<name>.dtype` = "float32" | ...
 */
export const BSR_LAYOUT = "bsr";
export const BSR_LAYOUT_VERSION = 1;

export const BSR_TENSOR_SUFFIXES = {
  crowIndices: ".crow_indices",
  colIndices: ".col_indices",
  values: ".values",
} as const;

export const BSR_METADATA_SUFFIXES = {
  layout: ".layout",
  layoutVersion: ".layout_version",
  shape: ".shape",
  blockShape: ".block_shape",
  dtype: ".dtype",
} as const;

const VALUE_DTYPES: Record<BsrDType, SafetensorsDType> = { float32: "F32", float16: "F16", bfloat16: "BF16" };
// F64 values (torch.float64, SciPy's default) are rounded to float32, as decodeScipyNpz does.
const BSR_DTYPE_OF: Partial<Record<SafetensorsDType, BsrDType>> = { F32: "float32", F16: "float16", BF16: "bfloat16", F64: "float32" };

// A number (a content built by hand) was "Invalid input".
const pair = { error: 'expected "<integer>,<integer>"' };
const pairSchema = z.string(pair).check(z.regex(/^\s*\d+\s*,\s*\d+\s*$/, pair));

function checkContent(content: SafetensorsContent): void {
  if (content === null || typeof content !== "object" || !(content.tensors instanceof Map)) {
    throw new BsrFormatError("content", `expected { tensors: Map, metadata }, got ${content === null ? "null" : typeof content}`);
  }
}

/** Refuses a tensor or metadata key of `content` that matrix `name` would write: it is the caller's, not to be overwritten. */
function refuseTakenKeys(content: SafetensorsContent, name: string): void {
  for (const suffix of [...Object.values(BSR_TENSOR_SUFFIXES), ...Object.values(BSR_METADATA_SUFFIXES)]) {
    const key = name + suffix;
    const tensor = content.tensors.has(key);
    if (tensor || Object.hasOwn(content.metadata, key)) throw new BsrFormatError(key, `a ${tensor ? "dense tensor" : "metadata entry"} has this name, which matrix "${name}" writes`);
  }
}

/**
 * Adds matrix `name` (three tensors and its metadata) to `content`, replacing one of that
 * name (one whose `<name>.crow_indices` tensor is there). Without one, a tensor or metadata key
 * the matrix would write is the caller's, and is refused rather than overwritten. The values
 * tensor shares the matrix's values (no copy, so a checkpoint is never held twice); the small
 * index tensors are copies, so editing them never touches the shared pattern.
 */
export function putBsrMatrix(content: SafetensorsContent, name: string, matrix: BsrMatrix): SafetensorsContent {
  checkContent(content);
  // Readers take missing metadata as none; a write needs an object to put the matrix's metadata in.
  if (content.metadata === null || typeof content.metadata !== "object") {
    throw new BsrFormatError("content.metadata", `expected an object of string to string to add "${String(name)}"'s metadata to, got ${String(content.metadata)}`);
  }
  if (typeof name !== "string" || name === "") throw new BsrFormatError("name", "expected a non-empty string");
  if (!(matrix instanceof BsrMatrix)) throw new BsrFormatError(name, "expected a BsrMatrix");
  matrix.validate();
  if (!content.tensors.has(name + BSR_TENSOR_SUFFIXES.crowIndices)) refuseTakenKeys(content, name);
  const [blockHeight, blockWidth] = matrix.blockShape;
  content.tensors.set(`${name}.crow_indices`, { dtype: "I32", shape: [matrix.blockRows + 1], data: matrix.blockRowPtr.slice() });
  content.tensors.set(`${name}.col_indices`, { dtype: "I32", shape: [matrix.nnzBlocks], data: matrix.blockColIdx.slice() });
  content.tensors.set(`${name}.values`, {
    dtype: VALUE_DTYPES[matrix.dtype],
    shape: [matrix.nnzBlocks, blockHeight, blockWidth],
    data: matrix.values,
  } as SafetensorsTensor);
  Object.assign(content.metadata, {
    [`${name}.layout`]: BSR_LAYOUT,
    [`${name}.layout_version`]: String(BSR_LAYOUT_VERSION),
    [`${name}.shape`]: `${matrix.shape[0]},${matrix.shape[1]}`,
    [`${name}.block_shape`]: `${blockHeight},${blockWidth}`,
    [`${name}.dtype`]: matrix.dtype,
  });
  return content;
}

/** Dense tensors (a Map or an object of name to tensor, as encodeSafetensors takes) and metadata to store beside matrices. */
export interface BsrExtraContent {
  tensors?: Map<string, SafetensorsTensor> | Record<string, SafetensorsTensor>;
  metadata?: Record<string, string>;
}

/**
 * A content holding the given matrices, plus any dense tensors and metadata (none may have a name or key that a
 * matrix writes: `<name>.values`, `<name>.shape`...).
 */
export function bsrMatricesToSafetensors(
  matrices: Map<string, BsrMatrix> | Record<string, BsrMatrix>,
  extra: BsrExtraContent = {},
): SafetensorsContent {
  // null extra content is none; a misspelt key (`metdata`) would drop what it holds from the file.
  checkOptionKeys(extra, ["tensors", "metadata"], "extra");
  // Checked before the spread, which would turn a Map into {} and drop its entries.
  const metadata = extra?.metadata === undefined || extra.metadata === null ? {} : checkMetadata(extra.metadata, "metadata");
  const content: SafetensorsContent = { tensors: new Map(entriesOf(extra?.tensors ?? {})), metadata: { ...metadata } };
  for (const [name, matrix] of entriesOf(matrices, "matrices")) {
    // A matrix's keys never repeat another matrix's, so any taken one is a dense tensor's or the extra metadata's.
    refuseTakenKeys(content, name);
    putBsrMatrix(content, name, matrix);
  }
  return content;
}

/**
 * Names of the BSR matrices in `content`: those with `.layout` metadata or a `.crow_indices` tensor. A key or tensor
 * that is its suffix alone (`.layout`, `.crow_indices`) names a matrix without a name, and is refused, naming it.
 */
export function bsrMatrixNames(content: SafetensorsContent): string[] {
  checkContent(content);
  const names = new Set<string>();
  const add = (key: string, suffix: string) => {
    if (key === suffix) throw new BsrFormatError(key, `empty matrix name (expected "<name>${suffix}")`);
    names.add(key.slice(0, -suffix.length));
  };
  for (const [key, value] of Object.entries(content.metadata ?? {})) {
    if (key.endsWith(BSR_METADATA_SUFFIXES.layout) && value === BSR_LAYOUT) add(key, BSR_METADATA_SUFFIXES.layout);
  }
  for (const key of content.tensors.keys()) {
    if (key.endsWith(BSR_TENSOR_SUFFIXES.crowIndices)) add(key, BSR_TENSOR_SUFFIXES.crowIndices);
  }
  return [...names].sort();
}

function requireTensor(content: SafetensorsContent, tensorName: string): SafetensorsTensor {
  const tensor = content.tensors.get(tensorName);
  if (tensor === undefined) throw new BsrFormatError(tensorName, "missing tensor");
  // A content built by hand is checked as a file's is: a null tensor, or one without a shape, was a TypeError.
  checkTensor(tensorName, tensor);
  return tensor;
}

function indexData(tensor: SafetensorsTensor, tensorName: string): Int32Array | BigInt64Array {
  if (tensor.dtype !== "I32" && tensor.dtype !== "I64") {
    throw new BsrFormatError(tensorName, `expected an I32 or I64 tensor, got ${tensor.dtype}`);
  }
  if (tensor.shape.length !== 1) {
    throw new BsrFormatError(tensorName, `expected a 1-D tensor, got shape ${JSON.stringify(tensor.shape)}`);
  }
  return tensor.data;
}

function parsePair(text: string | undefined, key: string): [number, number] | undefined {
  if (text === undefined) return undefined;
  const [first, second] = parseWith(pairSchema, text, key).split(",").map(Number);
  return [first, second];
}

/** Matrix `name` from `content`, validated (and checked against its metadata). */
export function getBsrMatrix(content: SafetensorsContent, name: string): BsrMatrix {
  checkContent(content);
  if (typeof name !== "string" || name === "") throw new BsrFormatError("name", `expected a matrix name, got ${String(name)}`);
  const metadata = content.metadata ?? {};
  const meta = (suffix: string): string | undefined =>
    Object.hasOwn(metadata, `${name}${suffix}`) ? metadata[`${name}${suffix}`] : undefined;
  const layout = meta(".layout");
  if (layout !== undefined && layout !== BSR_LAYOUT) {
    throw new BsrFormatError(`${name}.layout`, `expected "${BSR_LAYOUT}", got ${JSON.stringify(layout)}`);
  }
  const version = meta(".layout_version");
  if (version !== undefined && version !== String(BSR_LAYOUT_VERSION)) {
    throw new BsrFormatError(
      `${name}.layout_version`,
      `layout version ${JSON.stringify(version)} is not supported (this reader knows version ${BSR_LAYOUT_VERSION})`,
    );
  }
  const shape = parsePair(meta(".shape"), `${name}.shape`);
  if (shape === undefined) {
    throw new BsrFormatError(`${name}.shape`, 'missing metadata: the matrix shape, as "rows,cols"');
  }
  const crowName = `${name}.crow_indices`;
  const colName = `${name}.col_indices`;
  const valuesName = `${name}.values`;
  const crow = indexData(requireTensor(content, crowName), crowName);
  const col = indexData(requireTensor(content, colName), colName);
  const values = requireTensor(content, valuesName);
  const dtype = BSR_DTYPE_OF[values.dtype];
  if (dtype === undefined) {
    throw new BsrFormatError(valuesName, `values must be F32, F16, BF16 or F64, got ${values.dtype}`);
  }
  // 1-D values are a CSR matrix's parts (torch's sparse_csr_tensor: crow_indices, col_indices, values [nnz]): 1 x 1 blocks,
  // as decodeScipyNpz reads SciPy's CSR.
  if (values.shape.length !== 3 && values.shape.length !== 1) {
    throw new BsrFormatError(valuesName, `expected shape [nnzBlocks, R, C] (or [nnz] for CSR), got ${JSON.stringify(values.shape)}`);
  }
  const [blocks, blockRows, blockCols] = values.shape.length === 1 ? [values.shape[0], 1, 1] : values.shape;
  const declaredDType = meta(".dtype");
  if (declaredDType !== undefined && declaredDType !== (values.dtype === "F64" ? "float64" : dtype)) {
    throw new BsrFormatError(`${name}.dtype`, `metadata says ${declaredDType} but the values tensor is ${values.dtype}`);
  }
  const blockShape = parsePair(meta(".block_shape"), `${name}.block_shape`);
  if (blockShape !== undefined && (blockShape[0] !== blockRows || blockShape[1] !== blockCols)) {
    throw new BsrFormatError(
      `${name}.block_shape`,
      `metadata says ${blockShape.join(",")} but the values tensor has blocks of ${blockRows},${blockCols}`,
    );
  }
  // Errors name the file key they come from, never an argument of fromTorch.
  const fields: Record<string, string> = {
    crowIndices: crowName,
    colIndices: colName,
    values: valuesName,
    valuesShape: valuesName,
    "torch.valuesShape": valuesName,
    blockShape: valuesName,
    "torch.size": `${name}.shape`,
    shape: `${name}.shape`,
  };
  try {
    return BsrMatrix.fromTorch({
      crowIndices: crow,
      colIndices: col,
      values: values.dtype === "F64" ? Float32Array.from(values.data) : (values.data as Float32Array | Uint16Array),
      valuesShape: [blocks, blockRows, blockCols],
      size: shape,
      dtype,
    });
  } catch (error) {
    if (error instanceof BsrFormatError) {
      const field = fields[error.field];
      if (field !== undefined) throw new BsrFormatError(field, error.detail, error.position);
      throw new BsrFormatError(name, `${error.field}: ${error.detail}`, error.position);
    }
    throw error;
  }
}

/** Every BSR matrix in `content`, by name. */
export function getBsrMatrices(content: SafetensorsContent): Map<string, BsrMatrix> {
  return new Map(bsrMatrixNames(content).map((name) => [name, getBsrMatrix(content, name)]));
}
