import { SeededRandom } from "@blocksparse/format";
import { Tensor, ValueError, dispose, formatShape, optionsArg, tensorOn, tidy } from "@blocksparse/core";
import { backward, reachableLeaves } from "./backward";
import { describeValue } from "./errors";
import { detach, noGrad, tracksGrad, withRecording } from "./tape";

export interface GradcheckOptions {
  /**
   * Step of the central differences (default 1e-2: float32 rounding noise grows as 1/eps and
   * the truncation error as eps^2, and they balance near 1e-2 for values of order 1). The
   * step actually applied is the float32 difference of the perturbed values. Keep inputs
   * farther than eps from kinks (relu, abs, max).
   */
  eps?: number;
  /** Absolute tolerance (default 1e-3). An element passes when |analytic - numeric| <= atol + rtol * |numeric|. */
  atol?: number;
  /** Relative tolerance (default 1e-2). */
  rtol?: number;
  /** Indices of the inputs to check (default: every float32 input). Other inputs are held constant. */
  wrt?: readonly number[];
  /** Seed of the random projection of the output (default 0). */
  seed?: number;
}

/** The comparison for one input. */
export interface GradcheckInputDetail {
  /** Position of the input in `inputs`. */
  input: number;
  shape: readonly number[];
  ok: boolean;
  maxAbsError: number;
  /** Largest |analytic - numeric| / |numeric| over elements whose numeric gradient is at least atol in size. */
  maxRelError: number;
  /** Flat index of the element with the largest absolute error (-1 for an empty input). */
  worstIndex: number;
  /** d sum(out * r) / d input from backward. */
  analytic: Float64Array;
  /** The same from central differences in float64. */
  numeric: Float64Array;
}

export interface GradcheckResult {
  ok: boolean;
  maxAbsError: number;
  maxRelError: number;
  details: GradcheckInputDetail[];
}

function checkOptions(options: GradcheckOptions | null): Required<Omit<GradcheckOptions, "wrt">> {
  if (options != null && typeof options !== "object") {
    throw new ValueError(`gradcheck: options must be an object such as { atol: 1e-3 }, got ${describeValue(options)}`);
  }
  // An unknown name (tol, epsilon, a typo) is refused: ignored, the check would run with the default it meant to change.
  const { eps = 1e-2, atol = 1e-3, rtol = 1e-2, seed = 0, wrt } = optionsArg("gradcheck", options, ["eps", "atol", "rtol", "wrt", "seed"]);
  for (const [name, value] of [["eps", eps], ["atol", atol], ["rtol", rtol]] as const) {
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      // Quoted when a string: "0.1" read as a refused 0.1.
      throw new ValueError(`gradcheck: ${name} must be a finite number >= 0, got ${describeValue(value)}`);
    }
  }
  if (eps === 0) throw new ValueError("gradcheck: eps must be > 0");
  if (!Number.isSafeInteger(seed)) throw new ValueError(`gradcheck: seed must be an integer, got ${typeof seed === "string" ? JSON.stringify(seed) : String(seed)}`);
  // Spread as given, a number (wrt: 0) would be ignored or throw a TypeError, and a string's characters read as indices.
  if (wrt != null && !Array.isArray(wrt)) {
    throw new ValueError(`gradcheck: wrt must be an array of input indices such as [0], got ${JSON.stringify(wrt) ?? String(wrt)}`);
  }
  return { eps, atol, rtol, seed };
}

/**
 * Compares the gradients backward computes for `fn` with central finite differences.
 * One random projection r of the output (seeded) turns the Jacobian into one gradient:
 * backward(out, r) gives d sum(out * r) / d input, and the differences of sum(out * r),
 * summed in float64 on the host, give the same numerically. Inputs are float32 tensors;
 * each is perturbed element by element by +-eps (the float32 step actually taken is used).
 * Backward runs on detached copies of the inputs: their `.grad`, `requiresGrad` and any graph they belong to stay
 * as they were. That forward is recorded even where recording is off (inside noGrad).
 */
export function gradcheck(
  fn: (...inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  options: GradcheckOptions | null = {},
): GradcheckResult {
  if (typeof fn !== "function") throw new ValueError("gradcheck: fn must be a function");
  if (!Array.isArray(inputs)) throw new ValueError("gradcheck: inputs must be an array of Tensors");
  inputs.forEach((t, i) => {
    if (!(t instanceof Tensor)) throw new ValueError(`gradcheck: inputs[${i}] is not a Tensor`);
    t.throwIfDisposed(`gradcheck: inputs[${i}]`);
  });
  const { eps, atol, rtol, seed } = checkOptions(options);
  const checked = options?.wrt ? [...options.wrt] : inputs.flatMap((t, i) => (t.dtype === "float32" ? [i] : []));
  for (const i of checked) {
    if (!Number.isInteger(i)) throw new ValueError(`gradcheck: wrt holds ${JSON.stringify(i) ?? String(i)}, expected integer input indices`);
    if (i < 0 || i >= inputs.length) throw new ValueError(`gradcheck: wrt index ${i} is out of range for ${inputs.length} inputs`);
    if (inputs[i].dtype !== "float32") throw new ValueError(`gradcheck: inputs[${i}] has dtype ${inputs[i].dtype}; gradcheck perturbs float32 inputs`);
  }
  if (checked.length === 0) throw new ValueError("gradcheck: no float32 input to check");

  const evaluate = (args: Tensor[]): Tensor => {
    const out = fn(...args);
    if (!(out instanceof Tensor)) throw new ValueError("gradcheck: fn must return a Tensor");
    if (out.dtype !== "float32") throw new ValueError(`gradcheck: fn returned dtype ${out.dtype}, expected float32`);
    return out;
  };

  // The projection r, rounded to float32 so that host and device use the same numbers.
  const outShape = noGrad(() => tidy(() => [...evaluate(inputs).shape]));
  const random = new SeededRandom(seed);
  const r = new Float32Array(outShape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < r.length; i++) r[i] = random.normal();
  const project = (args: Tensor[]): number =>
    noGrad(() =>
      tidy(() => {
        // Checked: else r's missing or extra entries made a NaN numeric gradient, reported as a wrong analytic one.
        const values = sameShape(evaluate(args), outShape).dataSync();
        let total = 0;
        for (let i = 0; i < values.length; i++) total += values[i] * r[i];
        return total;
      }),
    );

  const analytic = analyticGradients(evaluate, inputs, checked, r, outShape);
  const details = checked.map((inputIndex, k): GradcheckInputDetail => {
    const input = inputs[inputIndex];
    const base = input.dataSync() as Float32Array;
    const numeric = new Float64Array(base.length);
    const perturbed = Float32Array.from(base);
    for (let j = 0; j < base.length; j++) {
      const evalAt = (value: number): number => {
        perturbed[j] = value;
        const moved = tensorOn(input.backend, perturbed, input.shape, "float32");
        try {
          return project(inputs.map((t, i) => (i === inputIndex ? moved : t)));
        } finally {
          moved.dispose();
        }
      };
      const up = Math.fround(base[j] + eps);
      const down = Math.fround(base[j] - eps);
      // Else 0 / 0: a NaN numeric gradient, reported as a wrong analytic one.
      if (up === down && Number.isFinite(base[j])) {
        throw new ValueError(`gradcheck: eps ${eps} does not move inputs[${inputIndex}] element ${j} (${base[j]}) in float32; pass a larger eps`);
      }
      numeric[j] = (evalAt(up) - evalAt(down)) / (up - down);
      perturbed[j] = base[j];
    }
    return compare(inputIndex, input.shape, analytic[k], numeric, atol, rtol);
  });
  return {
    ok: details.every((d) => d.ok),
    maxAbsError: Math.max(0, ...details.map((d) => d.maxAbsError)),
    maxRelError: Math.max(0, ...details.map((d) => d.maxRelError)),
    details,
  };
}

/** `out`, checked to have the shape fn's first output had. */
function sameShape(out: Tensor, first: number[]): Tensor {
  if (out.shape.length !== first.length || out.shape.some((d, i) => d !== first[i])) {
    throw new ValueError(`gradcheck: fn returned ${formatShape(first)}, then ${formatShape(out.shape)}; it must be deterministic`);
  }
  return out;
}

function analyticGradients(
  evaluate: (args: Tensor[]) => Tensor,
  inputs: Tensor[],
  checked: number[],
  r: Float32Array,
  outShape: number[],
): Float64Array[] {
  // Detached leaves in the inputs' places: backward writes no .grad of the caller's and goes into no graph an input
  // belongs to, and an input passed twice gets a gradient per position, as the differences do.
  const leaves = inputs.map(detach);
  for (const i of checked) leaves[i].requiresGrad = true;
  try {
    // Recorded even inside noGrad (or a backward's observer): unrecorded, every analytic gradient read as zeros.
    withRecording(() =>
      tidy(() => {
        const out = evaluate(leaves);
        // Leaves fn closes over (a layer's parameters) get no gradient, as torch's gradcheck asks for the inputs' only.
        const others = [...reachableLeaves(out)].filter((t) => !leaves.includes(t));
        for (const t of others) t.requiresGrad = false;
        try {
          if (!tracksGrad(out)) return;
          sameShape(out, outShape);
          // Retained: a tracked tensor fn closes over (an activation) keeps its graph for the caller's own backward;
          // the nodes fn made go with their outputs at the end of this tidy.
          backward(out, tensorOn(out.backend, r, out.shape, "float32"), { retainGraph: true });
        } finally {
          for (const t of others) t.requiresGrad = true;
        }
      }),
    );
    return checked.map((i) => {
      const grad = leaves[i].grad;
      return grad ? Float64Array.from(grad.dataSync()) : new Float64Array(inputs[i].size);
    });
  } finally {
    for (const t of leaves) dispose([t, t.grad]);
  }
}

function compare(
  input: number,
  shape: readonly number[],
  analytic: Float64Array,
  numeric: Float64Array,
  atol: number,
  rtol: number,
): GradcheckInputDetail {
  let ok = true;
  let maxAbsError = 0;
  let maxRelError = 0;
  let worstIndex = analytic.length > 0 ? 0 : -1;
  for (let j = 0; j < analytic.length; j++) {
    const error = Math.abs(analytic[j] - numeric[j]);
    // NaN fails: comparisons with NaN are false.
    if (!(error <= atol + rtol * Math.abs(numeric[j]))) ok = false;
    if (!(error <= maxAbsError)) {
      maxAbsError = Number.isNaN(error) ? Number.POSITIVE_INFINITY : error;
      worstIndex = j;
    }
    const magnitude = Math.abs(numeric[j]);
    if (!(magnitude < Math.max(atol, Number.MIN_VALUE))) {
      const relative = error / magnitude;
      if (!(relative <= maxRelError)) maxRelError = Number.isNaN(relative) ? Number.POSITIVE_INFINITY : relative;
    }
  }
  return { input, shape: [...shape], ok, maxAbsError, maxRelError, worstIndex, analytic, numeric };
}
