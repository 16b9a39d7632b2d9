import "./install";

export const version = "0.1.0";

export { addGradReadyObserver, type BackwardOptions, backward, type GradReadyObserver, reachableLeaves, zeroGrad } from "./backward";
export { AutogradError, GradientNotRegisteredError, InPlaceWriteError } from "./errors";
export { type GradcheckInputDetail, type GradcheckOptions, type GradcheckResult, gradcheck } from "./gradcheck";
export { reduceToShape } from "./gradients/helpers";
export {
  type AttrsOf,
  type GradConfig,
  type GradContext,
  type GradFuncs,
  type InputsOf,
  type TensorMeta,
  getGradient,
  listGradients,
  registerGradient,
} from "./registry";
export { detach, isRecording, noGrad, tracksGrad } from "./tape";
