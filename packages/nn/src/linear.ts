import { type Activation, assertBoolean, DTypeError, formatArg, linear, linearActivation, optionsArg, ShapeError, Tensor, ValueError } from "@blocksparse/core";
import { childSeeds, uniform } from "./init";
import { Module, notParameterError } from "./module";
import { Parameter } from "./parameter";
import { describeValue } from "./serialization";

export interface LinearOptions {
  /** Add a learned bias (default true). */
  bias?: boolean;
  /** Seed of the initial values (default: core's global generator, see manualSeed). */
  seed?: number;
}

export function checkFeatures(where: string, name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) throw new ValueError(`${where}: ${name} must be a positive integer, got ${formatArg(value)}`);
}

/** Options that must be given, their first `required` names required: null names those, core's optionsArg checks the rest. */
export function requiredOptions<T extends object>(op: string, options: T, names: readonly (keyof T & string)[], required: number): T {
  if (options === null || typeof options !== "object") throw new ValueError(`${op}: options { ${names.slice(0, required).join(", ")} } are required`);
  return optionsArg(op, options, names);
}

/** A forward's input must be a Tensor: null or an array is a ValueError naming the layer. */
export function checkTensorInput(label: string, x: unknown): asserts x is Tensor {
  if (!(x instanceof Tensor)) throw new ValueError(`${label}.forward: input must be a Tensor, got ${describeValue(x)}`);
}

/** Throws "Linear(encoder.fc1): input has 1000 features, expected 1024" for a wrong last dim. */
export function checkInput(label: string, x: Tensor, inFeatures: number): void {
  checkTensorInput(label, x);
  if (x.rank === 0) throw new ShapeError(`${label}: input is a scalar, expected [..., ${inFeatures}]`);
  const got = x.shape[x.rank - 1];
  if (got !== inFeatures) throw new ShapeError(`${label}: input has ${got} features, expected ${inFeatures}`);
}

/**
 * checkInput, then the layer's weight and bias (slotValues); an input of another dtype than the weight's is refused by
 * the layer's name (core's product named only its kernel: in a model of many layers, a forgotten cast was not found).
 */
export function inputOperands(label: string, layer: Module & { weight: unknown; bias: unknown }, x: Tensor, inFeatures: number): [Tensor, Tensor | null] {
  checkInput(label, x, inFeatures);
  const operands = slotValues(layer);
  const dtype = operands[0].dtype;
  if (x.dtype !== dtype) {
    const or = x.dtype === "int32" ? "" : `, or the layer (module.to("${x.dtype}"))`;
    throw new DTypeError(`${label}: input has dtype ${x.dtype} but the layer's weight has ${dtype}: cast the input (cast(x, "${dtype}"))${or}`);
  }
  return operands;
}

/**
 * A Linear's or BlockSparseLinear's weight and bias tensors (null for no bias: null, or a deleted bias, as the model's
 * parameters and the patcher count it). Anything else in those slots, a plain Tensor above all, is refused as torch
 * refuses assigning it: it is not one of the layer's parameters (and was read as no bias).
 */
export function slotValues(layer: Module & { weight: unknown; bias: unknown }): [Tensor, Tensor | null] {
  return [slotValue(layer, "weight", false) as Tensor, slotValue(layer, "bias", true)];
}

/** The tensor of a layer's parameter slot `name` (null for an optional one that is null or deleted); anything else is refused. */
export function slotValue(layer: Module, name: string, optional: boolean): Tensor | null {
  const value = (layer as unknown as Record<string, unknown>)[name];
  if (value instanceof Parameter || (value == null && optional)) return value?.value ?? null;
  throw notParameterError((layer as unknown as { label: string }).label, name, value, optional);
}

/**
 * y = x W^T + b, with W [outFeatures, inFeatures] and inputs of any leading shape, as
 * torch.nn.Linear. Initialised like PyTorch: W and b uniform in +-1/sqrt(inFeatures)
 * (kaiming_uniform with a = sqrt(5)).
 */
export class Linear extends Module {
  static override readonly parameterSlots = { weight: false, bias: true };
  readonly inFeatures: number;
  readonly outFeatures: number;
  weight: Parameter;
  bias: Parameter | null;

  constructor(inFeatures: number, outFeatures: number, options: LinearOptions = {}) {
    super();
    checkFeatures("Linear", "inFeatures", inFeatures);
    checkFeatures("Linear", "outFeatures", outFeatures);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const bound = 1 / Math.sqrt(inFeatures);
    options = optionsArg("Linear", options, ["bias", "seed"]);
    const { bias = true } = options;
    assertBoolean("Linear", "bias", bias);
    const [weightSeed, biasSeed] = childSeeds("Linear", options.seed, 2);
    this.weight = new Parameter(uniform([outFeatures, inFeatures], bound, weightSeed));
    this.bias = bias ? new Parameter(uniform([outFeatures], bound, biasSeed)) : null;
  }

  /** x W^T + b: one kernel with the bias in the product's epilogue where the backend fuses it (core's linear). */
  forward(x: Tensor): Tensor {
    return linear(x, ...inputOperands(this.label, this, x, this.inFeatures));
  }

  /**
   * `forward(x) + residual` (a residual connection around this layer) in one kernel where the backend fuses the
   * addend into the product (cuda: cuBLASLt's epilogue). residual has the output's shape and dtype.
   */
  forwardResidual(x: Tensor, residual: Tensor): Tensor {
    return linear(x, ...inputOperands(this.label, this, x, this.inFeatures), { residual });
  }

  /**
   * `activation(forward(x))` in one kernel where the backend fuses it (core's linearActivation: on cuda, cuBLASLt's GELU
   * epilogue for GELU's tanh form), else the product with its bias and one fused activation pass; the gradient takes
   * the activation's backward and the bias gradient in one pass. Sequential and the MLPs call it when this layer is
   * followed by GELU or ReLU.
   */
  forwardActivation(x: Tensor, activation: Activation): Tensor {
    return linearActivation(x, ...inputOperands(this.label, this, x, this.inFeatures), activation);
  }

  protected override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}
