/**
 * The backend conformance suite: `runBackendConformance(name)` declares (with vitest) every
 * kernel's tests against the named backend, one file per kernel family under testing/.
 * Values are checked against float64 math written here, on seeded random inputs, in
 * float32, float16 and bfloat16 with per-dtype tolerances; outputs are poisoned (the
 * backend's `poisonAllocations`) so an unwritten element fails; each test fails if it
 * leaves a buffer allocated, and each kernel call if it leaves more buffers than its
 * outputs (the engine's leak check). Every test title and failure message names the
 * kernel and the case (dtype, shapes, block shape, density, bias).
 */
import { describe } from "vitest";
import { declareBackendObjectTests } from "./testing/backend_object";
import { declareElementwiseTests } from "./testing/elementwise";
import { declareErrorTests } from "./testing/errors";
import { startConformance } from "./testing/harness";
import { declareNnTests } from "./testing/nn";
import { declareOptimizerTests } from "./testing/optimizer";
import { declareProductTests } from "./testing/products";
import { declareReductionTests } from "./testing/reduction";
import { declareShapeTests } from "./testing/shape";

export { TOLERANCES } from "./testing/harness";
export { declareGraphTests, declareNoGraphTests } from "./testing/graphs";
export { GraphRecordingBackend, registerGraphRecordingBackend } from "./testing/graph_backend";
/** The suite's float64 reference math (dense W of a pattern, matmul, ...), for a backend's own tests. */
export * as reference from "./testing/reference";
export { SeededRandom } from "@blocksparse/format";

/**
 * Declares the conformance tests for backend `backendName` (registered beforehand, e.g. by
 * importing its package). Call it once from a test file; it uses vitest's describe/it.
 */
export function runBackendConformance(backendName: string): void {
  describe(`backend conformance: ${backendName}`, () => {
    const suite = startConformance(backendName);
    declareBackendObjectTests(suite);
    declareShapeTests(suite);
    declareElementwiseTests(suite);
    declareReductionTests(suite);
    declareNnTests(suite);
    declareProductTests(suite);
    declareOptimizerTests(suite);
    declareErrorTests(suite);
  });
}
