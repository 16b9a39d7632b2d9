import { type Tensor, ValueError, mul, relu, sum, tensor } from "@blocksparse/core";
import { BlockSparseLinear, Linear, Module, ReLU, Sequential } from "@blocksparse/nn";
import { PatchError } from "@blocksparse/patcher";

/** An MLP block: fc1 (d -> hidden), ReLU, fc2 (hidden -> d). */
export class Mlp extends Module {
  fc1: Module;
  act: Module;
  fc2: Module;

  constructor(d: number, hidden: number, seed: number) {
    super();
    this.fc1 = new Linear(d, hidden, { seed });
    this.act = new ReLU();
    this.fc2 = new Linear(hidden, d, { seed: seed + 1, bias: false });
  }

  forward(x: Tensor): Tensor {
    return this.fc2.forward(relu(this.fc1.forward(x)));
  }
}

/** Two Mlp blocks and a head: names "blocks.0.fc1", ..., "blocks.1.fc2", "head". */
export class TinyNet extends Module {
  blocks: Sequential;
  head: Module;

  constructor(seed = 1) {
    super();
    this.blocks = new Sequential(new Mlp(16, 32, seed), new Mlp(16, 32, seed + 10));
    this.head = new Linear(16, 8, { seed: seed + 20 });
  }

  forward(x: Tensor): Tensor {
    return this.head.forward(this.blocks.forward(x));
  }
}

/** Deterministic values in [-1, 1) from a small LCG, so tests need no global random state. */
export function seededValues(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let state = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state / 2 ** 31 - 1;
  }
  return out;
}

export function seededTensor(shape: number[], seed: number): Tensor {
  return tensor(seededValues(shape.reduce((a, b) => a * b, 1), seed), shape);
}

/** sum(y * r): a scalar loss whose gradient with respect to y is r. */
export function projectedLoss(y: Tensor, r: Tensor): Tensor {
  return sum(mul(y, r));
}

/**
 * The mask fromLinear should keep, computed here in float64: the `kept` blocks of largest
 * L2 norm (ties: lower row-major block index first), as 0/1 per weight element.
 */
export function strongestBlockMask(weight: Float32Array, [out, inp]: [number, number], [r, c]: [number, number], kept: number): Float64Array {
  const blockCols = inp / c;
  const count = (out / r) * blockCols;
  const norms: { index: number; norm: number }[] = [];
  for (let b = 0; b < count; b++) {
    const row0 = Math.floor(b / blockCols) * r;
    const col0 = (b % blockCols) * c;
    let squares = 0;
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) squares += weight[(row0 + i) * inp + col0 + j] ** 2;
    norms.push({ index: b, norm: Math.sqrt(squares) });
  }
  norms.sort((a, b) => b.norm - a.norm || a.index - b.index);
  const mask = new Float64Array(out * inp);
  for (const { index } of norms.slice(0, kept)) {
    const row0 = Math.floor(index / blockCols) * r;
    const col0 = (index % blockCols) * c;
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) mask[(row0 + i) * inp + col0 + j] = 1;
  }
  return mask;
}

/** y = x (mask * W)^T + b in float64; x [n, in], W [out, in]. */
export function maskedLinearReference(x: Float32Array, weight: Float32Array, mask: Float64Array, bias: Float32Array | null, n: number, [out, inp]: [number, number]): Float64Array {
  const y = new Float64Array(n * out);
  for (let t = 0; t < n; t++) {
    for (let o = 0; o < out; o++) {
      let acc = bias ? bias[o] : 0;
      for (let i = 0; i < inp; i++) acc += x[t * inp + i] * weight[o * inp + i] * mask[o * inp + i];
      y[t * out + o] = acc;
    }
  }
  return y;
}

export function asBlockSparse(module: Module, what: string): BlockSparseLinear {
  if (!(module instanceof BlockSparseLinear)) throw new ValueError(`${what} is a ${module.constructor.name}`);
  return module;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const diff = Math.abs(a[i] - b[i]);
    if (!(diff <= worst)) worst = Number.isNaN(diff) ? Number.POSITIVE_INFINITY : diff;
  }
  return worst;
}

/** Two Linear layers "a" and "b" sharing one weight Parameter (a tie). */
export class Tied extends Module {
  a = new Linear(8, 8, { seed: 1 });
  b = new Linear(8, 8, { seed: 2 });
  constructor() {
    super();
    this.b.weight = this.a.weight;
  }
  forward(): never {
    throw new Error("not called");
  }
}

/** The PatchError `fn` throws (any other error is rethrown; none is a failure). */
export function thrown(fn: () => unknown): PatchError {
  try {
    fn();
  } catch (error) {
    if (error instanceof PatchError) return error;
    throw error;
  }
  throw new Error("expected a PatchError, nothing was thrown");
}
