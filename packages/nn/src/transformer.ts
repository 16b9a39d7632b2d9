import {
  add,
  expandDims,
  formatArg,
  matmul,
  mul,
  packedAttention,
  permute,
  reshape,
  ShapeError,
  softmax,
  split,
  squeeze,
  type Tensor,
  tidy,
  ValueError,
} from "@blocksparse/core";
import { childSeeds } from "./init";
import { Dropout, dropsNothing, forwardLinearActivation, forwardResidual, GELU, LayerNorm } from "./layers";
import { checkFeatures, checkTensorInput, Linear, requiredOptions } from "./linear";
import { Module } from "./module";

export interface TransformerBlockOptions {
  /** Width of the residual stream. */
  dModel: number;
  /** Attention heads; must divide dModel. */
  nHeads: number;
  /** Hidden width of the MLP as a multiple of dModel (default 4). */
  mlpRatio?: number;
  /** Dropout on attention weights and on each residual branch (default 0). */
  dropout?: number;
  /** Seed of every initial value (default: core's global generator). */
  seed?: number;
}

/**
 * Multi-head causal self-attention: x [B, T, dModel] (or [T, dModel]) -> same shape. Runs core's fused
 * packedAttention (the heads read from the qkv product's rows and the output written in the rows proj reads; no
 * [T, T] tensor kept for the backward) unless its attention dropout is active (training with p > 0), which needs the
 * attention weights made.
 */
export class CausalSelfAttention extends Module {
  readonly dModel: number;
  readonly nHeads: number;
  /** Queries, keys and values in one product: [3 * dModel, dModel]. */
  qkv: Linear;
  /** The output projection. */
  proj: Linear;
  attnDropout: Dropout;
  residDropout: Dropout;

  constructor(options: { dModel: number; nHeads: number; dropout?: number; seed?: number }) {
    super();
    requiredOptions("CausalSelfAttention", options, ["dModel", "nHeads", "dropout", "seed"], 2);
    const { dModel, nHeads, dropout = 0 } = options;
    checkFeatures("CausalSelfAttention", "dModel", dModel);
    checkFeatures("CausalSelfAttention", "nHeads", nHeads);
    if (dModel % nHeads !== 0) throw new ValueError(`CausalSelfAttention: nHeads=${nHeads} does not divide dModel=${dModel}`);
    this.dModel = dModel;
    this.nHeads = nHeads;
    const seeds = childSeeds("CausalSelfAttention", options.seed, 4);
    this.qkv = new Linear(dModel, 3 * dModel, { seed: seeds[0] });
    this.proj = new Linear(dModel, dModel, { seed: seeds[1] });
    this.attnDropout = new Dropout(dropout, { seed: seeds[2] });
    this.residDropout = new Dropout(dropout, { seed: seeds[3] });
  }

  /** Attention over x [B, T, dModel] (or [T, dModel]), plus `residual` (x's shape) when given, fused where it can be. */
  forward(x: Tensor, residual?: Tensor): Tensor {
    checkTensorInput(this.label, x);
    if ((x.rank !== 2 && x.rank !== 3) || x.shape[x.rank - 1] !== this.dModel) {
      throw new ShapeError(`${this.label}: input has shape [${x.shape}], expected [B, T, ${this.dModel}] or [T, ${this.dModel}]`);
    }
    return tidy(() => {
      const input = x.rank === 2 ? expandDims(x, 0) : x;
      const [batch, length] = input.shape;
      const heads = this.nHeads;
      const headDim = this.dModel / heads;
      const scale = 1 / Math.sqrt(headDim);
      // [B, T, 3, H, hd]: each position's queries, keys and values per head, side by side.
      const packed = reshape(this.qkv.forward(input), [batch, length, 3, heads, headDim]);
      const merged = reshape(
        dropsNothing(this.attnDropout) ? packedAttention(packed, { causal: true, scale }) : this.explicitAttention(packed, scale),
        [batch, length, this.dModel],
      );
      const out = forwardResidual(this.proj, this.residDropout, merged, x.rank === 2 && residual ? expandDims(residual, 0) : residual);
      return x.rank === 2 ? squeeze(out, 0) : out;
    });
  }

  /**
   * Attention with its [T, T] weights made, for dropout on them (packedAttention never makes them), from packed
   * [B, T, 3, H, hd] to [B, T, H, hd]. The scale multiplies the queries ([T, hd] per head) rather than the scores
   * ([T, T]), and the causal mask is applied inside the softmax: no [T, T] mask is made, uploaded or added.
   */
  private explicitAttention(packed: Tensor, scale: number): Tensor {
    const [batch, length, , heads, headDim] = packed.shape;
    // [B, T, 3, H, hd] -> [3, B, H, T, hd]; one split (its gradient is one concat), not three slices (whose gradients
    // would each be padded to qkv's size).
    const [q, k, v] = split(permute(packed, [2, 0, 3, 1, 4]), 3, 0).map((part) => reshape(part, [batch, heads, length, headDim]));
    const scores = matmul(mul(q, scale), k, { transposeB: true });
    return permute(matmul(this.attnDropout.forward(softmax(scores, -1, { causal: true })), v), [0, 2, 1, 3]);
  }

  protected override extraRepr(): string {
    return `dModel=${this.dModel}, nHeads=${this.nHeads}`;
  }
}

/** The feed-forward part: fc1 (dModel -> hidden), GELU, fc2 (hidden -> dModel), dropout. */
export class MLP extends Module {
  fc1: Linear;
  act: GELU;
  fc2: Linear;
  dropout: Dropout;

  constructor(options: { dModel: number; hidden: number; dropout?: number; seed?: number }) {
    super();
    requiredOptions("MLP", options, ["dModel", "hidden", "dropout", "seed"], 2);
    // Named here: Linear's own errors would name Linear and its in/out features.
    checkFeatures("MLP", "dModel", options.dModel);
    checkFeatures("MLP", "hidden", options.hidden);
    const seeds = childSeeds("MLP", options.seed, 3);
    this.fc1 = new Linear(options.dModel, options.hidden, { seed: seeds[0] });
    this.act = new GELU();
    this.fc2 = new Linear(options.hidden, options.dModel, { seed: seeds[1] });
    this.dropout = new Dropout(options.dropout ?? 0, { seed: seeds[2] });
  }

  /** fc2(act(fc1(x))) with dropout, plus `residual` (the output's shape) when given, fused where it can be. */
  forward(x: Tensor, residual?: Tensor): Tensor {
    checkTensorInput(this.label, x);
    return tidy(() => {
      const hidden = forwardLinearActivation(this.fc1, this.act, x);
      return forwardResidual(this.fc2, this.dropout, hidden, residual);
    });
  }
}

/**
 * A pre-norm GPT block: h = x + attn(ln1(x)), then h + mlp(ln2(h)). Children: ln1, attn (qkv,
 * proj), ln2, mlp (fc1, act, fc2): patch the feed-forward layers with a pattern such as
 * /blocks\.\d+\.mlp\.fc[12]/.
 */
export class TransformerBlock extends Module {
  readonly dModel: number;
  ln1: LayerNorm;
  attn: CausalSelfAttention;
  ln2: LayerNorm;
  mlp: MLP;

  constructor(options: TransformerBlockOptions) {
    super();
    requiredOptions("TransformerBlock", options, ["dModel", "nHeads", "mlpRatio", "dropout", "seed"], 2);
    const { dModel, nHeads, mlpRatio = 4, dropout = 0 } = options;
    checkFeatures("TransformerBlock", "dModel", dModel);
    const hidden = Math.round(dModel * mlpRatio);
    if (typeof mlpRatio !== "number" || !(mlpRatio > 0) || !Number.isSafeInteger(hidden) || hidden < 1) {
      throw new ValueError(`TransformerBlock: mlpRatio must give an MLP width round(dModel * mlpRatio) >= 1, got ${formatArg(mlpRatio)} (width ${hidden})`);
    }
    this.dModel = dModel;
    const seeds = childSeeds("TransformerBlock", options.seed, 2);
    this.ln1 = new LayerNorm(dModel);
    this.attn = new CausalSelfAttention({ dModel, nHeads, dropout, seed: seeds[0] });
    this.ln2 = new LayerNorm(dModel);
    this.mlp = new MLP({ dModel, hidden, dropout, seed: seeds[1] });
  }

  forward(x: Tensor, ...rest: unknown[]): Tensor {
    checkTensorInput(this.label, x);
    // A mask (torch's src_mask, HF's attention_mask) would be ignored: this block's attention is causal only. null is no mask.
    if (rest.some((arg) => arg != null)) throw new ValueError(`${this.label}.forward: takes x alone, no mask (its attention is causal)`);
    return tidy(() => {
      const afterAttention = withResidual(this.attn, this.ln1.forward(x), x);
      return withResidual(this.mlp, this.ln2.forward(afterAttention), afterAttention);
    });
  }
}

/** `residual + branch(x)`: the residual goes into the forward of this file's attention and MLP (fused there), else is added. */
function withResidual(branch: Module, x: Tensor, residual: Tensor): Tensor {
  const { forward } = branch;
  return forward === CausalSelfAttention.prototype.forward || forward === MLP.prototype.forward ? (branch as MLP).forward(x, residual) : add(residual, branch.forward(x));
}
