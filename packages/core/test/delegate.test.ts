import {
  BACKEND_KERNELS,
  type BackendKernelName,
  type KernelTable,
  getBackendInstance,
  registerBackend,
  removeBackend,
} from "@blocksparse/core";
import { delegateToJs, delegatedKernels } from "@blocksparse/core/js-kernels";
import { runBackendConformance } from "@blocksparse/core/testing";
import { afterAll, describe, expect, it } from "vitest";
import { ToyBackend } from "./toy_backend";

// A backend with memory of its own and not one kernel of its own: every entry delegates to js.
const delegating: Record<string, unknown> = {};
for (const name of BACKEND_KERNELS) delegating[name] = delegateToJs(name);
registerBackend("delegating", () => new ToyBackend("delegating", { kernels: delegating as KernelTable<ToyBackend> }), 0);
afterAll(() => removeBackend("delegating"));

describe("delegateToJs", () => {
  it("marks its entries, so a backend can list the kernels it still delegates", () => {
    const table = { Add: delegateToJs("Add"), Neg: () => undefined };
    expect(delegatedKernels(table)).toEqual<BackendKernelName[]>(["Add"]);
    expect(delegatedKernels(getBackendInstance("delegating").kernels)).toEqual([...BACKEND_KERNELS]);
  });
});

// Every kernel, routed through the backend's own allocate/readSync/write, meets the whole suite.
runBackendConformance("delegating");
