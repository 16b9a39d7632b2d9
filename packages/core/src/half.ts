/** Half-precision conversions come from @blocksparse/format (one implementation everywhere). */
export {
  bfloat16BitsToFloat32,
  bfloat16BitsToFloat32Array,
  bfloat16BitsToFloat32Into,
  float16BitsToFloat32,
  float16BitsToFloat32Array,
  float16BitsToFloat32Into,
  float32ArrayToBfloat16Bits,
  float32ArrayToFloat16Bits,
  float32ToBfloat16Bits,
  float32ToBfloat16BitsInto,
  float32ToFloat16Bits,
  float32ToFloat16BitsInto,
} from "@blocksparse/format";
