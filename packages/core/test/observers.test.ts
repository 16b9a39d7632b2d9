import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import {
  BACKEND_KERNELS,
  Clone,
  DisposedTensorError,
  type DisposeRecord,
  ENGINE_KERNELS,
  IndexCopy,
  type KernelRecord,
  Move,
  addAssignObserver,
  addDisposeObserver,
  addKernelObserver,
  addRequiresGradObserver,
  cast,
  dispose,
  getBackendInstance,
  indexCopy,
  keep,
  listBackends,
  memory,
  ones,
  registerBackend,
  removeBackend,
  runKernel,
  setBackend,
  slice,
  tensor,
  tidy,
  transpose,
  ShapeError,
  ValueError,
} from "@blocksparse/core";
import { afterEach, describe, expect, it } from "vitest";
import { ToyBackend } from "./toy_backend";

afterEach(() => {
  setBackend("js");
  for (const name of listBackends()) if (name !== "js") removeBackend(name);
});

/** Runs `fn` with a kernel observer and a dispose observer, returning what each saw. */
function observe<T>(fn: () => T): { result: T; kernels: KernelRecord[]; disposed: DisposeRecord[] } {
  const kernels: KernelRecord[] = [];
  const disposed: DisposeRecord[] = [];
  const stopKernels = addKernelObserver((record) => kernels.push(record));
  const stopDisposals = addDisposeObserver((record) => disposed.push(record));
  try {
    return { result: fn(), kernels, disposed };
  } finally {
    stopKernels();
    stopDisposals();
  }
}

describe("Clone: clone() as an engine kernel observers see", () => {
  it("is the engine's, not a backend's", () => {
    expect(ENGINE_KERNELS).toContain(Clone);
    expect(BACKEND_KERNELS).not.toContain(Clone);
  });

  it("reports clone() with its input and an output sharing the buffer", () => {
    const a = tensor([1, 2, 3]);
    const { result: b, kernels } = observe(() => a.clone());
    expect(kernels.map((k) => k.kernelName)).toEqual(["Clone"]);
    expect(kernels[0].inputs).toEqual({ x: a });
    expect(kernels[0].attrs).toEqual({});
    expect(kernels[0].outputs).toHaveLength(1);
    expect(kernels[0].outputs[0]).toBe(b);
    expect(b).not.toBe(a);
    expect(b.dataId).toBe(a.dataId);
    expect(b.shape).toEqual(a.shape);
    a.dispose();
    expect(Array.from(b.dataSync())).toEqual([1, 2, 3]);
    b.dispose();
  });

  it("reports the clones that no-op calls return (identity transpose, full slice, same-dtype cast)", () => {
    const a = tensor([
      [1, 2],
      [3, 4],
    ]);
    const { result, kernels } = observe(() => [transpose(a, [0, 1]), slice(a, [0, 0]), cast(a, "float32")]);
    expect(kernels.map((k) => k.kernelName)).toEqual(["Clone", "Clone", "Clone"]);
    kernels.forEach((k, i) => {
      expect(k.inputs).toEqual({ x: a });
      expect(k.outputs[0]).toBe(result[i]);
    });
    dispose([a, result]);
  });

  it("runs a transpose that only moves axes of size 1 as a reshape (no Transpose kernel), with the same values", () => {
    const a = tensor([1, 2, 3, 4, 5, 6], [2, 1, 3]);
    const { result, kernels } = observe(() => [transpose(a, [1, 0, 2]), transpose(a, [0, 2, 1]), transpose(a, [2, 1, 0])]);
    expect(kernels.map((k) => k.kernelName)).toEqual(["Reshape", "Reshape", "Transpose"]);
    expect(result.map((t) => t.shape)).toEqual([
      [1, 2, 3],
      [2, 3, 1],
      [3, 1, 2],
    ]);
    expect(Array.from(result[0].dataSync())).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(result[1].dataSync())).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(result[2].dataSync())).toEqual([1, 4, 2, 5, 3, 6]);
    dispose([a, result]);
  });

  it("works through runKernel on a backend that implements no Clone", () => {
    registerBackend("toy", () => new ToyBackend("toy"), 0);
    const toy = getBackendInstance("toy");
    expect(toy.kernels.Clone).toBeUndefined();
    setBackend("toy");
    const a = ones([2, 2]);
    const b = runKernel(Clone, { x: a }, {});
    expect(b.backend).toBe(toy);
    expect(b.dataId).toBe(a.dataId);
    expect(toy.memory().buffers).toBe(1);
    dispose([a, b]);
    expect(toy.memory().buffers).toBe(0);
  });

  it("rejects a disposed tensor, naming clone", () => {
    const a = tensor([1]);
    a.dispose();
    expect(() => a.clone()).toThrow(DisposedTensorError);
    expect(() => a.clone()).toThrow(/^clone: tensor \d+ .* was disposed$/);
    expect(() => runKernel(Clone, { x: a }, {})).toThrow(/Clone: x .* was disposed/);
  });
});

describe("Move: to() as an engine kernel observers see", () => {
  it("is the engine's, not a backend's", () => {
    expect(ENGINE_KERNELS).toContain(Move);
    expect(BACKEND_KERNELS).not.toContain(Move);
  });

  it("reports to(name) with its input, the backend's name and an output holding the values there", () => {
    registerBackend("toy", () => new ToyBackend("toy"), 0);
    const toy = getBackendInstance("toy");
    const a = tensor([1, 2, 3]);
    const { result: b, kernels } = observe(() => a.to("toy"));
    expect(kernels.map((k) => [k.kernelName, k.attrs])).toEqual([["Move", { backend: "toy" }]]);
    expect(kernels[0].inputs).toEqual({ x: a });
    expect(kernels[0].outputs).toEqual([b]);
    expect([b.backend, Array.from(b.dataSync())]).toEqual([toy, [1, 2, 3]]);
    dispose([a, b]);
    expect(toy.memory().buffers).toBe(0);
  });

  it("on the tensor's own backend shares its buffer, as clone() does", () => {
    const a = tensor([1, 2]);
    const { result: b, kernels } = observe(() => a.to("js"));
    expect(kernels.map((k) => k.kernelName)).toEqual(["Move"]);
    expect(b.dataId).toBe(a.dataId);
    dispose([a, b]);
  });

  it("names the backend that is not registered", () => {
    const a = tensor([1]);
    expect(() => a.to("nowhere")).toThrow(/Backend 'nowhere' is not registered/);
    a.dispose();
  });
});

describe("indexCopy into a shared buffer", () => {
  it("is reported as the in-place call it stands for, once, the target on a new buffer of its own", () => {
    const [target, indices, source] = [tensor([1, 2, 3]), tensor([2], [1], "int32"), tensor([9])];
    const sharer = target.clone();
    const [live, version] = [memory().numTensors, target.version];
    const { kernels, disposed } = observe(() => indexCopy(target, indices, source));
    expect(kernels.map((k) => [k.kernelName, k.attrs, k.outputs])).toEqual([[IndexCopy, { axis: 0, inPlace: true }, []]]);
    expect(kernels[0].inputs).toEqual({ target, indices, source });
    expect([Array.from(target.dataSync()), Array.from(sharer.dataSync())]).toEqual([[1, 2, 9], [1, 2, 3]]);
    expect(target.dataId).not.toBe(sharer.dataId);
    expect(target.version).toBe(version + 1);
    // The out-of-place output went once its buffer was the target's.
    expect([memory().numTensors, disposed.length]).toEqual([live, 1]);
    dispose([target, sharer, indices, source]);
  });
});

describe("dispose observers", () => {
  it("report an explicit dispose once, after the buffer reference is dropped, until unsubscribed", () => {
    const a = tensor([1, 2]);
    const tensorsBefore = memory().numTensors;
    const seen: { id: number; wasDisposed: boolean; tensors: number }[] = [];
    const stop = addDisposeObserver(({ id, tensor: t }) => {
      seen.push({ id, wasDisposed: t?.isDisposed ?? false, tensors: memory().numTensors });
    });
    a.dispose();
    a.dispose(); // idempotent: no second report
    stop();
    const b = tensor([3]);
    b.dispose();
    expect(seen).toEqual([{ id: a.id, wasDisposed: true, tensors: tensorsBefore - 1 }]);
  });

  it("pass the tensor itself when it is disposed by a call", () => {
    const a = tensor([1]);
    const { disposed } = observe(() => a.dispose());
    expect(disposed).toHaveLength(1);
    expect(disposed[0].tensor).toBe(a);
  });

  it("report what tidy disposes, and neither the result nor kept tensors", () => {
    let inner: number[] = [];
    const { result, disposed } = observe(() =>
      tidy(() => {
        const x = ones([3]);
        const y = x.clone();
        const held = keep(ones([1]));
        const out = transpose(ones([2, 3]));
        inner = [x.id, y.id];
        return { out, held };
      }),
    );
    const ids = disposed.map((r) => r.id);
    expect(ids).toEqual(expect.arrayContaining(inner));
    expect(ids).not.toContain(result.out.id);
    expect(ids).not.toContain(result.held.id);
    // ones([2, 3]) inside tidy was disposed too: the three unreturned, unkept tensors.
    expect(ids).toHaveLength(3);
    for (const record of disposed) expect(record.tensor?.isDisposed).toBe(true);
    dispose([result.out, result.held]);
  });

  it("report every tensor dispose(value) finds", () => {
    const parts = [tensor([1]), tensor([2])];
    const map = new Map([["c", tensor([3])]]);
    const { disposed } = observe(() => dispose({ parts, map }));
    expect(disposed.map((r) => r.id).sort((p, q) => p - q)).toEqual([...parts, map.get("c")!].map((t) => t.id));
  });

  it("report a tensor the finalizer frees, by id, with no tensor", async () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as (() => void) | undefined;
    if (typeof gc !== "function") {
      console.log("skipping the finalizer report: this Node exposes no gc");
      return;
    }
    const disposed: DisposeRecord[] = [];
    const stop = addDisposeObserver((record) => disposed.push(record));
    const id = (() => ones([1000]).id)();
    try {
      for (let i = 0; i < 20 && !disposed.some((r) => r.id === id); i++) {
        gc();
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    } finally {
      stop();
    }
    expect(disposed.filter((r) => r.id === id)).toEqual([{ id, tensor: null }]);
  });

  it("removing an observer during a report takes effect from the next report", () => {
    const order: string[] = [];
    let stopSecond: () => void = () => {};
    const stopFirst = addDisposeObserver(() => {
      order.push("first");
      stopSecond();
    });
    stopSecond = addDisposeObserver(() => order.push("second"));
    tensor([1]).dispose();
    tensor([2]).dispose();
    stopFirst();
    // The snapshot taken at the first report still calls "second" once; then it is gone.
    expect(order).toEqual(["first", "second", "first"]);
  });
});

describe("requiresGrad observers", () => {
  it("see each change before it takes effect, not a set to the current value, and refuse it by throwing", () => {
    const t = tensor([1, 2]);
    const seen: [number, boolean, boolean][] = [];
    const stop = addRequiresGradObserver(({ tensor: changed, value }) => {
      seen.push([changed.id, value, changed.requiresGrad]);
      if (!value) throw new Error("refused");
    });
    t.requiresGrad = true;
    t.requiresGrad = true;
    expect(() => {
      t.requiresGrad = false;
    }).toThrow("refused");
    expect(t.requiresGrad).toBe(true);
    stop();
    t.requiresGrad = false;
    expect(seen).toEqual([
      [t.id, true, false],
      [t.id, false, true],
    ]);
    expect(t.requiresGrad).toBe(false);
  });
});

describe("assign observers", () => {
  it("see each checked assign before it writes, and refuse it by throwing with the target left unchanged", () => {
    const target = tensor([1, 2]);
    const source = tensor([3, 4]);
    const seen: [number, number, number[]][] = [];
    const stop = addAssignObserver(({ target: written, source: read }) => {
      seen.push([written.id, read.id, written.toArray()]);
      throw new Error("refused");
    });
    expect(() => target.assign(source)).toThrow("refused");
    expect([target.toArray(), target.version]).toEqual([[1, 2], 0]);
    // An assign its own checks refuse never reaches the observers.
    expect(() => target.assign(tensor([1, 2, 3]))).toThrow(ShapeError);
    stop();
    target.assign(source);
    expect([target.toArray(), target.version]).toEqual([[3, 4], 1]);
    expect(seen).toEqual([[target.id, source.id, [1, 2]]]);
    dispose([target, source]);
  });
});

describe("adding an observer", () => {
  it("refuses one that is not a function with a ValueError, and later ops and disposals still run", () => {
    const cases: [(observer: never) => () => void, string][] = [
      [addKernelObserver, "addKernelObserver"],
      [addDisposeObserver, "addDisposeObserver"],
      [addRequiresGradObserver, "addRequiresGradObserver"],
      [addAssignObserver, "addAssignObserver"],
    ];
    for (const [add, name] of cases) {
      expect(() => add({ onKernel() {} } as never)).toThrow(new ValueError(`${name}: observer must be a function, got object`));
      expect(() => add(undefined as never)).toThrow(new ValueError(`${name}: observer must be a function, got undefined`));
    }
    // Each was kept and called by every later kernel, disposal or requiresGrad change, which threw "observer is not a function".
    const t = tensor([1, 2]);
    const u = cast(t, "float16");
    t.requiresGrad = true;
    expect(u.toArray()).toEqual([1, 2]);
    dispose([t, u]);
  });
});
