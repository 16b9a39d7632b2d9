/**
 * What every family of the conformance suite shares: the backend under test, seeded inputs
 * with their exact float64 values, and assertions whose failures name the kernel and the case.
 */
import {
  type Backend,
  type DType,
  type FloatDType,
  POISON_BITS,
  type Tensor,
  bfloat16BitsToFloat32,
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
  getBackend,
  getBackendInstance,
  memory,
  setBackend,
  setKernelLeakCheck,
  tensor,
  tidy,
} from "@blocksparse/core";
import { SeededRandom } from "@blocksparse/format";
import { afterAll, beforeAll, expect, it } from "vitest";
import * as R from "./reference";
import type { Ref } from "./reference";

/** Relative tolerance of each dtype: a few units in the last place of its output rounding. */
export const TOLERANCES: Readonly<Record<FloatDType, number>> = { float32: 2e-5, float16: 2e-3, bfloat16: 1.6e-2 };

/**
 * "elementwise": |got - want| <= rtol * |want| (plus a tiny floor), for ops whose every
 * output is one rounding of an exact value. "scaled": <= rtol * (|want| + max|want|),
 * for sums and products where cancellation makes small outputs absolutely, not
 * relatively, accurate.
 */
export type Mode = "elementwise" | "scaled";

const ELEMENTWISE_FLOOR: Readonly<Record<FloatDType, number>> = { float32: 1e-30, float16: 1e-4, bfloat16: 1e-30 };

export const INT32_POISON = POISON_BITS.int32;

/** The dtypes every kernel family runs in, float first. */
export const ALL_DTYPES = ["float32", "float16", "bfloat16", "int32"] as const;

/** One suite run against one backend: what each family's declarations receive. */
export interface Conformance {
  readonly backendName: string;
  /** The backend under test (available inside tests, once the suite has started it). */
  readonly backend: Backend;
  /** A new generator, each call with the next seed. */
  rng(): SeededRandom;
  /** The next seed (for generators outside `rng`, e.g. a pattern's). */
  nextSeed(): number;
  /** A test whose tensors are freed at its end, and that fails if any buffer stays allocated. */
  check(title: string, body: () => void): void;
}

/**
 * Milliseconds a conformance check may take. Its float64 references run in JavaScript: the largest (LayerNorm over
 * rows of 8200) take about 1.5 s on a 2-core machine alone, and several times that beside the other packages' tests,
 * past vitest's default of 5 s.
 */
const CHECK_TIMEOUT_MS = 60_000;

/**
 * Starts the backend for the enclosing describe (poisoned allocations, the kernel leak check on)
 * and restores the previous backend afterwards. Call inside a vitest describe.
 */
export function startConformance(backendName: string): Conformance {
  let previousBackend: string | undefined;
  let previousLeakCheck = false;
  let backend: Backend | undefined;
  let seed = 1000;

  beforeAll(() => {
    previousBackend = getBackend();
    setBackend(backendName);
    backend = getBackendInstance(backendName);
    backend.poisonAllocations = true;
    previousLeakCheck = setKernelLeakCheck(true);
  });

  afterAll(() => {
    if (backend) backend.poisonAllocations = false;
    setKernelLeakCheck(previousLeakCheck);
    if (previousBackend !== undefined) setBackend(previousBackend);
  });

  const suite: Conformance = {
    backendName,
    get backend(): Backend {
      if (backend === undefined) throw new Error(`conformance: backend '${backendName}' is not started yet (use it inside a test)`);
      return backend;
    },
    rng: () => new SeededRandom(seed++),
    nextSeed: () => seed++,
    check: (title, body) => {
      it(
        title,
        () => {
          const buffersBefore = suite.backend.memory().buffers;
          const tensorsBefore = memory().numTensors;
          tidy(() => {
            body();
          });
          expect(memory().numTensors, `${title}: tensors left alive`).toBe(tensorsBefore);
          expect(suite.backend.memory().buffers, `${title}: buffers left allocated`).toBe(buffersBefore);
        },
        CHECK_TIMEOUT_MS,
      );
    },
  };
  return suite;
}

/**
 * Runs one case of a test; a failure inside is reported as "<label>: <what failed>", so that
 * the message names the kernel and the case (dtype, shapes, block shape, density, bias).
 */
export function inCase(label: string, body: () => void): void {
  try {
    body();
  } catch (error) {
    if (error instanceof Error && !error.message.startsWith(label)) error.message = `${label}: ${error.message}`;
    throw error;
  }
}

export function round(dtype: DType, value: number): number {
  switch (dtype) {
    case "float32":
      return Math.fround(value);
    case "float16":
      return float16BitsToFloat32(float32ToFloat16Bits(value));
    case "bfloat16":
      return bfloat16BitsToFloat32(float32ToBfloat16Bits(value));
    default:
      return Math.trunc(value);
  }
}

/** A tensor of seeded values and the exact (already rounded) values it holds. */
export interface Input {
  t: Tensor;
  ref: Ref;
}

export type Generator = "normal" | "positive" | "uniform" | "smallInt";

export function makeInput(rng: SeededRandom, shape: readonly number[], dtype: DType, kind: Generator = "normal"): Input {
  const values = R.ref(shape, () => {
    switch (kind) {
      case "positive":
        return rng.uniform(0.1, 3);
      case "uniform":
        return rng.uniform(-1, 1);
      case "smallInt":
        return rng.nextInt(5) - 2;
      default:
        return rng.normal();
    }
  });
  const rounded = R.map(values, (v) => round(dtype, v));
  return { t: tensor(rounded.data, shape, dtype), ref: rounded };
}

function describeValue(v: number): string {
  return Number.isNaN(v) ? "NaN (unwritten or invalid)" : String(v);
}

/**
 * Asserts shape, dtype and values of `got` against the float64 reference. `magnitude` ("scaled" only): the size of the
 * terms behind the outputs when it exceeds max|want| (sums that cancel to near 0), which the errors then scale with.
 */
export function expectValues(got: Tensor, want: Ref, dtype: DType, mode: Mode = "elementwise", scale = 1, magnitude = 0): void {
  expect([...got.shape], "output shape").toEqual(want.shape);
  expect(got.dtype, "output dtype").toBe(dtype);
  const values = got.dataSync();
  if (dtype === "int32") {
    for (let i = 0; i < values.length; i++) {
      if (values[i] !== want.data[i]) {
        expect.fail(`element ${i}: got ${values[i] === INT32_POISON ? "the poison value (unwritten)" : values[i]}, want ${want.data[i]}`);
      }
    }
    return;
  }
  const rtol = TOLERANCES[dtype] * scale;
  let maxAbs = 0;
  for (const w of want.data) if (Number.isFinite(w)) maxAbs = Math.max(maxAbs, Math.abs(w));
  const floor = mode === "scaled" ? Math.max(maxAbs, magnitude) : ELEMENTWISE_FLOOR[dtype];
  for (let i = 0; i < values.length; i++) {
    const g = values[i];
    const w = want.data[i];
    if (Number.isNaN(w)) {
      if (!Number.isNaN(g)) expect.fail(`element ${i}: got ${g}, want NaN`);
      continue;
    }
    if (!Number.isFinite(w)) {
      if (g !== w) expect.fail(`element ${i}: got ${describeValue(g)}, want ${w}`);
      continue;
    }
    const error = Math.abs(g - w);
    if (!(error <= rtol * (Math.abs(w) + floor))) {
      expect.fail(
        `element ${i} of ${values.length} (${dtype}): got ${describeValue(g)}, want ${w} (error ${error.toExponential(2)}, allowed ${(rtol * (Math.abs(w) + floor)).toExponential(2)})`,
      );
    }
  }
}

/** Asserts bit-exact equality (shape ops copy values). */
export function expectExact(got: Tensor, want: Ref, dtype: DType): void {
  expect([...got.shape], "output shape").toEqual(want.shape);
  expect(got.dtype, "output dtype").toBe(dtype);
  const values = got.dataSync();
  for (let i = 0; i < values.length; i++) {
    if (!Object.is(values[i], want.data[i]) && values[i] !== want.data[i]) {
      expect.fail(`element ${i}: got ${describeValue(values[i])}, want ${want.data[i]}`);
    }
  }
}

/**
 * Like expectThrows, outside a tidy scope, so that tensors `fn` assigns outside it stay alive: for ops a device
 * backend checks in its kernel, whose error comes at the first read of their result.
 */
export function expectThrowsKeeping(fn: () => unknown, type: new (...args: never[]) => Error, fragment: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught, "expected an error").toBeInstanceOf(type);
  expect((caught as Error).message).toContain(fragment);
}

export function expectThrows(fn: () => unknown, type: new (...args: never[]) => Error, fragment?: string): void {
  let caught: unknown;
  try {
    tidy(() => {
      fn();
    });
  } catch (error) {
    caught = error;
  }
  expect(caught, "expected an error").toBeInstanceOf(type);
  if (fragment !== undefined) expect((caught as Error).message).toContain(fragment);
}
