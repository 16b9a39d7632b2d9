import { add, mul, tensor, tidy } from "../../src/index";

/** A training-like loop that leaks two tensors per step and never calls the guard: BLOCKSPARSE_DEBUG_LEAKS=1 must warn. */
const x = tensor([1, 2, 3, 4], [4]);
for (let step = 0; step < 300; step++) {
  const y = add(x, x);
  mul(y, y);
  tidy(() => add(x, x)); // the optimizer's tidy: one outermost scope exit per step
}
