import "../src/index";
import { runBackendConformance } from "@blocksparse/core/testing";
import { describe } from "vitest";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("conformance.test.ts");

// core's shared suite, unchanged, on the cpu backend.
describe.skipIf(cpuMissing)("cpu", () => {
  runBackendConformance("cpu");
});
