import "@blocksparse/autograd";

export const version = "0.1.0";

// What an app needs beside the layers (tensors, scopes, backends, backward), so that it can
// depend on @blocksparse/nn alone; the full set of ops stays in @blocksparse/core.
export { backward, detach, noGrad } from "@blocksparse/autograd";
export {
  BsrPattern,
  CoreError,
  DisposedTensorError,
  type DType,
  DTypeError,
  ShapeError,
  Tensor,
  ValueError,
  arange,
  argmax,
  dispose,
  full,
  getBackend,
  keep,
  listBackends,
  manualSeed,
  memory,
  ones,
  rand,
  randint,
  randn,
  scalar,
  setBackend,
  tensor,
  tidy,
  zeros,
} from "@blocksparse/core";

export {
  type BlockShape,
  BlockSparseLinear,
  type BlockSparseLinearOptions,
  DEFAULT_BLOCK_SHAPE,
  type FromLinearOptions,
  type SetPatternOptions,
} from "./block_sparse_linear";
export { blockCountFor, blockSources, remapBlocks } from "./blocks";
export { type ClipGradNormOptions, clipGradNorm, clipGradValue } from "./clip";
export { NnError, StateDictError, type StateDictMismatch } from "./errors";
export {
  Dropout,
  dropsNothing,
  Embedding,
  type EmbeddingOptions,
  forwardLinearActivation,
  forwardResidual,
  GELU,
  LayerNorm,
  type LayerNormOptions,
  ModuleDict,
  type ModuleDictInput,
  ModuleList,
  ReLU,
  Sequential,
} from "./layers";
export { Linear, type LinearOptions } from "./linear";
export {
  type BinaryCrossEntropyOptions,
  type BinaryCrossEntropyWithLogitsOptions,
  binaryCrossEntropy,
  binaryCrossEntropyWithLogits,
  crossEntropy,
  type DistillationOptions,
  distillationLoss,
  type HuberLossOptions,
  huberLoss,
  type KlDivergenceOptions,
  type KlDivOptions,
  klDiv,
  klDivergence,
  l1Loss,
  mseLoss,
  type NllLossOptions,
  nllLoss,
  type SmoothL1LossOptions,
  smoothL1Loss,
} from "./losses";
export { allFinite, GradScaler, type GradScalerOptions, type GradScalerState } from "./grad_scaler";
export { initSkipped, skipInit } from "./init";
export {
  ConstantLR,
  type ConstantLROptions,
  CosineAnnealingLR,
  type CosineAnnealingLROptions,
  CosineAnnealingWarmRestarts,
  type CosineAnnealingWarmRestartsOptions,
  ExponentialLR,
  type ExponentialLROptions,
  LambdaLR,
  type LambdaLROptions,
  LinearLR,
  type LinearLROptions,
  LRScheduler,
  type LRSchedulerState,
  MultiStepLR,
  type MultiStepLROptions,
  OneCycleLR,
  type OneCycleLROptions,
  PolynomialLR,
  type PolynomialLROptions,
  ReduceLROnPlateau,
  type ReduceLROnPlateauOptions,
  type SchedulerOption,
  SequentialLR,
  type SequentialLROptions,
  StepLR,
  type StepLROptions,
} from "./lr_scheduler";
export { functionalCall, type LoadStateDictOptions, type LoadStateDictResult, Module, type ModuleTarget } from "./module";
export {
  Adam,
  type AdamOptions,
  AdamW,
  type Hyperparameter,
  inverseDensity,
  type MasterWeights,
  Optimizer,
  type OptimizerOptions,
  type OptimizerStateDict,
  type ParameterUpdate,
  SGD,
  type SGDOptions,
} from "./optim";
export { Parameter } from "./parameter";
export { loadOptimizerState, loadStateDict, saveOptimizerState, saveStateDict, stateDictFromSafetensors, stateDictToSafetensors } from "./serialization";
export {
  type LayerGradient,
  type LossClosure,
  type PatternMove,
  type PruneAndRegrowOptions,
  pruneAndRegrow,
  type Regrowth,
  SparseOptimizer,
  type SparseOptimizerOptions,
  type SparseOptimizerState,
} from "./sparse_training";
export { BlockSparseWeight, disposeStateDict, type StateDict, type StateDictEntry } from "./state_dict";
export { parameterCount, weightBytes } from "./summary";
export { CausalSelfAttention, MLP, TransformerBlock, type TransformerBlockOptions } from "./transformer";
