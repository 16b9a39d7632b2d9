import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BsrFormatError,
  BsrMatrix,
  BsrPattern,
  decodeSafetensors,
  encodeSafetensors,
  getBsrMatrix,
  putBsrMatrix,
  type SafetensorsTensor,
} from "../src/index.js";
import { decodeScipyNpz, encodeScipyNpz } from "../src/npz.js";

/** A grid shape and block shape that divide evenly, small enough to be quick. */
const shapes = fc
  .record({ blockRows: fc.integer({ min: 1, max: 6 }), blockCols: fc.integer({ min: 1, max: 6 }), r: fc.integer({ min: 1, max: 4 }), c: fc.integer({ min: 1, max: 4 }) })
  .map(({ blockRows, blockCols, r, c }) => ({ shape: [blockRows * r, blockCols * c] as const, blockShape: [r, c] as const, blocks: blockRows * blockCols }));

const patterns = shapes.chain(({ shape, blockShape, blocks }) =>
  fc.array(fc.boolean(), { minLength: blocks, maxLength: blocks }).map((mask) => BsrPattern.fromMask(shape, blockShape, mask)),
);

const matrices = patterns.chain((pattern) =>
  fc
    .float32Array({ minLength: pattern.nnzBlocks * pattern.blockShape[0] * pattern.blockShape[1], maxLength: pattern.nnzBlocks * pattern.blockShape[0] * pattern.blockShape[1], noDefaultInfinity: true })
    .map((values) => BsrMatrix.fromPattern(pattern, values)),
);

const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe("properties of BsrPattern", () => {
  it("fromMask and blockMask are inverse", () => {
    fc.assert(
      fc.property(patterns, (pattern) => {
        const again = BsrPattern.fromMask(pattern.shape, pattern.blockShape, pattern.blockMask());
        expect(again.equals(pattern)).toBe(true);
      }),
    );
  });

  it("fromFlatBlocks accepts exactly the strictly ascending in-range integer lists", () => {
    fc.assert(
      fc.property(shapes, fc.array(fc.oneof(fc.integer({ min: -2, max: 40 }), fc.double({ noNaN: false })), { maxLength: 12 }), ({ shape, blockShape, blocks }, flat) => {
        const valid = flat.every((v, i) => Number.isInteger(v) && v >= 0 && v < blocks && (i === 0 || v > flat[i - 1]));
        let built: BsrPattern | undefined;
        try {
          built = BsrPattern.fromFlatBlocks(shape, blockShape, flat);
        } catch (error) {
          expect(error).toBeInstanceOf(BsrFormatError);
          expect((error as BsrFormatError).field).toBe("flatBlocks");
        }
        expect(built !== undefined).toBe(valid);
        if (built) {
          const mask = built.blockMask();
          // -0 is a valid name for block 0; toEqual tells -0 from 0, so compare the indices as numbers.
          expect([...mask.keys()].filter((i) => mask[i] === 1)).toEqual(flat.map((v) => v + 0));
        }
      }),
    );
  });

  it("transposing twice gives an equal pattern back", () => {
    fc.assert(
      fc.property(patterns, (pattern) => {
        expect(pattern.transpose().pattern.transpose().pattern.equals(pattern)).toBe(true);
      }),
    );
  });
});

describe("properties of BsrMatrix", () => {
  it("fromDense with the matrix's own mask rebuilds it; toDense keeps every bit", () => {
    fc.assert(
      fc.property(matrices, (matrix) => {
        const again = BsrMatrix.fromDense(matrix.toDense(), matrix.shape, { blockShape: matrix.blockShape, mask: matrix.blockMask() });
        expect(again.pattern.equals(matrix.pattern)).toBe(true);
        expect(sameBits(again.values as Float32Array, matrix.values as Float32Array)).toBe(true);
      }),
    );
  });

  it("transpose twice is the identity on values", () => {
    fc.assert(
      fc.property(matrices, (matrix) => {
        expect(sameBits(matrix.transpose().transpose().toDense(), matrix.toDense())).toBe(true);
      }),
    );
  });
});

describe("properties of the file formats", () => {
  const names = fc.oneof(fc.string({ minLength: 1, maxLength: 12 }), fc.constantFrom("__proto__", "constructor", "toString", "a.b", "é"));
  const tensors = fc.dictionary(
    names.filter((name) => name !== "__metadata__"),
    fc.float32Array({ maxLength: 8 }).map((data): SafetensorsTensor => ({ dtype: "F32", shape: [data.length], data })),
    { maxKeys: 6 },
  );
  const metadata = fc.dictionary(names, fc.string({ maxLength: 10 }), { maxKeys: 4 });

  it("safetensors round-trips any names (including __proto__), values and metadata", () => {
    fc.assert(
      fc.property(tensors, metadata, (record, meta) => {
        const input = new Map(Object.entries(record));
        const decoded = decodeSafetensors(encodeSafetensors(input, meta));
        expect([...decoded.tensors.keys()].sort()).toEqual([...input.keys()].sort());
        for (const [name, tensor] of input) expect(sameBits(decoded.tensors.get(name)!.data as Float32Array, tensor.data as Float32Array)).toBe(true);
        expect(Object.entries(decoded.metadata).sort()).toEqual(Object.entries(meta).sort());
      }),
    );
  });

  it("a BSR matrix survives safetensors and .npz bit for bit", () => {
    fc.assert(
      fc.property(matrices, (matrix) => {
        const content = putBsrMatrix({ tensors: new Map(), metadata: {} }, "w", matrix);
        const back = getBsrMatrix(decodeSafetensors(encodeSafetensors(content.tensors, content.metadata)), "w");
        expect(back.pattern.equals(matrix.pattern)).toBe(true);
        expect(sameBits(back.values as Float32Array, matrix.values as Float32Array)).toBe(true);
        const npz = decodeScipyNpz(encodeScipyNpz(matrix));
        expect(sameBits(npz.toDense(), matrix.toDense())).toBe(true);
      }),
      { numRuns: 60 },
    );
  });

  it("any truncation of a safetensors file is refused with a BsrFormatError", () => {
    const bytes = encodeSafetensors({ a: { dtype: "F32", shape: [3], data: Float32Array.from([1, 2, 3]) } }, { k: "v" });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: bytes.length - 1 }), (length) => {
        expect(() => decodeSafetensors(bytes.subarray(0, length))).toThrow(BsrFormatError);
      }),
    );
  });
});
