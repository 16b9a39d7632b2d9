export { BsrFormatError, BsrIoError } from "./errors.js";
export {
  BSR_DTYPES,
  type BsrDType,
  type BsrValues,
  bfloat16BitsToFloat32,
  bfloat16BitsToFloat32Array,
  decodeValues,
  encodeValues,
  float16BitsToFloat32,
  float16BitsToFloat32Array,
  float32ArrayToBfloat16Bits,
  float32ArrayToFloat16Bits,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  isBsrDType,
} from "./dtype.js";
export { SeededRandom } from "./random.js";
export {
  type BsrColumnIndex,
  type BsrCoordinates,
  BsrPattern,
  type BsrPatternInit,
  type Shape2,
  divisors,
} from "./pattern.js";
export {
  BsrMatrix,
  type FromDenseOptions,
  type IndexArrayInput,
  type RandomMatrixOptions,
  type ScipyBsrInput,
  type ScipyBsrLayout,
  type TorchBsrInput,
  type TorchBsrLayout,
  type ValuesInput,
} from "./matrix.js";
export {
  decodeSafetensors,
  encodeSafetensors,
  encodeSafetensorsHeader,
  MAX_HEADER_BYTES,
  parseSafetensorsHeader,
  SAFETENSORS_DTYPES,
  type SafetensorsContent,
  type SafetensorsData,
  type SafetensorsDataTypes,
  type SafetensorsDType,
  type SafetensorsEntry,
  type SafetensorsLayout,
  type SafetensorsTensor,
  safetensorsDTypeSize,
} from "./safetensors.js";
export {
  BSR_LAYOUT,
  BSR_LAYOUT_VERSION,
  BSR_METADATA_SUFFIXES,
  BSR_TENSOR_SUFFIXES,
  type BsrExtraContent,
  bsrMatricesToSafetensors,
  bsrMatrixNames,
  getBsrMatrices,
  getBsrMatrix,
  putBsrMatrix,
} from "./bsr-safetensors.js";
// SciPy .npz files: the subpath @blocksparse/format/npz, so that a bundle without them leaves the zip code out.
