/**
 * A handle from another backend (the js backend's buffers are the same class as the cpu backend's) or another cpu
 * backend instance is refused by every entry point, as the js and cuda backends refuse each other's: accepted, a write
 * changed a js tensor's values, a free counted the cpu backend's bytes below zero and put the js tensor's memory in the
 * cpu cache for the next cpu tensor, and kernels ran on it.
 */
import { BackendError, type Backend, type DataId, getBackendInstance, setBackend } from "@blocksparse/core";
import { afterAll, describe, expect, it } from "vitest";
import { CpuBackend, cpuBackend } from "../src/index";
import { cpuMissing, reportCpuAvailability } from "./cpu";

reportCpuAvailability("foreign_handles.test.ts");

describe.skipIf(cpuMissing)("handles of another backend", () => {
  afterAll(() => setBackend("cpu"));

  function expectRefused(cpu: CpuBackend, owner: Backend, handle: DataId): void {
    const before = cpu.memory();
    const info = { dataId: handle, shape: [80], dtype: "float32" as const };
    expect(() => cpu.readSync(handle)).toThrow(BackendError);
    expect(() => cpu.readSync(handle)).toThrow(`cpu: the handle does not belong to the cpu backend`);
    expect(() => cpu.write(handle, new Float32Array(80).fill(9))).toThrow(BackendError);
    expect(() => cpu.free(handle)).toThrow(BackendError);
    expect(() => cpu.kernels.Exp({ inputs: { x: info }, attrs: {}, backend: cpu })).toThrow(BackendError);
    expect(() => cpu.kernels.Matmul({ inputs: { a: { ...info, shape: [8, 10] }, b: { ...info, shape: [10, 8] } }, attrs: { transposeA: false, transposeB: false }, backend: cpu })).toThrow(BackendError);
    // Its owner still holds it, unchanged, and the cpu backend's figures did not move.
    expect(Array.from(owner.readSync(handle) as Float32Array)).toEqual(new Array(80).fill(7));
    expect(cpu.memory()).toEqual(before);
    owner.free(handle);
  }

  it("a js buffer: reads, writes, frees and kernels throw BackendError, the js tensor untouched", () => {
    setBackend("cpu");
    const js = getBackendInstance("js");
    const handle = js.allocate("float32", 80);
    js.write(handle, new Float32Array(80).fill(7));
    expectRefused(cpuBackend(), js, handle);
  });

  it("another cpu backend's buffer: the same", () => {
    const other = new CpuBackend();
    const handle = other.allocate("float32", 80);
    other.write(handle, new Float32Array(80).fill(7));
    expectRefused(cpuBackend(), other, handle);
    other.dispose();
  });
});
