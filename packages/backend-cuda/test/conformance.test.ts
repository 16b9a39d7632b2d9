import "../src/index";
import { runBackendConformance } from "@blocksparse/core/testing";
import { describe } from "vitest";
import { cudaMissing, reportCudaAvailability } from "./cuda";

reportCudaAvailability("conformance.test.ts");

// core's shared suite, unchanged, on the cuda backend.
describe.skipIf(cudaMissing)("cuda", () => {
  runBackendConformance("cuda");
});
