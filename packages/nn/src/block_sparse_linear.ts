import { detach, noGrad } from "@blocksparse/autograd";
import { type Activation, addReplayCheck, assertBoolean, BackendError, BsrPattern, bsrLinear, bsrLinearActivation, cast, formatArg, formatShape, GraphError, isCapturing, optionsArg, seedArg, ShapeError, shapesEqual, Tensor, tensorOn, tidy, ValueError } from "@blocksparse/core";
import { BsrMatrix, divisors } from "@blocksparse/format";
import { blockCountFor, blockSources, randomPattern, remapBlocks } from "./blocks";
import { childSeeds, uniform } from "./init";
import { checkFeatures, inputOperands, Linear, requiredOptions, slotValues } from "./linear";
import { denseOn, Module } from "./module";
import { Optimizer } from "./optim";
import { Parameter } from "./parameter";
import { BlockSparseWeight, describeEntry, type StateDictEntry } from "./state_dict";

export type BlockShape = readonly [number, number];

export interface BlockSparseLinearOptions {
  /** Fraction of blocks kept, in (0, 1]: round(density * blocks) of them, at least one. */
  density: number;
  /** [R, C] (default [32, 32]): R divides outFeatures, C divides inFeatures. */
  blockShape?: BlockShape;
  /** Add a learned bias (default true). */
  bias?: boolean;
  /** Seed of the pattern and the initial values (default: core's global generator). */
  seed?: number;
}

export interface FromLinearOptions {
  density: number;
  blockShape?: BlockShape;
  /** Seed of the pattern of a weight whose blocks all tie (zero, constant, +-c), drawn as the constructor draws it (default: core's global generator). */
  seed?: number;
}

export interface SetPatternOptions {
  /** Values of the blocks `pattern` adds, [added, R, C] in the pattern's order (default: zeros); a float dtype, cast to the weight's. */
  newValues?: Tensor;
  /**
   * The optimizer whose state for the weight follows the move (kept blocks keep it, added blocks start fresh:
   * Optimizer.freshBlocks), or a list of optimizers (a model split across several): those holding the weight follow.
   * One, or a list, holding none of the layer's parameters is refused (its state would restart in silence).
   */
  optimizer?: Optimizer | readonly Optimizer[];
}

/**
 * @internal The optimizers of `optimizer` (one or a list) that hold `layer`'s weight, each once; refuses one, or a list,
 * that holds none of the layer's parameters, whose state for the weight would otherwise restart at its next step.
 */
export function movingOptimizers(where: string, layer: BlockSparseLinear, optimizer: Optimizer | readonly Optimizer[] | undefined): Optimizer[] {
  if (optimizer === undefined) return [];
  const list: readonly unknown[] = Array.isArray(optimizer) ? optimizer : [optimizer];
  if (!list.every((o) => o instanceof Optimizer)) throw new ValueError(`${where}: optimizer must be an Optimizer or an array of them`);
  const optimizers = [...new Set(list as Optimizer[])];
  const own = [layer.weight, layer.bias];
  const { label } = layer as unknown as { label: string };
  if (!optimizers.some((o) => o.params.some((p) => own.includes(p)))) {
    throw new ValueError(`${where}: no optimizer given holds any of ${label}'s parameters: pass the one that trains it, or a list`);
  }
  return optimizers.filter((o) => o.params.includes(layer.weight));
}

/** Whether every block of a dense [rows, cols] weight has the same sum of squares (a zero, constant or +-c weight). */
function everyBlockTies(dense: ArrayLike<number>, [rows, cols]: readonly [number, number], [height, width]: BlockShape): boolean {
  const blockCols = cols / width;
  const sums = new Float64Array((rows / height) * blockCols);
  for (let i = 0; i < dense.length; i++) sums[Math.floor(i / cols / height) * blockCols + Math.floor((i % cols) / width)] += dense[i] * dense[i];
  return sums.every((sum) => sum === sums[0]);
}

/** The option key under which fromLinear hands its parameters to the constructor (so that it draws no random values). */
const PREBUILT = Symbol("prebuilt parameters");
type ConstructorOptions = BlockSparseLinearOptions & { [PREBUILT]?: { weight: Parameter; bias: Parameter | null } };

export const DEFAULT_BLOCK_SHAPE: BlockShape = [32, 32];

/** Checks density and block shape for a [outFeatures, inFeatures] weight; the message says what would work. */
export function checkBlockSparseOptions(where: string, inFeatures: number, outFeatures: number, density: number, blockShape: BlockShape): void {
  if (typeof density !== "number" || !(density > 0 && density <= 1)) {
    throw new ValueError(`${where}: density must be in (0, 1], got ${formatArg(density)}`);
  }
  if (!Array.isArray(blockShape) || blockShape.length !== 2 || !blockShape.every((d) => Number.isSafeInteger(d) && d >= 1)) {
    throw new ValueError(`${where}: blockShape must be [R, C] of positive integers, got ${JSON.stringify(blockShape)}`);
  }
  const [blockHeight, blockWidth] = blockShape;
  if (outFeatures % blockHeight !== 0) {
    throw new ValueError(
      `${where}: outFeatures=${outFeatures} is not divisible by the block height R=${blockHeight}; block heights that divide it: ${divisors(outFeatures).join(", ")}`,
    );
  }
  if (inFeatures % blockWidth !== 0) {
    throw new ValueError(
      `${where}: inFeatures=${inFeatures} is not divisible by the block width C=${blockWidth}; block widths that divide it: ${divisors(inFeatures).join(", ")}`,
    );
  }
}

/**
 * A drop-in for Linear whose weight W [outFeatures, inFeatures] keeps only some blocks:
 * `pattern` (a BsrPattern) says which, `weight` holds their values [nnzBlocks, R, C].
 * Same call and same forward contract as Linear: x [..., inFeatures] -> [..., outFeatures].
 * Initialised as Linear is, with the fan-in each output actually sees (density * inFeatures).
 */
export class BlockSparseLinear extends Module {
  static override readonly parameterSlots = { weight: false, bias: true };
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** The stored blocks [nnzBlocks, R, C]; `weight.pattern` is the layer's pattern. */
  weight: Parameter;
  bias: Parameter | null;

  constructor(inFeatures: number, outFeatures: number, options: BlockSparseLinearOptions) {
    super();
    checkFeatures("BlockSparseLinear", "inFeatures", inFeatures);
    checkFeatures("BlockSparseLinear", "outFeatures", outFeatures);
    requiredOptions("BlockSparseLinear", options, ["density", "blockShape", "bias", "seed"], 1);
    const blockShape = options.blockShape ?? DEFAULT_BLOCK_SHAPE;
    checkBlockSparseOptions("BlockSparseLinear", inFeatures, outFeatures, options.density, blockShape);
    const { bias = true } = options;
    assertBoolean("BlockSparseLinear", "bias", bias);
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const parts = (options as ConstructorOptions)[PREBUILT];
    if (parts !== undefined) {
      this.weight = parts.weight;
      this.bias = parts.bias;
      return;
    }
    const [patternSeed, weightSeed, biasSeed] = childSeeds("BlockSparseLinear", options.seed, 3);
    const pattern = randomPattern([outFeatures, inFeatures], [blockShape[0], blockShape[1]], options.density, patternSeed);
    const bound = 1 / Math.sqrt(pattern.density * inFeatures);
    this.weight = new Parameter(uniform([pattern.nnzBlocks, blockShape[0], blockShape[1]], bound, weightSeed), { pattern });
    this.bias = bias ? new Parameter(uniform([outFeatures], bound, biasSeed)) : null;
  }

  /**
   * The layer that keeps `linear`'s strongest blocks (by L2 norm; ties: lower block index
   * first; a weight whose blocks all tie, zero, constant or +-c, gets a random pattern drawn from `seed`)
   * and their values, with its bias. On the linear's backend and dtype. A weight holding NaN or an infinity has no
   * strongest blocks: it is refused (a ValueError naming the layer and the first such value's place).
   */
  static fromLinear(linear: Linear, options: FromLinearOptions): BlockSparseLinear {
    if (!(linear instanceof Linear)) {
      const got = linear === null || typeof linear !== "object" ? String(linear) : (linear as object).constructor.name;
      throw new ValueError(`BlockSparseLinear.fromLinear: expected a Linear, got ${got}`);
    }
    requiredOptions("BlockSparseLinear.fromLinear", options, ["density", "blockShape", "seed"], 1);
    if (options.seed !== undefined) seedArg("BlockSparseLinear.fromLinear", "seed", options.seed);
    const { inFeatures, outFeatures } = linear;
    const blockShape = options.blockShape ?? DEFAULT_BLOCK_SHAPE;
    checkBlockSparseOptions("BlockSparseLinear.fromLinear", inFeatures, outFeatures, options.density, blockShape);
    const total = (outFeatures / blockShape[0]) * (inFeatures / blockShape[1]);
    const kept = blockCountFor(options.density, total);
    const [weight, bias] = slotValues(linear);
    const dense = weight.dataSync();
    // Blocks are ranked by norm: a NaN or infinite value would make its block rank first, or every block tie, silently.
    const bad = dense.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) {
      const { label } = linear as unknown as { label: string };
      throw new ValueError(`BlockSparseLinear.fromLinear: ${label}'s weight holds ${dense[bad]} at [${Math.floor(bad / inFeatures)}, ${bad % inFeatures}]: a non-finite weight has no strongest blocks to keep`);
    }
    const shape = [outFeatures, inFeatures] as const;
    // A weight whose blocks all have one norm (zero, constant, +-c) has no strongest blocks: the lowest indices would fill the
    // first block rows and leave the last outputs without weights, so the pattern is drawn instead, as a new layer's is.
    const mask = kept < total && everyBlockTies(dense, shape, blockShape) ? randomPattern(shape, blockShape, options.density, childSeeds("BlockSparseLinear.fromLinear", options.seed, 1)[0]).blockMask() : undefined;
    const matrix = BsrMatrix.fromDense(dense, shape, { blockShape: [blockShape[0], blockShape[1]], ...(mask ? { mask } : { density: kept / total }) });
    const blocks = new Parameter(tensorOn(weight.backend, matrix.values as Float32Array, [matrix.nnzBlocks, blockShape[0], blockShape[1]], weight.dtype), {
      pattern: matrix.pattern,
      requiresGrad: weight.requiresGrad,
    });
    try {
      // The bias shares the linear's buffer; a disposed one throws here, and the blocks built above are freed.
      const parts = { weight: blocks, bias: bias && new Parameter(noGrad(() => detach(bias)), { requiresGrad: bias.requiresGrad }) };
      return new BlockSparseLinear(inFeatures, outFeatures, { density: matrix.density, blockShape, [PREBUILT]: parts } as ConstructorOptions);
    } catch (error) {
      blocks.dispose();
      throw error;
    }
  }

  /** Which blocks are stored. */
  get pattern(): BsrPattern {
    return this.weight.pattern as BsrPattern;
  }

  /** Stored blocks / all blocks. */
  get density(): number {
    return this.pattern.density;
  }

  get blockShape(): BlockShape {
    return this.pattern.blockShape;
  }

  get nnzBlocks(): number {
    return this.pattern.nnzBlocks;
  }

  forward(x: Tensor): Tensor {
    const [weight, bias] = this.#operands(x);
    return bsrLinear(x, weight, this.pattern, bias);
  }

  /** The weight and bias for input x (checked against inFeatures), a replay after a pattern move refused under capture. */
  #operands(x: Tensor): [Tensor, Tensor | null] {
    const operands = inputOperands(this.label, this, x, this.inFeatures);
    if (isCapturing()) this.#refuseReplayAfterMove();
    return operands;
  }

  /**
   * The captured kernels hold this pattern: a replay after a move (setPattern, pruneAndRegrow, SparseOptimizer, a
   * checkpoint of another pattern) is refused, naming the move, before anything runs.
   */
  #refuseReplayAfterMove(): void {
    const pattern = this.pattern;
    addReplayCheck(() => {
      if (this.pattern === pattern) return;
      throw new GraphError(`${this.label}: its pattern moved after the step was captured, and the captured kernels hold the old one: run one step eagerly and capture the step again`);
    });
  }

  /**
   * `activation(forward(x))` as one kernel (core's bsrLinearActivation: the product, its bias and the activation;
   * backends that fuse it write both from one tile), with one fused pass for the gradients (see
   * Linear.forwardActivation).
   */
  forwardActivation(x: Tensor, activation: Activation): Tensor {
    const [weight, bias] = this.#operands(x);
    return bsrLinearActivation(x, weight, this.pattern, bias, activation);
  }

  /**
   * `forward(x) + residual`, as Linear.forwardResidual (residual has the output's shape and dtype): core's bsrLinear with
   * the residual, one kernel where the backend adds it in the product's epilogue (cuda's decoding kernel), else the
   * product and an add.
   */
  forwardResidual(x: Tensor, residual: Tensor): Tensor {
    const [weight, bias] = this.#operands(x);
    // A residual of another shape ([out] would broadcast over the rows in an add) or dtype is refused, naming the layer.
    const outShape = [...x.shape.slice(0, -1), this.outFeatures];
    const tensor = residual instanceof Tensor;
    if (!(tensor && shapesEqual(residual.shape, outShape) && residual.dtype === x.dtype)) {
      const expected = `${formatShape(outShape)} ${x.dtype}`;
      throw new (tensor ? ShapeError : ValueError)(`${this.label}.forwardResidual: residual is ${tensor ? describeEntry(residual) : formatArg(residual)}, expected the output's ${expected}`);
    }
    return bsrLinear(x, weight, this.pattern, bias, { residual });
  }

  /** The weight as a dense [outFeatures, inFeatures] tensor (zeros outside the blocks; not differentiable). */
  toDense(): Tensor {
    const values = this.weight.value;
    const dense = BsrMatrix.fromPattern(this.pattern, Float32Array.from(values.dataSync())).toDense();
    return tensorOn(values.backend, dense, [this.outFeatures, this.inFeatures], values.dtype);
  }

  /**
   * Moves the sparsity pattern: blocks present in both keep their values, blocks only in
   * `pattern` get `newValues` (default zeros). Same shape and block shape; the number of
   * blocks may change. Returns, for each block of `pattern`, its index in the old pattern
   * (-1 for an added block). The gradient is cleared. Call between optimizer steps.
   */
  setPattern(pattern: BsrPattern, options: SetPatternOptions = {}): Int32Array {
    const where = `${this.label}.setPattern`;
    if (!(pattern instanceof BsrPattern)) throw new ValueError(`${where}: pattern must be a BsrPattern`);
    // blockSources refuses another shape or block shape, naming setPattern.
    const sources = blockSources(this.pattern, pattern, where);
    const { newValues, optimizer } = optionsArg(where, options, ["newValues", "optimizer"]);
    // Checked before anything moves: a wrong optimizer found after the move would leave the layer moved and its state not,
    // and newValues of another shape or backend would fail in the concat inside remapBlocks, under its name.
    const expected = [sources.filter((source) => source < 0).length, ...this.blockShape];
    const current = this.weight.value;
    if (newValues !== undefined) {
      if (!(newValues instanceof Tensor && newValues.isFloat && shapesEqual(newValues.shape, expected))) {
        throw new ValueError(`${where}: newValues must be a Tensor of float blocks ${formatShape(expected)}`);
      }
      if (newValues.backend !== current.backend) {
        throw new BackendError(`${where}: newValues is on backend '${newValues.backend.name}' but the weight is on '${current.backend.name}'`);
      }
    }
    const optimizers = movingOptimizers(where, this, optimizer);
    // Weights replaced since the optimizer's last step (loaded, assigned): its master copy is taken from them first.
    for (const o of optimizers) o.syncMaster(this.weight);
    // Float values of another dtype (float32 blocks for a bfloat16 layer) are cast to the weight's; remapBlocks checks the rest.
    const fresh = newValues instanceof Tensor && newValues.isFloat && newValues.dtype !== current.dtype ? newValues : null;
    const values = noGrad(() => tidy(() => remapBlocks(current, sources, fresh ? cast(fresh, current.dtype) : newValues)));
    this.weight.value = values;
    this.weight.pattern = pattern;
    for (const o of optimizers) o.remapBlocks(this.weight, sources, pattern);
    return sources;
  }

  protected override ownStateEntries(): [string, StateDictEntry][] {
    const [weight, bias] = slotValues(this);
    const entries: [string, StateDictEntry][] = [["weight", new BlockSparseWeight(this.pattern, detach(weight))]];
    if (bias) entries.push(["bias", detach(bias)]);
    return entries;
  }

  protected override checkOwnEntry(name: string, entry: StateDictEntry): string | null {
    if (name !== "weight") return super.checkOwnEntry(name, entry);
    // A block-sparse entry brings its pattern, but never another block shape (torch refuses a size mismatch).
    const sparse = entry instanceof BlockSparseWeight;
    if (shapesEqual(sparse ? entry.pattern.shape : entry.shape, [this.outFeatures, this.inFeatures]) && (!sparse || shapesEqual(entry.pattern.blockShape, this.blockShape))) return null;
    return describeEntry(new BlockSparseWeight(this.pattern, this.weight.value));
  }

  /** A block-sparse entry (of the layer's block shape) brings its pattern along; a dense [out, in] entry fills the current blocks. */
  protected override loadOwnEntry(name: string, entry: StateDictEntry): void {
    if (name !== "weight") {
      super.loadOwnEntry(name, entry);
      return;
    }
    const current = this.weight.value;
    if (!(entry instanceof BlockSparseWeight)) {
      const dense = tidy(() => denseOn(entry, current).dataSync());
      const matrix = BsrMatrix.fromDense(dense, this.pattern.shape, { blockShape: this.pattern.blockShape, mask: this.pattern.blockMask() });
      const values = tidy(() => cast(tensorOn(current.backend, matrix.values as Float32Array, current.shape, "float32"), current.dtype));
      this.weight.assign(values);
      values.dispose();
      return;
    }
    const values = tidy(() => {
      const moved = entry.values.backend === current.backend ? entry.values : entry.values.to(current.backend.name);
      return cast(moved, current.dtype);
    });
    if (entry.pattern.equals(this.pattern)) {
      this.weight.assign(values);
      values.dispose();
    } else {
      this.weight.value = values;
      this.weight.pattern = entry.pattern;
    }
  }

  protected override extraRepr(): string {
    const [r, c] = this.blockShape;
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, density=${+this.density.toFixed(4)}, blockShape=[${r}, ${c}], bias=${this.bias !== null}`;
  }
}
