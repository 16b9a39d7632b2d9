import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BsrFormatError, BsrMatrix, bsrMatricesToSafetensors, decodeSafetensors, encodeSafetensors, getBsrMatrices } from "../src/index.js";
import { loadBsrMatrices, loadScipyNpz } from "../src/node.js";
import { decodeScipyNpz, encodeScipyNpz } from "../src/npz.js";
import { SCIPY_NPZ_COMPRESSED_BASE64, SCIPY_NPZ_STORED_BASE64 } from "./fixtures.js";

/**
 * Every truncation and every single-byte edit of small valid files, exhaustively: each is read or refused with a
 * BsrFormatError (never a RangeError, TypeError or other crash), and where the file carries checksums (.npz) what
 * is read is the original matrix. Random mutations live in fuzz.test.ts; this walks every byte of a few files.
 */

const MATRIX = BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 1 });
const HALF = BsrMatrix.random([8, 8], { blockShape: [2, 2], density: 0.5, seed: 2, dtype: "bfloat16" });

function safetensorsFile(): Uint8Array {
  const content = bsrMatricesToSafetensors(
    { w: MATRIX, v: HALF },
    { tensors: { bias: { dtype: "F32", shape: [3], data: Float32Array.from([1, 2, 3]) }, empty: { dtype: "I64", shape: [0, 4], data: new BigInt64Array(0) } } },
  );
  return encodeSafetensors(content.tensors, content.metadata);
}

const NPZ_FILES: [string, Uint8Array, BsrMatrix | undefined][] = [
  ["deflated", encodeScipyNpz(MATRIX), MATRIX],
  ["stored", encodeScipyNpz(HALF, { compressed: false }), HALF],
  // SciPy's own, with zip64 extra fields in every local header.
  ["SciPy's deflated", new Uint8Array(Buffer.from(SCIPY_NPZ_COMPRESSED_BASE64, "base64")), undefined],
  ["SciPy's stored", new Uint8Array(Buffer.from(SCIPY_NPZ_STORED_BASE64, "base64")), undefined],
];

/** What `read` made of `bytes`: "read", "refused", or what else it threw. */
function outcome(read: () => unknown): "read" | "refused" | string {
  try {
    read();
    return "read";
  } catch (error) {
    return error instanceof BsrFormatError ? "refused" : `${(error as Error).name}: ${(error as Error).message}`;
  }
}

const sameDense = (a: BsrMatrix, b: BsrMatrix) => Buffer.from(a.toDense().buffer).equals(Buffer.from(b.toDense().buffer));

describe("every truncation of a valid file is refused with a BsrFormatError", () => {
  it("safetensors holding BSR matrices, dense tensors and an empty one", () => {
    const bytes = safetensorsFile();
    expect(getBsrMatrices(decodeSafetensors(bytes)).size).toBe(2);
    const wrong = [];
    for (let length = 0; length < bytes.length; length++) {
      const result = outcome(() => getBsrMatrices(decodeSafetensors(bytes.subarray(0, length))));
      if (result !== "refused") wrong.push(`${length}: ${result}`);
    }
    expect(wrong).toEqual([]);
  });

  it.each(NPZ_FILES)(".npz, %s", (_, bytes) => {
    expect(() => decodeScipyNpz(bytes)).not.toThrow();
    const wrong = [];
    for (let length = 0; length < bytes.length; length++) {
      const result = outcome(() => decodeScipyNpz(bytes.subarray(0, length)));
      if (result !== "refused") wrong.push(`${length}: ${result}`);
    }
    expect(wrong).toEqual([]);
  });
});

describe("every single-byte edit of a valid file is read or refused with a BsrFormatError", () => {
  const values = [0x00, 0x01, 0x22, 0xff];

  it("safetensors holding BSR matrices (its data carries no checksum: any value there reads)", () => {
    const bytes = safetensorsFile();
    const wrong = [];
    for (let at = 0; at < bytes.length; at++) {
      for (const value of values) {
        if (bytes[at] === value) continue;
        const edited = bytes.slice();
        edited[at] = value;
        const result = outcome(() => getBsrMatrices(decodeSafetensors(edited)));
        if (result !== "read" && result !== "refused") wrong.push(`byte ${at} = ${value}: ${result}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it.each(NPZ_FILES)(".npz, %s: what is read is the original matrix (its members carry CRC-32s)", (_, bytes, matrix) => {
    const original = matrix ?? decodeScipyNpz(bytes);
    const wrong = [];
    for (let at = 0; at < bytes.length; at++) {
      for (const value of values) {
        if (bytes[at] === value) continue;
        const edited = bytes.slice();
        edited[at] = value;
        let read: BsrMatrix | undefined;
        const result = outcome(() => {
          read = decodeScipyNpz(edited);
        });
        if (result === "read" && !sameDense(read!, original)) wrong.push(`byte ${at} = ${value}: read another matrix`);
        else if (result !== "read" && result !== "refused") wrong.push(`byte ${at} = ${value}: ${result}`);
      }
    }
    expect(wrong).toEqual([]);
  }, 30_000);
});

describe("the Node loaders, on every truncation of a file", () => {
  let directory: string;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "bsr-damaged-"));
  });
  afterAll(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it.each([
    ["loadBsrMatrices", () => safetensorsFile(), (path: string) => loadBsrMatrices(path), "model.safetensors"],
    ["loadScipyNpz", () => encodeScipyNpz(MATRIX), (path: string) => loadScipyNpz(path), "weight.npz"],
  ] as const)("%s refuses each with a BsrFormatError naming the file", async (_, file, load, name) => {
    const bytes = file();
    const path = join(directory, name);
    const wrong = [];
    for (let length = 0; length < bytes.length; length++) {
      await writeFile(path, bytes.subarray(0, length));
      const error = await load(path).then(
        () => undefined,
        (thrown: unknown) => thrown,
      );
      if (!(error instanceof BsrFormatError) || !error.message.startsWith(`${path}: `)) wrong.push(`${length}: ${String(error)}`);
    }
    expect(wrong).toEqual([]);
  }, 60_000);
});
