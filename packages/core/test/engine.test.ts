import {
  BackendError,
  Engine,
  ValueError,
  KernelLeakError,
  KernelNotRegisteredError,
  type KernelRecord,
  add,
  addDisposeObserver,
  addKernelObserver,
  type DisposeRecord,
  getBackend,
  getBackendInstance,
  keep,
  listBackends,
  memory,
  neg,
  registerBackend,
  removeBackend,
  reshape,
  setBackend,
  setKernelLeakCheck,
  tidy,
  zeros,
  ones,
  tensor,
  exp,
  dispose,
  fullOn,
  importBackendModules,
  tensorOn,
  type Tensor,
  indexCopy,
  multiTensorAdamUpdateInPlace,
} from "@blocksparse/core";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ToyBackend } from "./toy_backend";

afterEach(() => {
  setBackend("js");
  for (const name of listBackends()) if (name !== "js") removeBackend(name);
  vi.restoreAllMocks();
});

describe("backend registry", () => {
  it("starts the highest-priority backend that starts, warning once for each that fails", () => {
    const engine = new Engine();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    engine.registerBackend("low", () => new ToyBackend("low"), 1);
    engine.registerBackend(
      "broken",
      () => {
        throw new Error("no device found");
      },
      10,
    );
    engine.registerBackend("mid", () => new ToyBackend("mid"), 5);
    expect(engine.listBackends()).toEqual(["broken", "mid", "low"]);
    expect(engine.activeBackendName()).toBe("mid");
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toContain("Backend 'broken' failed to start: no device found");
    // The failure is remembered: no retry, no second warning, a clear error on explicit use.
    engine.removeBackend("mid");
    expect(engine.activeBackendName()).toBe("low");
    expect(warn).toHaveBeenCalledTimes(1);
    expect(() => engine.setBackend("broken")).toThrow(/Backend 'broken' failed to start: no device found/);
  });

  it("throws a BackendError listing every failure when nothing starts", () => {
    const engine = new Engine();
    vi.spyOn(console, "warn").mockImplementation(() => {});
    engine.registerBackend("a", () => {
      throw new Error("reason A");
    });
    expect(() => engine.activeBackend()).toThrow(BackendError);
    expect(() => engine.activeBackend()).toThrow(/reason A/);
    expect(() => new Engine().activeBackend()).toThrow(/No backend is registered/);
  });

  it("refuses a second registration under one name, and unknown names", () => {
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    expect(registerBackend("toy", () => new ToyBackend("toy"), 3)).toBe(true);
    expect(registerBackend("toy", () => new ToyBackend("toy"), 3)).toBe(false);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(() => setBackend("nope")).toThrow(/Backend 'nope' is not registered \(registered: toy, js\)/);
    // A symbol failed as a bare TypeError while the message was built.
    const one = ones([1]);
    for (const name of [Symbol("s"), 42, null]) {
      expect(() => setBackend(name as never)).toThrow(BackendError);
      expect(() => one.to(name as never)).toThrow(/a backend name must be a string, got /);
    }
    one.dispose();
  });

  it("refuses a name, factory or priority of the wrong kind when registering, with a ValueError naming it", () => {
    const engine = new Engine();
    const make = () => new ToyBackend("toy");
    expect(() => engine.registerBackend("toy", "ToyBackend" as unknown as () => ToyBackend)).toThrow(
      new ValueError("registerBackend: factory of 'toy' must be a function returning the backend, got string"),
    );
    expect(() => engine.registerBackend(5 as unknown as string, make)).toThrow(new ValueError("registerBackend: name must be a non-empty string, got 5"));
    expect(() => engine.registerBackend("", make)).toThrow(new ValueError('registerBackend: name must be a non-empty string, got ""'));
    expect(() => engine.registerBackend("toy", make, Number.NaN)).toThrow(new ValueError("registerBackend: priority of 'toy' must be a finite number, got NaN"));
    expect(() => engine.registerBackend("toy", make, "9" as unknown as number)).toThrow(new ValueError('registerBackend: priority of \'toy\' must be a finite number, got "9"'));
    // Nothing was registered by the refused calls.
    expect(engine.listBackends()).toEqual([]);
  });

  it("a factory that returns no Backend fails to start, named, and the registry falls back to the next", () => {
    const engine = new Engine();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    engine.registerBackend("hollow", () => ({ name: "hollow", kernels: {} }) as unknown as ToyBackend, 10);
    engine.registerBackend("nothing", () => undefined as unknown as ToyBackend, 5);
    engine.registerBackend("toy", () => new ToyBackend("toy"), 1);
    // The first op threw "Cannot read properties of undefined (reading 'Fill')" on the hollow backend.
    expect(engine.activeBackendName()).toBe("toy");
    expect(warn.mock.calls.map((call) => String(call[0]))).toEqual([
      "Backend 'hollow' failed to start: its factory returned an object that is not a Backend: it lacks allocate, write, read, readSync, free, memory; falling back to the next backend",
      "Backend 'nothing' failed to start: its factory returned undefined, not a Backend object; falling back to the next backend",
    ]);
    expect(() => engine.setBackend("hollow")).toThrow(BackendError);
  });

  it("a factory whose backend names itself otherwise fails to start, named, and the registry falls back to the next", () => {
    // Code that follows a tensor's backend moves to tensor.backend.name (a gradient, optimizer state): under another
    // name it reached the registered 'js', and errors read "is on backend 'js' but ... is on 'js'".
    const engine = new Engine();
    const warn = vi.spyOn(console, "warn").mockImplementation(() => {});
    engine.registerBackend("alias", () => new ToyBackend("toy"), 10);
    engine.registerBackend("toy", () => new ToyBackend("toy"), 1);
    expect(engine.activeBackendName()).toBe("toy");
    expect(warn.mock.calls.map((call) => String(call[0]))).toEqual([
      "Backend 'alias' failed to start: its factory returned a backend named 'toy'; a backend's name must be the one it is registered under; falling back to the next backend",
    ]);
    expect(() => engine.setBackend("alias")).toThrow(BackendError);
  });

  it("js is registered by core's entry and is the default", () => {
    expect(listBackends()).toContain("js");
    expect(getBackend()).toBe("js");
    expect(getBackendInstance().name).toBe("js");
  });

  it("a kernel the backend lacks throws KernelNotRegisteredError naming both", () => {
    registerBackend("toy", () => new ToyBackend("toy"));
    setBackend("toy");
    const x = ones([3]);
    expect(add(x, x).dataSync()).toEqual(Float32Array.from([2, 2, 2]));
    let caught: unknown;
    try {
      neg(x);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(KernelNotRegisteredError);
    expect((caught as Error).message).toBe("Kernel 'Neg' is not registered for backend 'toy'");
    x.dispose();
  });

  it("moves tensors between backends and refuses to mix them in one op", () => {
    registerBackend("toy", () => new ToyBackend("toy"));
    const onJs = tensor([1, 2, 3]);
    const onToy = onJs.to("toy");
    expect(onToy.backend.name).toBe("toy");
    expect(Array.from(onToy.dataSync())).toEqual([1, 2, 3]);
    expect(() => add(onJs, onToy)).toThrow("add: b is on backend 'toy' but a is on 'js'; move one with tensor.to(name)");
    dispose([onJs, onToy]);
  });

  it("fullOn and tensorOn make tensors on the given backend while js stays active", () => {
    registerBackend("toy", () => new ToyBackend("toy"));
    const toy = getBackendInstance("toy");
    const filled = fullOn(toy, [2, 2], 3);
    const made = tensorOn(toy, [1.5, -2], [2]);
    expect(getBackend()).toBe("js");
    expect([filled.backend.name, made.backend.name]).toEqual(["toy", "toy"]);
    expect(Array.from(filled.dataSync())).toEqual([3, 3, 3, 3]);
    expect(Array.from(made.dataSync())).toEqual([1.5, -2]);
    expect(() => tensorOn(toy, [1, 2, 3], [2])).toThrow("3 values do not fill shape [2]");
    expect(() => fullOn(toy, [2], 0.5, "int32")).toThrow("fullOn: value 0.5 is not an integer (dtype int32)");
    dispose([filled, made]);
  });

  it("importBackendModules returns what each module registered, and names a module that fails or registers nothing", async () => {
    const loaded: string[] = [];
    const load = async (specifier: string) => {
      loaded.push(specifier);
      if (specifier === "@example/backend-toy") registerBackend("toy", () => new ToyBackend("toy"));
      if (specifier === "missing") throw new Error("Cannot find package 'missing'");
    };
    expect(await importBackendModules(["@example/backend-toy"], load)).toEqual(["toy"]);
    await expect(importBackendModules(["missing"], load)).rejects.toThrow("backend module 'missing' could not be imported: Cannot find package 'missing'");
    await expect(importBackendModules(["./inert.js"], load)).rejects.toThrow(BackendError);
    await expect(importBackendModules(["./inert.js"], load)).rejects.toThrow("backend module './inert.js' was imported but registered no backend");
    // A path is resolved from the working directory before it is loaded.
    expect(loaded.at(-1)).toBe(new URL("./inert.js", `file://${process.cwd()}/`).href);
    // "#", "?" and "%" in the directory or the path are escaped (a URL read them as a fragment, a query, an escape),
    // and a Windows directory becomes a file URL path.
    const cwd = vi.spyOn(process, "cwd");
    try {
      for (const [dir, url] of [
        ["/home/a#b/c?d/e%f g", "file:///home/a%23b/c%3Fd/e%25f%20g/m%231.js"],
        ["C:\\Users\\me", "file:///C:/Users/me/m%231.js"],
      ]) {
        cwd.mockReturnValue(dir);
        await expect(importBackendModules(["./m#1.js"], load)).rejects.toThrow(BackendError);
        expect(loaded.at(-1)).toBe(url);
      }
    } finally {
      cwd.mockRestore();
    }
  });

  it("importBackendModules says that a module imported before registers nothing again, and which backends are registered", async () => {
    // As import() does: a module runs (and registers) once; a second import returns it from the cache.
    const imported = new Set<string>();
    const load = async (specifier: string) => {
      if (imported.has(specifier)) return;
      imported.add(specifier);
      registerBackend("toy", () => new ToyBackend("toy"));
    };
    expect(await importBackendModules(["@example/backend-toy"], load)).toEqual(["toy"]);
    await expect(importBackendModules(["@example/backend-toy"], load)).rejects.toThrow(
      /^backend module '@example\/backend-toy' was imported but registered no backend \(.*; one imported before registers nothing again; registered now: (\w+, )*toy(, \w+)*\)$/,
    );
  });

  it("importBackendModules refuses a single string or a load that is not a function before loading anything", async () => {
    const loaded: string[] = [];
    const load = async (specifier: string) => {
      loaded.push(specifier);
    };
    // A string was walked character by character: "backend module '.' could not be imported".
    await expect(importBackendModules("./backend.js" as never, load)).rejects.toThrow(
      new ValueError('importBackendModules: specifiers must be an array of non-empty strings, got "./backend.js"'),
    );
    await expect(importBackendModules(["a", 5] as never, load)).rejects.toThrow(new ValueError('importBackendModules: specifiers must be an array of non-empty strings, got ["a", 5]'));
    await expect(importBackendModules(["a"], "import" as never)).rejects.toThrow(new ValueError('importBackendModules: load must be a function such as (s) => import(s), got "import"'));
    expect(loaded).toEqual([]);
  });

  it("the leak check fails a kernel that leaves a scratch buffer allocated", () => {
    registerBackend("leaky", () => new ToyBackend("leaky", { leakyNeg: true }));
    setBackend("leaky");
    const x = ones([4]);
    const previous = setKernelLeakCheck(true);
    try {
      expect(() => neg(x)).toThrow(KernelLeakError);
      expect(() => neg(x)).toThrow("Kernel 'Neg' on backend 'leaky' left 1 buffer(s) allocated beyond its 1 new output(s)");
    } finally {
      setKernelLeakCheck(previous);
    }
    // Without the check the same kernel runs (the leak is the backend's bug, visible in memory()).
    const before = getBackendInstance("leaky").memory().buffers;
    neg(x).dispose();
    expect(getBackendInstance("leaky").memory().buffers).toBe(before + 1);
    x.dispose();
  });

  it("memory() reports tensors, buffers and bytes per backend with the backend's own figures", () => {
    registerBackend("toy", () => new ToyBackend("toy"));
    setBackend("toy");
    const base = memory().backends.toy;
    const a = ones([2, 3]);
    const b = reshape(a, [6]);
    const after = memory().backends.toy;
    expect(after.numTensors - base.numTensors).toBe(2);
    expect(after.numBuffers - base.numBuffers).toBe(1);
    expect(after.numBytes - base.numBytes).toBe(24);
    expect(after.backend.toyFigure).toBe(42);
    dispose([a, b]);
    expect(memory().backends.toy.numTensors).toBe(base.numTensors);
    expect(memory().backends.toy.backend.buffers).toBe(base.backend.buffers);
  });
});

describe("tidy, keep and reference-counted buffers", () => {
  it("tidy frees everything created inside except the result", () => {
    const before = memory();
    const result = tidy(() => {
      const a = ones([4, 4]);
      const b = exp(a);
      add(a, b);
      return { out: add(b, 1), nested: [exp(b)] };
    });
    const after = memory();
    expect(after.numTensors - before.numTensors).toBe(2);
    expect(after.numBytes - before.numBytes).toBe(2 * 64);
    dispose(result);
    expect(memory().numTensors).toBe(before.numTensors);
    expect(memory().backends.js.backend.buffers).toBe(before.backends.js.backend.buffers);
  });

  it("nested tidy hands its result to the outer scope, which frees it", () => {
    const before = memory().numTensors;
    tidy(() => {
      const inner = tidy(() => ones([2]));
      expect(inner.isDisposed).toBe(false);
    });
    expect(memory().numTensors).toBe(before);
  });

  it("tidy keeps a tensor returned at any depth, in a Set or as a Map key, and dispose() frees them all", () => {
    const before = memory().numTensors;
    // Eleven levels below the result, past the eight tidy used to walk: the tensor was disposed under the caller.
    let deep: Record<string, unknown> = {};
    const result = tidy(() => {
      deep = { t: ones([2]) };
      for (let i = 0; i < 9; i++) deep = { next: deep };
      const cyclic: Record<string, unknown> = { t: ones([1]) };
      cyclic.self = cyclic;
      return { deep, set: new Set([ones([3])]), map: new Map([[ones([4]), "key"]]), cyclic, values: ones([5]).dataSync() };
    });
    let inner = result.deep;
    for (let i = 0; i < 9; i++) inner = inner.next as Record<string, unknown>;
    const returned = [inner.t, [...result.set][0], [...result.map.keys()][0], result.cyclic.t] as Tensor[];
    expect(returned.map((t) => [t.isDisposed, t.size])).toEqual([[false, 2], [false, 3], [false, 4], [false, 1]]);
    expect(Array.from(result.values)).toEqual([1, 1, 1, 1, 1]);
    expect(memory().numTensors).toBe(before + 4);
    dispose(result);
    expect(returned.every((t) => t.isDisposed)).toBe(true);
    expect(memory().numTensors).toBe(before);
  });

  it("keep survives the scope; tidy cleans up when fn throws; a Promise is refused", () => {
    const before = memory().numTensors;
    let kept: ReturnType<typeof ones> | undefined;
    tidy(() => {
      kept = keep(ones([3]));
      ones([3]);
    });
    expect(kept?.isDisposed).toBe(false);
    expect(memory().numTensors).toBe(before + 1);
    kept?.dispose();
    expect(() =>
      tidy(() => {
        ones([5]);
        throw new Error("boom");
      }),
    ).toThrow("boom");
    expect(memory().numTensors).toBe(before);
    expect(() => tidy(() => Promise.resolve(ones([1])))).toThrow(/tidy only tracks synchronous code/);
  });

  it("clone, reshape and assign share buffers; the last user frees them", () => {
    const backend = getBackendInstance("js");
    const buffers = backend.memory().buffers;
    const a = tensor([1, 2, 3, 4], [2, 2]);
    const view = reshape(a, [4]);
    const copy = a.clone();
    expect(backend.memory().buffers).toBe(buffers + 1);
    a.dispose();
    view.dispose();
    expect(Array.from(copy.dataSync())).toEqual([1, 2, 3, 4]);
    const param = zeros([2, 2]);
    param.assign(copy);
    copy.dispose();
    expect(Array.from(param.dataSync())).toEqual([1, 2, 3, 4]);
    expect(backend.memory().buffers).toBe(buffers + 1);
    expect(() => tidy(() => param.assign(zeros([4])))).toThrow("assign: other has shape [4], expected [2,2]");
    expect(() => tidy(() => param.assign(zeros([2, 2], "int32")))).toThrow("assign: other has dtype int32, expected float32");
    param.dispose();
    param.dispose(); // idempotent
    expect(backend.memory().buffers).toBe(buffers);
    expect(() => param.dataSync()).toThrow(/was disposed/);
  });

  it("a collected, undisposed tensor is freed by the finalizer (safety net only)", async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) {
      console.log("skipping the finalizer check: run node with --expose-gc to include it");
      return;
    }
    const backend = getBackendInstance("js");
    const buffers = backend.memory().buffers;
    (() => {
      ones([1000]);
    })();
    for (let i = 0; i < 10 && backend.memory().buffers !== buffers; i++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(backend.memory().buffers).toBe(buffers);
  });
});

describe("a tensor's version counts the writes into it (what autograd checks)", () => {
  it("assign and a kernel writing in place bump it; ops, clones and reshapes do not", () => {
    const t = tensor([1, 2, 3]);
    expect(t.version).toBe(0);
    const view = reshape(t, [3, 1]);
    const copy = t.clone();
    exp(t).dispose();
    expect(t.version).toBe(0);
    t.assign(tensor([4, 5, 6]));
    expect([t.version, view.version, copy.version]).toEqual([1, 0, 0]);
    // Shared with nothing now: written in place by the kernel, no assign.
    indexCopy(t, tensor([1], [1], "int32"), tensor([9]));
    expect(t.version).toBe(2);
    expect(Array.from(t.dataSync())).toEqual([4, 9, 6]);
    dispose([t, view, copy]);
  });

  it("a kernel's in-place write bumps every tensor it wrote, and the fallback through assign bumps the same ones", () => {
    const [param, grad, m, v] = [tensor([1, 2]), tensor([0.5, 0.5]), zeros([2]), zeros([2])];
    const options = { steps: [1], lr: 0.1 };
    multiTensorAdamUpdateInPlace([param], [grad], [m], [v], options);
    expect([param.version, grad.version, m.version, v.version]).toEqual([1, 0, 1, 1]);
    const shared = param.clone(); // Shared: the update runs out of place and is assigned.
    multiTensorAdamUpdateInPlace([param], [grad], [m], [v], { ...options, steps: [2] });
    expect([param.version, m.version, v.version, shared.version]).toEqual([2, 2, 2, 0]);
    dispose([param, grad, m, v, shared]);
  });
});

describe("the finalizer watches a tensor once it can outlive every scope", () => {
  const collect = async (done: () => boolean) => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    for (let i = 0; i < 20 && !done(); i++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  // Earlier tests' garbage collected first: a baseline taken while some was pending counted its frees as the test's
  // own (a count below the baseline; seen on a loaded machine).
  const settle = () => {
    let previous = -1;
    return collect(() => {
      const now = memory().numTensors;
      const same = now === previous;
      previous = now;
      return same;
    });
  };

  it("frees a tensor returned from tidy, or kept inside it, then dropped undisposed", async () => {
    await settle();
    const backend = getBackendInstance("js");
    const buffers = backend.memory().buffers;
    (() => {
      tidy(() => ones([1000]));
      tidy(() => {
        keep(ones([1000]));
      });
      tidy(() => tidy(() => ones([1000])));
    })();
    expect(backend.memory().buffers).toBe(buffers + 3);
    await collect(() => backend.memory().buffers === buffers);
    expect(backend.memory().buffers).toBe(buffers);
  });

  it("counts what it frees in memory().numCollected, so numTensors + numCollected stays put while garbage is collected", async () => {
    await settle();
    const start = memory();
    (() => {
      for (let i = 0; i < 3; i++) ones([1000]);
    })();
    expect(memory().numTensors).toBe(start.numTensors + 3);
    await collect(() => memory().numTensors === start.numTensors);
    const end = memory();
    expect(end.numTensors).toBe(start.numTensors);
    expect(end.numCollected).toBe(start.numCollected + 3);
  });

  it("leaves a tensor disposed by its scope alone (reported once, by the scope)", async () => {
    const backend = getBackendInstance("js");
    const buffers = backend.memory().buffers;
    const records: DisposeRecord[] = [];
    const stop = addDisposeObserver((record) => records.push(record));
    let id = -1;
    try {
      tidy(() => {
        id = ones([1000]).id;
      });
      expect(backend.memory().buffers).toBe(buffers);
      await collect(() => false);
    } finally {
      stop();
    }
    expect(records.filter((r) => r.id === id).map((r) => r.tensor === null)).toEqual([false]);
  });

  it("registers a tensor that outlives every scope at the end of the task, or at once when many wait; never one disposed before", async () => {
    await settle();
    const backend = getBackendInstance("js");
    const buffers = backend.memory().buffers;
    // Made and disposed within the task: never registered (the registration is what a small op would pay for).
    const brief = ones([4]);
    brief.dispose();
    const kept = ones([4]);
    expect(kept.storage.finalized).toBeFalsy();
    await Promise.resolve();
    expect(brief.storage.finalized).toBeFalsy();
    expect(kept.storage.finalized).toBe(true);
    kept.dispose();
    // More than the nursery holds, made synchronously: the first ones are registered before the task ends.
    const many = Array.from({ length: 300 }, () => ones([4]));
    expect(many[0].storage.finalized).toBe(true);
    expect(many.at(-1)?.storage.finalized).toBeFalsy();
    dispose(many);
    await Promise.resolve();
    expect(many.some((t) => t.storage.finalized && !t.storage.disposed)).toBe(false);
    expect(backend.memory().buffers).toBe(buffers);
    // Dropped undisposed, a tensor is still freed by the finalizer once its task ended.
    (() => {
      for (let i = 0; i < 3; i++) ones([1000]);
    })();
    expect(backend.memory().buffers).toBe(buffers + 3);
    await collect(() => backend.memory().buffers === buffers);
    expect(backend.memory().buffers).toBe(buffers);
  });
});

describe("kernel observers (the autograd hook)", () => {
  it("sees every kernel with its input Tensors, attrs and output Tensors, until unsubscribed", () => {
    const records: KernelRecord[] = [];
    const unsubscribe = addKernelObserver((record) => records.push(record));
    const a = ones([2, 3]);
    const b = reshape(a, [3, 2]);
    const c = add(b, b);
    unsubscribe();
    neg(c);
    expect(records.map((r) => r.kernelName)).toEqual(["Fill", "Reshape", "Add"]);
    expect(records[1].inputs).toEqual({ x: a });
    expect(records[1].attrs).toEqual({ shape: [3, 2] });
    expect(records[1].outputs).toEqual([b]);
    expect(records[2].outputs[0]).toBe(c);
    dispose([a, b, c]);
  });

  it("lets an observer keep saved tensors alive past tidy through clone + keep", () => {
    const saved: ReturnType<typeof ones>[] = [];
    const unsubscribe = addKernelObserver((record) => {
      if (record.kernelName === "Exp") saved.push(keep((record.inputs as { x: ReturnType<typeof ones> }).x.clone()));
    });
    tidy(() => exp(tensor([0, 1])));
    unsubscribe();
    expect(saved).toHaveLength(1);
    expect(Array.from(saved[0].dataSync())).toEqual([0, 1]);
    saved[0].dispose();
  });

  it("requiresGrad and grad are plain fields core never touches", () => {
    const t = ones([2]);
    expect(t.requiresGrad).toBe(false);
    expect(t.grad).toBeNull();
    t.requiresGrad = true;
    const u = exp(t);
    expect(u.requiresGrad).toBe(false);
    dispose([t, u]);
  });
});
