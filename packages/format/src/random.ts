/**
 * A seeded pseudo-random generator that gives the same sequence on every platform and
 * engine: xoshiro128** (Blackman & Vigna) on 32-bit integer arithmetic, its state filled
 * from the seed by SplitMix32. Normal deviates use Marsaglia's polar method with a
 * logarithm written in basic IEEE arithmetic, because `Math.log` may differ between
 * engines in the last bit.
 */
export class SeededRandom {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  private spareNormal: number | undefined;

  /**
   * `seed`: any safe integer. A seed in [0, 2^32) fills the state from one SplitMix32 stream; any other (negative,
   * or 2^32 and up) also mixes its high word into three of the four state words through a second stream. Seeds with
   * the same high word never share a state, others only by chance (the three words: about 2^-96).
   */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed)) throw new RangeError(`seed: expected a safe integer, got ${seed}`);
    const low = seed >>> 0;
    const high = Math.floor(seed / 2 ** 32) >>> 0;
    let mix = (low ^ Math.imul(high, 0x9e3779b9)) >>> 0;
    const nextSeedWord = (): number => {
      mix = (mix + 0x9e3779b9) >>> 0;
      return splitMix32(mix);
    };
    this.s0 = nextSeedWord();
    this.s1 = nextSeedWord();
    this.s2 = nextSeedWord();
    this.s3 = nextSeedWord();
    if (high !== 0) {
      // The first stream is a function of 32 bits, where seeds differing in their high words collided (-1 and
      // 2654435768 gave one generator).
      let other = (high ^ 0x6a09e667) >>> 0;
      const nextHighWord = (): number => {
        other = (other + 0x9e3779b9) >>> 0;
        return splitMix32(other);
      };
      this.s1 = (this.s1 ^ nextHighWord()) >>> 0;
      this.s2 = (this.s2 ^ nextHighWord()) >>> 0;
      this.s3 = (this.s3 ^ nextHighWord()) >>> 0;
    }
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** A generator at the given xoshiro128** state (four 32-bit words, not all zero). */
  static fromState(state: readonly [number, number, number, number]): SeededRandom {
    if (state.length !== 4 || state.every((word) => word >>> 0 === 0)) {
      throw new RangeError("state: expected four 32-bit words, not all zero");
    }
    const random = new SeededRandom(0);
    [random.s0, random.s1, random.s2, random.s3] = state.map((word) => word >>> 0);
    random.spareNormal = undefined;
    return random;
  }

  /** The next 32 random bits, as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotateLeft(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotateLeft(this.s3, 11);
    return result;
  }

  /** A uniform double in [0, 1) with 53 random bits. */
  next(): number {
    const high = this.nextUint32() >>> 5;
    const low = this.nextUint32() >>> 6;
    return (high * 2 ** 26 + low) / 2 ** 53;
  }

  /** A uniform double in [low, high). */
  uniform(low = 0, high = 1): number {
    return low + (high - low) * this.next();
  }

  /** A uniform integer in [0, bound), without modulo bias. `bound` in [1, 2^53]. */
  nextInt(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > 2 ** 53) {
      throw new RangeError(`bound: expected an integer in [1, 2^53], got ${bound}`);
    }
    if (bound <= 2 ** 32) {
      const limit = 2 ** 32 - (2 ** 32 % bound);
      for (;;) {
        const value = this.nextUint32();
        if (value < limit) return value % bound;
      }
    }
    // Wider bounds draw 53 bits (21 high, 32 low) with the same rejection.
    const limit = 2 ** 53 - (2 ** 53 % bound);
    for (;;) {
      const value = (this.nextUint32() >>> 11) * 2 ** 32 + this.nextUint32();
      if (value < limit) return value % bound;
    }
  }

  /** A normal deviate with the given mean and standard deviation. */
  normal(mean = 0, std = 1): number {
    if (this.spareNormal !== undefined) {
      const spare = this.spareNormal;
      this.spareNormal = undefined;
      return mean + std * spare;
    }
    for (;;) {
      const u = 2 * this.next() - 1;
      const v = 2 * this.next() - 1;
      const radius = u * u + v * v;
      if (radius >= 1 || radius === 0) continue;
      const scale = Math.sqrt((-2 * portableLog(radius)) / radius);
      this.spareNormal = v * scale;
      return mean + std * u * scale;
    }
  }

  /**
   * Fills `out` with normal deviates and returns it: the values, and the state left, of `normal(mean, std)` called
   * `out.length` times, with the generator's state in local variables (a normal() call per value, its spare deviate
   * boxed in a field between calls, took about 100 ns a value: seconds for a model's weights).
   */
  fillNormal<T extends Float32Array | Float64Array>(out: T, mean = 0, std = 1): T {
    const count = out.length;
    let i = 0;
    if (count > 0 && this.spareNormal !== undefined) {
      out[i++] = mean + std * this.spareNormal;
      this.spareNormal = undefined;
    }
    let s0 = this.s0;
    let s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    // next(), twice: four xoshiro128** steps as nextUint32 takes them, each 53-bit double built as next() builds it.
    const words = new Uint32Array(4);
    while (i < count) {
      for (let w = 0; w < 4; w++) {
        words[w] = Math.imul(rotateLeft(Math.imul(s1, 5), 7), 9);
        const t = s1 << 9;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = rotateLeft(s3, 11);
      }
      const u = 2 * (((words[0] >>> 5) * 2 ** 26 + (words[1] >>> 6)) / 2 ** 53) - 1;
      const v = 2 * (((words[2] >>> 5) * 2 ** 26 + (words[3] >>> 6)) / 2 ** 53) - 1;
      const radius = u * u + v * v;
      if (radius >= 1 || radius === 0) continue;
      const scale = Math.sqrt((-2 * portableLog(radius)) / radius);
      out[i++] = mean + std * u * scale;
      const spare = v * scale;
      if (i < count) out[i++] = mean + std * spare;
      else this.spareNormal = spare;
    }
    this.s0 = s0;
    this.s1 = s1;
    this.s2 = s2;
    this.s3 = s3;
    return out;
  }

  /** `count` distinct integers from [0, total), chosen uniformly, in ascending order. `total` at most 2^31. */
  sample(total: number, count: number): Int32Array {
    if (!Number.isInteger(total) || total < 0 || total > 2 ** 31) {
      throw new RangeError(`total: expected an integer in [0, 2^31] (sampleWide takes up to 2^53), got ${total}`);
    }
    checkCount(total, count);
    const chosen = new Int32Array(count);
    this.partialShuffle(total, chosen);
    return chosen;
  }

  /** As `sample`, for a `total` up to 2^53: the same integers for the same state, as doubles. */
  sampleWide(total: number, count: number): Float64Array {
    if (!Number.isInteger(total) || total < 0 || total > 2 ** 53) {
      throw new RangeError(`total: expected an integer in [0, 2^53], got ${total}`);
    }
    checkCount(total, count);
    const chosen = new Float64Array(count);
    this.partialShuffle(total, chosen);
    return chosen;
  }

  /**
   * Fills `chosen` with the first places of a Fisher-Yates shuffle of [0, total), sorted. Only
   * the moved entries are stored: in a dense array when `total` is small next to the count,
   * otherwise in maps of a few million entries each (one Map holds at most 2^24). Both give
   * the same draws.
   */
  private partialShuffle(total: number, chosen: Int32Array | Float64Array): void {
    const count = chosen.length;
    if (total <= 2 ** 31 && total <= 16 * count) {
      const at = new Int32Array(total);
      for (let k = 0; k < total; k++) at[k] = k;
      for (let i = 0; i < count; i++) {
        const j = i + this.nextInt(total - i);
        chosen[i] = at[j];
        at[j] = at[i];
      }
      // Sorting by marks costs O(total), here at most 16 * count: faster than a comparison sort.
      const picked = new Uint8Array(total);
      for (let i = 0; i < count; i++) picked[chosen[i]] = 1;
      let n = 0;
      for (let k = 0; k < total; k++) if (picked[k] === 1) chosen[n++] = k;
      return;
    }
    const maps = Array.from({ length: 1 + Math.floor(count / 2 ** 22) }, () => new Map<number, number>());
    const mapOf = (k: number) => maps[k % maps.length];
    for (let i = 0; i < count; i++) {
      const j = i + this.nextInt(total - i);
      chosen[i] = mapOf(j).get(j) ?? j;
      mapOf(j).set(j, mapOf(i).get(i) ?? i);
    }
    chosen.sort();
  }
}

function checkCount(total: number, count: number): void {
  if (!Number.isInteger(count) || count < 0 || count > total) {
    throw new RangeError(`count: expected an integer in [0, ${total}], got ${count}`);
  }
}

/** SplitMix32's output function: a 32-bit word mixed to 32 well-spread bits. */
function splitMix32(word: number): number {
  let z = word;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

const LN2 = Math.LN2;

/** Natural logarithm of a positive finite double from +, *, / only (reproducible). */
function portableLog(x: number): number {
  let exponent = 0;
  while (x >= Math.SQRT2) {
    x /= 2;
    exponent++;
  }
  while (x < Math.SQRT1_2) {
    x *= 2;
    exponent--;
  }
  // ln(x) = 2 atanh(s), s = (x - 1) / (x + 1), |s| < 0.172: the series converges fast.
  const s = (x - 1) / (x + 1);
  const s2 = s * s;
  let term = s;
  let sum = 0;
  for (let k = 1; k < 40; k += 2) {
    const next = sum + term / k;
    if (next === sum) break;
    sum = next;
    term *= s2;
  }
  return 2 * sum + exponent * LN2;
}
