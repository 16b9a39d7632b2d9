import { describe, expect, it } from "vitest";
import { kernelGroup, NcuSummaryError, stepTable, stepTableMarkdown } from "../src/ncu_steps";

// The shape of `ncu --metrics gpu__time_duration.sum --print-summary per-kernel` output, two steps' worth.
const SUMMARY = [
  "  void sm90::bsrWgmmaPersistentKernel<sm90::WgmmaTraits<__nv_bfloat16, 0, 64, 256, 4>, 1>(CUtensorMap_st, CUtensorMap_st, tc::KernelArgs) (132, 1, 1)x(384, 1, 1), Device 0, CC 9.0, Invocations 4",
  "    Section: Command line profiler metrics",
  "    ---------------------- ----------- ------------ ------------ ------------",
  "    Metric Name            Metric Unit      Minimum      Maximum      Average",
  "    ---------------------- ----------- ------------ ------------ ------------",
  "    gpu__time_duration.sum          us        50.00        55.00        52.50",
  "  void sm90::bsrWgmmaKernel<sm90::WgmmaTraits<__nv_bfloat16, 2, 64, 128, 7>>(CUtensorMap_st, CUtensorMap_st, tc::KernelArgs) (64, 2, 3)x(384, 1, 1), Device 0, CC 9.0, Invocations 4",
  "    gpu__time_duration.sum          ms         0.06         0.07         0.07",
  "  nvjet_sm90_tst_128x256_64x4_2x1_v_bz_coopA_NTN (2, 64, 1)x(384, 1, 1), Device 0, CC 9.0, Invocations 2",
  "    gpu__time_duration.sum          us        88.00        90.00        89.00",
  "  void bs::<unnamed>::biasActivationKernel<__nv_bfloat16, 2, 8>(const T1 *, const T1 *, T1 *, long, long) (16384, 1, 1)x(256, 1, 1), Device 0, CC 9.0, Invocations 2",
  "    gpu__time_duration.sum          us        44.00        45.00        44.40",
  "  void bs::<unnamed>::multiTensorAdamVectorKernel<__nv_bfloat16, __nv_bfloat16>(bs::<unnamed>::AdamBatch, bs::AdamParams) (1026, 1, 1)x(256, 1, 1), Device 0, CC 9.0, Invocations 2",
  "    gpu__time_duration.sum          us        16.00        18.00        17.00",
].join("\n");

describe("the step table from Nsight Compute's summary", () => {
  it("groups the tiles by product and path, cuBLAS together and the rest by name", () => {
    expect(kernelGroup("void sm80::bsrMmaKernel<sm80::MmaTraits<__half, 1, 32, 128, 4, 1, 4>>(tc::KernelArgs)")).toBe("dX (bsrMatmul), mma.sync tile");
    expect(kernelGroup("void sm90::bsrWgmmaKernel<sm90::WgmmaTraits<__half, 2, 64, 128, 7>>(CUtensorMap_st)")).toBe("dW (sampledMatmul), wgmma tile");
    expect(kernelGroup("void cublasLt::splitKreduce_kernel<32, 16, int, float>(x)")).toBe("cuBLAS (GEMM and its split-K reduction)");
    expect(kernelGroup("void bs::<unnamed>::columnSumPackedKernel<__nv_bfloat16>(bs::ReduceOp, const T1 *)")).toBe("columnSumPackedKernel");
    const scratch = "the dense route's scratch (W's blocks and zeros)";
    expect(kernelGroup("void bs::<unnamed>::scatterBandKernel<uint4, 8>(const T1 *, T1 *, bs::BsrPatternView, int)")).toBe(scratch);
    expect(kernelGroup("void bs::<unnamed>::copyBlocksKernel<__nv_bfloat16, 8, false>(const T1 *, T1 *, bs::BsrPatternView)")).toBe(scratch);
    expect(kernelGroup("void bs::<unnamed>::copyBlocksKernel<__nv_bfloat16, 8, true>(const T1 *, T1 *, bs::BsrPatternView)")).toBe("copyBlocksKernel");
  });

  it("divides each group's time by the Adam launches (one per step), units converted", () => {
    const table = stepTable(SUMMARY);
    expect(table.steps).toBe(2);
    const us = Object.fromEntries(table.groups.map((g) => [g.group, g.usPerStep]));
    expect(us["forward (bsrLinear), wgmma persistent"]).toBeCloseTo(105, 9);
    expect(us["dW (sampledMatmul), wgmma tile"]).toBeCloseTo(140, 9);
    expect(us["cuBLAS (GEMM and its split-K reduction)"]).toBeCloseTo(89, 9);
    expect(us.biasActivationKernel).toBeCloseTo(44.4, 9);
    expect(us.multiTensorAdamVectorKernel).toBeCloseTo(17, 9);
    expect(table.usPerStep).toBeCloseTo(105 + 140 + 89 + 44.4 + 17, 9);
    expect(table.groups[0].group).toBe("dW (sampledMatmul), wgmma tile");
    expect(table.groups.reduce((s, g) => s + g.share, 0)).toBeCloseTo(1, 12);
    expect(stepTableMarkdown(table)).toContain("| dW (sampledMatmul), wgmma tile | 2.00 | 140.0 | 35.4% |");
  });

  it("takes the step count when given, and refuses a summary with neither steps nor Adam", () => {
    expect(stepTable(SUMMARY, 4).usPerStep).toBeCloseTo((105 + 140 + 89 + 44.4 + 17) / 2, 9);
    const noAdam = SUMMARY.split("\n").slice(0, 10).join("\n");
    expect(() => stepTable(noAdam)).toThrow(NcuSummaryError);
    expect(() => stepTable(noAdam)).toThrow(/number of steps/);
    expect(() => stepTable(SUMMARY.replace("ms         0.06", "furlongs   0.06"))).toThrow(/unknown unit 'furlongs'/);
    // A fractional or zero step count divided the totals into nonsense (or blamed the summary for a missing Adam).
    // Any other text, with the steps given, made an empty table over them.
    expect(() => stepTable("not a summary", 2)).toThrow(NcuSummaryError);
    expect(() => stepTable("not a summary", 2)).toThrow(/no kernel with gpu__time_duration.sum in the summary/);
    for (const steps of [1.5, 0, -2, Number.NaN]) expect(() => stepTable(SUMMARY, steps)).toThrow(`stepTable: steps must be a positive integer, got ${steps}`);
  });
});
