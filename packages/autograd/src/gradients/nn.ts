import {
  type AttentionGrads,
  type LayerNormGrads,
  type Tensor,
  add,
  attentionBackward,
  broadcastTo,
  cast,
  crossEntropyBackward,
  div,
  expandDims,
  layerNormBackward,
  mul,
  neg,
  packedAttentionBackward,
  softmaxBackward,
  sub,
} from "@blocksparse/core";
import { AutogradError } from "../errors";
import { registerGradient } from "../registry";

/**
 * The part of dx that flows through LayerNorm's mean and rstd outputs (both over the last
 * axis of size D): dmean/dx = 1/D, drstd/dx = -rstd^3 (x - mean) / D. Computed in float32.
 */
function statisticsGrad(x: Tensor, mean: Tensor, rstd: Tensor, dmean: Tensor | null, drstd: Tensor | null): Tensor {
  const features = x.shape[x.rank - 1];
  const parts: Tensor[] = [];
  if (dmean) parts.push(expandDims(dmean, -1));
  if (drstd) {
    const r = expandDims(rstd, -1);
    // -drstd rstd^3 (x - mean) as (-drstd rstd) ((x - mean) rstd) rstd: rstd^3 alone overflows float32 past rstd = 7e12
    // (epsilon 0, a near-constant row) and goes subnormal below 2e-13, where the gradient itself does neither.
    const normalized = mul(sub(cast(x, "float32"), expandDims(mean, -1)), r);
    parts.push(mul(mul(mul(expandDims(neg(drstd), -1), r), normalized), r));
  }
  const total = parts.length === 2 ? add(parts[0], parts[1]) : parts[0];
  return cast(broadcastTo(div(total, features), x.shape), x.dtype);
}

export function registerNnGradients(): void {
  // Kernels work on the last axis; other axes arrive as Transpose nodes around them.
  registerGradient("Softmax", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y], attrs }) => ({ x: () => softmaxBackward(dy, y!, { causal: attrs.causal }) }),
  });
  registerGradient("LogSoftmax", {
    outputsToSave: [0],
    gradFunc: ([dy], { savedOutputs: [y], attrs }) => ({ x: () => softmaxBackward(dy, y!, { log: true, causal: attrs.causal }) }),
  });
  // One LayerNormBackward kernel from the saved statistics gives all three gradients.
  registerGradient("LayerNorm", {
    inputsToSave: ["x", "gamma"],
    outputsToSave: [1, 2],
    // dys[1] and dys[2] (mean, rstd) read only when a gradient reached them: unread, they cost nothing.
    gradFunc: (dys, { saved, savedOutputs, outputHasGrad }) => {
      const dy = dys[0];
      const x = saved.x as Tensor;
      const mean = savedOutputs[1]!;
      const rstd = savedOutputs[2]!;
      let grads: LayerNormGrads | undefined;
      const kernelGrads = () => {
        grads ??= layerNormBackward(dy, x, mean, rstd, saved.gamma);
        return grads;
      };
      return {
        x: () => {
          const dx = kernelGrads().dx;
          if (!outputHasGrad[1] && !outputHasGrad[2]) return dx;
          return add(dx, statisticsGrad(x, mean, rstd, outputHasGrad[1] ? dys[1] : null, outputHasGrad[2] ? dys[2] : null));
        },
        gamma: () => kernelGrads().dgamma,
        beta: () => kernelGrads().dbeta,
      };
    },
  });
  // One AttentionBackward kernel from the saved out and lse gives all three gradients (the scores recomputed).
  registerGradient("Attention", {
    inputsToSave: ["q", "k", "v"],
    outputsToSave: [0, 1],
    gradFunc: (dys, { saved, savedOutputs, attrs, outputHasGrad }) => {
      // lse is not returned by scaledDotProductAttention; attentionWithStats' lse carries no gradient of its own.
      if (outputHasGrad[1]) {
        throw new AutogradError(
          "Attention: a gradient reached its lse output, which has none: detach lse (or compute with it inside noGrad); only out is differentiable",
        );
      }
      const dout = dys[0];
      let grads: AttentionGrads | undefined;
      const kernelGrads = () => {
        grads ??= attentionBackward(dout, saved.q!, saved.k!, saved.v!, savedOutputs[0]!, savedOutputs[1]!, attrs);
        return grads;
      };
      return { q: () => kernelGrads().dq, k: () => kernelGrads().dk, v: () => kernelGrads().dv };
    },
  });
  // PackedAttention: one PackedAttentionBackward kernel writes the packed gradient of qkv.
  registerGradient("PackedAttention", {
    inputsToSave: ["qkv"],
    outputsToSave: [0, 1],
    gradFunc: (dys, { saved, savedOutputs, attrs, outputHasGrad }) => {
      if (outputHasGrad[1]) {
        throw new AutogradError(
          "PackedAttention: a gradient reached its lse output, which has none: detach lse (or compute with it inside noGrad); only out is differentiable",
        );
      }
      return { qkv: () => packedAttentionBackward(dys[0], saved.qkv!, savedOutputs[0]!, savedOutputs[1]!, attrs) };
    },
  });
  registerGradient("CrossEntropy", {
    inputsToSave: ["logits", "targets"],
    gradFunc: ([dy], { saved, attrs }) => ({ logits: () => crossEntropyBackward(saved.logits!, saved.targets!, dy, attrs) }),
  });
}
