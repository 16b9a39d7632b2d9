import { getBsrMatrices } from "../src/bsr-safetensors.js";
import { BsrFormatError } from "../src/errors.js";
import { BsrMatrix } from "../src/matrix.js";
import { decodeScipyNpz, encodeScipyNpz } from "../src/npz.js";
import { SeededRandom } from "../src/random.js";
import { decodeSafetensors, encodeSafetensors } from "../src/safetensors.js";

/**
 * Seeded mutation fuzzing of the file readers: case i of a run is a valid file (one of a
 * few seeds) with a few random mutations, the same on every machine for the same seed.
 * A case passes when the reader returns or throws a BsrFormatError; for .npz, whose
 * members carry CRC-32s, a returned matrix must also equal the seed's.
 */

/** "harness-check" exists to test the runner: its case 3 kills its process and case 5 never returns. */
export type FuzzReader = "safetensors" | "npz" | "harness-check";
export type FuzzOutcome = "accepted" | "rejected" | "crash" | "silently-accepted";

export interface FuzzResult {
  index: number;
  outcome: FuzzOutcome;
  /** The error's message (crash) or what differed (silently-accepted). */
  detail?: string;
}

function seedFiles(reader: "safetensors" | "npz"): { bytes: Uint8Array; dense: Float32Array | null }[] {
  const matrices = [
    BsrMatrix.random([8, 12], { blockShape: [2, 3], density: 0.5, seed: 1 }),
    BsrMatrix.random([16, 16], { blockShape: [4, 4], density: 0.25, seed: 2, dtype: "float16" }),
    BsrMatrix.random([6, 4], { blockShape: [1, 1], density: 1, seed: 3 }),
  ];
  if (reader === "npz") {
    return matrices.flatMap((matrix) =>
      [true, false].map((compressed) => ({ bytes: encodeScipyNpz(matrix, { compressed }), dense: matrix.toDense() })),
    );
  }
  return matrices.map((matrix, i) => {
    const torch = matrix.toTorch();
    const tensors = new Map([
      ["w.crow_indices", { dtype: "I32" as const, shape: [torch.crowIndices.length], data: torch.crowIndices }],
      ["w.col_indices", { dtype: "I32" as const, shape: [torch.colIndices.length], data: torch.colIndices }],
      ["w.values", { dtype: matrix.dtype === "float32" ? ("F32" as const) : ("F16" as const), shape: [...torch.valuesShape], data: torch.values } as never],
      ["bias", { dtype: "F32" as const, shape: [3], data: Float32Array.from([1, 2, i]) }],
    ]);
    const metadata = { "w.layout": "bsr", "w.layout_version": "1", "w.shape": matrix.shape.join(","), "w.block_shape": matrix.blockShape.join(",") };
    return { bytes: encodeSafetensors(tensors, metadata), dense: null };
  });
}

const seedCache = new Map<"safetensors" | "npz", ReturnType<typeof seedFiles>>();

const INTERESTING = [0x00, 0x01, 0x7f, 0x80, 0xff, 0x20, 0x22, 0x2c, 0x30, 0x39, 0x5b, 0x5d, 0x7b, 0x7d, 0x2d];

/** Mutates a copy of `bytes`: bit flips, interesting bytes, digits in text, truncation, growth, duplicated or dropped chunks. */
export function mutate(bytes: Uint8Array, random: SeededRandom): Uint8Array {
  let out = bytes.slice();
  const mutations = 1 + Math.floor(random.next() * 4);
  for (let m = 0; m < mutations; m++) {
    const at = Math.floor(random.next() * Math.max(1, out.length));
    switch (Math.floor(random.next() * 8)) {
      case 0:
        if (out.length > 0) out[at] ^= 1 << Math.floor(random.next() * 8);
        break;
      case 1:
        if (out.length > 0) out[at] = INTERESTING[Math.floor(random.next() * INTERESTING.length)];
        break;
      case 2: {
        // A digit changed where one is: offsets, lengths and shapes in JSON or .npy headers.
        const digits: number[] = [];
        for (let i = 0; i < out.length; i++) if (out[i] >= 0x30 && out[i] <= 0x39) digits.push(i);
        if (digits.length > 0) out[digits[Math.floor(random.next() * digits.length)]] = 0x30 + Math.floor(random.next() * 10);
        break;
      }
      case 3:
        out = out.slice(0, at);
        break;
      case 4: {
        const grown = new Uint8Array(out.length + 1 + Math.floor(random.next() * 16));
        grown.set(out);
        for (let i = out.length; i < grown.length; i++) grown[i] = Math.floor(random.next() * 256);
        out = grown;
        break;
      }
      case 5: {
        const length = Math.min(out.length - at, 1 + Math.floor(random.next() * 32));
        const copy = new Uint8Array(out.length + length);
        copy.set(out.subarray(0, at + length));
        copy.set(out.subarray(at), at + length);
        out = copy;
        break;
      }
      case 6: {
        const length = Math.min(out.length - at, 1 + Math.floor(random.next() * 32));
        const copy = new Uint8Array(out.length - length);
        copy.set(out.subarray(0, at));
        copy.set(out.subarray(at + length), at);
        out = copy;
        break;
      }
      default: {
        // A 4- or 8-byte little-endian field set to an edge value (lengths, offsets, counts).
        const width = random.next() < 0.5 ? 4 : 8;
        if (at + width <= out.length) {
          const view = new DataView(out.buffer, out.byteOffset + at, width);
          const edge = [0, 1, 0x7fffffff, 0xffffffff, 0x80000000][Math.floor(random.next() * 5)];
          view.setUint32(0, edge, true);
          if (width === 8) view.setUint32(4, random.next() < 0.5 ? 0 : 0xffffffff, true);
        }
      }
    }
  }
  return out;
}

/** The bytes of case `index` of a run: deterministic in (reader, seed, index). */
export function fuzzCase(reader: "safetensors" | "npz", seed: number, index: number): { bytes: Uint8Array; dense: Float32Array | null } {
  let seeds = seedCache.get(reader);
  if (seeds === undefined) {
    seeds = seedFiles(reader);
    seedCache.set(reader, seeds);
  }
  const random = new SeededRandom(seed * 1_000_003 + index);
  const base = seeds[index % seeds.length];
  return { bytes: mutate(base.bytes, random), dense: base.dense };
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

/** Runs one case through the reader and classifies what happened. */
export function runCase(reader: FuzzReader, seed: number, index: number): FuzzResult {
  if (reader === "harness-check") {
    if (index === 3) process.exit(70);
    if (index === 5) for (;;);
    return { index, outcome: "accepted" };
  }
  const { bytes, dense } = fuzzCase(reader, seed, index);
  try {
    if (reader === "safetensors") {
      getBsrMatrices(decodeSafetensors(bytes));
      return { index, outcome: "accepted" };
    }
    const matrix = decodeScipyNpz(bytes);
    if (dense !== null && !sameValues(matrix.toDense(), dense)) {
      return { index, outcome: "silently-accepted", detail: "decoded a matrix that differs from the original" };
    }
    return { index, outcome: "accepted" };
  } catch (error) {
    if (error instanceof BsrFormatError) return { index, outcome: "rejected" };
    return { index, outcome: "crash", detail: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
  }
}
