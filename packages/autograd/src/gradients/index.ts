import { registerElementwiseGradients } from "./elementwise";
import { registerNnGradients } from "./nn";
import { registerProductGradients } from "./products";
import { registerReduceGradients } from "./reduce";
import { registerShapeGradients } from "./shape";

/** Registers the gradient of every differentiable core kernel. */
export function registerAllGradients(): void {
  registerElementwiseGradients();
  registerReduceGradients();
  registerShapeGradients();
  registerNnGradients();
  registerProductGradients();
}
