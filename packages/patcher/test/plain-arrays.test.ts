import { type Tensor, memory } from "@blocksparse/core";
import { BlockSparseLinear, Linear, Module, ModuleDict, ModuleList } from "@blocksparse/nn";
import { BlockSparseModelPatcher } from "@blocksparse/patcher";
import { describe, expect, it } from "vitest";
import { Mlp, seededTensor, thrown } from "./helpers";

/** `layers` is a plain array of Linear layers (not a ModuleList), `head` a registered Linear. */
class ArrayHeld extends Module {
  layers = [new Linear(8, 8, { seed: 1 }), new Linear(8, 8, { seed: 2 })];
  head = new Linear(8, 4, { seed: 3 });
  forward(x: Tensor): Tensor {
    return this.head.forward(this.layers.reduce((y, layer) => layer.forward(y), x));
  }
}

describe("a Linear held only in a plain array", () => {
  it("is not registered by nn: namedModules and parameters leave it out, as torch leaves out a Python list", () => {
    const model = new ArrayHeld();
    expect(model.namedModules().map(([name]) => name)).toEqual(["", "head"]);
    expect(model.parameters()).toHaveLength(2);
    const listed = new (class extends Module {
      layers = new ModuleList([new Linear(8, 8, { seed: 1 })]);
      forward(): never {
        throw new Error("not called");
      }
    })();
    expect(listed.namedModules().map(([name]) => name)).toEqual(["", "layers", "layers.0"]);
  });

  it("is refused by name when a pattern matches its path (as a ModuleList would name it), and nothing changes", () => {
    const model = new ArrayHeld();
    const [first, second] = model.layers;
    const tensorsBefore = memory().numTensors;
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/./, { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual([
      "'layers.0' (matched by /./) is a Linear held in the plain array 'layers' of ArrayHeld, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; hold the layers in a ModuleList (or Sequential) to register them",
      "'layers.1' (matched by /./) is a Linear held in the plain array 'layers' of ArrayHeld, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; hold the layers in a ModuleList (or Sequential) to register them",
    ]);
    // head was patchable, but the patch is refused as a whole.
    expect(model.head).toBeInstanceOf(Linear);
    expect(model.layers[0]).toBe(first);
    expect(model.layers[1]).toBe(second);
    expect(memory().numTensors).toBe(tensorsBefore);
  });

  it("is refused below nested arrays and inside array-held blocks, named by its full path", () => {
    class Nested extends Module {
      grid = [[new Linear(8, 8, { seed: 1 })]];
      blocks = [new Mlp(8, 16, 4)];
      forward(): never {
        throw new Error("not called");
      }
    }
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/^(grid\.0\.0|blocks\.0\.fc1)$/, { density: 0.5, blockShape: [4, 4] }).patchModel(new Nested()));
    expect(error.problems.map((problem) => problem.split(" (matched")[0])).toEqual(["'grid.0.0'", "'blocks.0.fc1'"]);
    expect(error.problems[1]).toContain("held in the plain array 'blocks' of Nested");
  });

  it("does not stop the other layers being patched when no pattern matches it, and is named as unregistered when nothing matches", () => {
    const model = new ArrayHeld();
    const report = new BlockSparseModelPatcher().addPattern("head", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((l) => l.name)).toEqual(["head"]);
    expect(model.layers.every((layer) => layer.constructor === Linear)).toBe(true);
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(new ArrayHeld()));
    expect(error.message).toContain(
      "the model's Linear layers are: head (pass allowNoMatch to accept this); Linear layers held in plain arrays, which Module does not register and the patcher cannot patch: layers.0, layers.1",
    );
  });
});

describe("a registered Linear also held in a plain array", () => {
  class AlsoInArray extends Module {
    fc = new Linear(8, 8, { seed: 1 });
    order: Module[] = [this.fc];
    forward(x: Tensor): Tensor {
      return this.order[0].forward(x);
    }
  }

  it("is replaced in the array slot too, so the forward that reads the array runs the patched layer", () => {
    const model = new AlsoInArray();
    new BlockSparseModelPatcher().addPattern("fc", { density: 1, blockShape: [4, 4] }).patchModel(model, { disposeReplaced: true });
    expect(model.fc).toBeInstanceOf(BlockSparseLinear);
    expect(model.order[0]).toBe(model.fc);
    const x = seededTensor([2, 8], 5);
    const y = model.forward(x);
    expect(y.shape).toEqual([2, 8]);
    y.dispose();
    x.dispose();
  });

  it("is matched only under its registered name, not its array path", () => {
    const report = new BlockSparseModelPatcher().addPattern(/^order\.0$/, { density: 0.5, blockShape: [4, 4] }).patchModel(new AlsoInArray(), { allowNoMatch: true });
    expect(report.layers).toEqual([]);
    expect(report.unmatchedPatterns).toEqual(["/^order\\.0$/"]);
  });

  it("refuses a frozen array slot, before changing anything", () => {
    const model = new AlsoInArray();
    Object.freeze(model.order);
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual(["'order.0' is an element of a frozen array, so the replacement of 'fc' cannot be put there"]);
    expect(model.fc).toBeInstanceOf(Linear);
  });

  it("refuses to untie a weight shared with an array-held Linear, which would stay dense", () => {
    const model = new ArrayHeld();
    model.layers[0].weight = model.head.weight;
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("head", { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual(["'head.weight' is shared with layers.0.weight, which would stay dense; patching would untie them"]);
  });
});

describe("a Linear held in a plain object (a dictionary of layers)", () => {
  /** `heads` is an object literal of Linear layers (not a ModuleDict: Module does not register them), `body` a registered Linear. */
  class ObjectHeld extends Module {
    body = new Linear(8, 8, { seed: 1 });
    heads: Record<string, Linear> = { a: new Linear(8, 4, { seed: 2 }), b: new Linear(8, 4, { seed: 3 }) };
    forward(x: Tensor): Tensor {
      return this.heads.a.forward(this.body.forward(x));
    }
  }

  it("is refused by name when a pattern matches its path, beside a pattern that patches another layer, and nothing changes", () => {
    const model = new ObjectHeld();
    const { a } = model.heads;
    const error = thrown(() =>
      new BlockSparseModelPatcher()
        .addPattern("body", { density: 0.5, blockShape: [4, 4] })
        .addPattern("heads\\.a", { density: 0.5, blockShape: [4, 4] })
        .patchModel(model),
    );
    expect(error.problems).toEqual([
      "'heads.a' (matched by heads\\.a) is a Linear held in the plain object 'heads' of ObjectHeld, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; hold the layers in a ModuleDict (or make each a property of a Module) to register them",
    ]);
    expect(model.body).toBeInstanceOf(Linear);
    expect(model.heads.a).toBe(a);
  });

  it("held in a ModuleDict instead, as the refusal advises, is patched under the name the refusal gave", () => {
    class DictHeld extends Module {
      body = new Linear(8, 8, { seed: 1 });
      heads = new ModuleDict({ a: new Linear(8, 4, { seed: 2 }), b: new Linear(8, 4, { seed: 3 }) });
      forward(x: Tensor): Tensor {
        return (this.heads.get("a") as Module).forward(this.body.forward(x));
      }
    }
    const model = new DictHeld();
    const report = new BlockSparseModelPatcher().addPattern("heads\\.a", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((layer) => layer.name)).toEqual(["heads.a"]);
    expect(model.heads.get("a")).toBeInstanceOf(BlockSparseLinear);
    expect(model.heads.keys()).toEqual(["a", "b"]);
    expect(model.namedParameters().map(([name]) => name)).toContain("heads.a.weight");
  });

  it("is named as unregistered when nothing matches", () => {
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(new ObjectHeld()));
    expect(error.message).toContain(
      "the model's Linear layers are: body (pass allowNoMatch to accept this); Linear layers held in plain objects, which Module does not register and the patcher cannot patch: heads.a, heads.b",
    );
  });

  it("registered elsewhere, is replaced in the object too, so the forward that reads the object runs the patched layer", () => {
    class AlsoInObject extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      byName: Record<string, Module> = { first: this.fc };
      forward(x: Tensor): Tensor {
        return this.byName.first.forward(x);
      }
    }
    const model = new AlsoInObject();
    new BlockSparseModelPatcher().addPattern("fc", { density: 1, blockShape: [4, 4] }).patchModel(model, { disposeReplaced: true });
    expect(model.fc).toBeInstanceOf(BlockSparseLinear);
    expect(model.byName.first).toBe(model.fc);
    const x = seededTensor([2, 8], 5);
    const y = model.forward(x);
    expect(y.shape).toEqual([2, 8]);
    y.dispose();
    x.dispose();
    const frozen = new AlsoInObject();
    Object.freeze(frozen.byName);
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(frozen));
    expect(error.problems).toEqual(["'byName.first' is a read-only property of a plain object, so the replacement of 'fc' cannot be put there"]);
    expect(frozen.fc).toBeInstanceOf(Linear);
  });
});

describe("arrays and objects that hold each other twice over", () => {
  it("are walked in bounded work (each 40 deep: 2^40 paths), and a Linear at the bottom is still found", () => {
    class Cached extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      history: unknown[];
      lookup: Record<string, unknown>;
      constructor() {
        super();
        let level: unknown[] = [new Linear(8, 8, { seed: 2 })];
        let entry: Record<string, unknown> = { layer: this.fc };
        for (let depth = 0; depth < 40; depth++) {
          level = [level, level];
          entry = { left: entry, right: entry };
        }
        this.history = level;
        this.lookup = entry;
      }
      forward(x: Tensor): Tensor {
        return this.fc.forward(x);
      }
    }
    const model = new Cached();
    const report = new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((layer) => layer.name)).toEqual(["fc"]);
    let entry = model.lookup;
    for (let depth = 0; depth < 40; depth++) entry = entry.left as Record<string, unknown>;
    expect(entry.layer).toBe(model.fc);
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/^history\.(0\.)+0$/, { density: 0.5, blockShape: [4, 4] }).patchModel(new Cached()));
    expect(error.problems[0]).toContain("held in the plain array 'history' of Cached");
    // The one object holding fc, reached under 2^40 paths, is one slot: refused once when frozen.
    const frozen = new Cached();
    let leaf = frozen.lookup;
    for (let depth = 0; depth < 40; depth++) leaf = leaf.left as Record<string, unknown>;
    Object.freeze(leaf);
    const refused = thrown(() => new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(frozen));
    expect(refused.problems).toEqual([`'lookup.${"left.".repeat(40)}layer' is a read-only property of a plain object, so the replacement of 'fc' cannot be put there`]);
  });
});

describe("data nested deeper than the call stack goes", () => {
  it("a model holding a long linked list (an LRU cache) and deeply nested arrays is walked, and a Linear at the bottom is replaced there", () => {
    const DEPTH = 20_000;
    class Entry {
      prev: Entry | null = null;
      next: Entry | null = null;
    }
    class Cached extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      cache = new Entry();
      history: unknown[] = [];
      constructor() {
        super();
        let tail = this.cache;
        let level = this.history;
        for (let depth = 0; depth < DEPTH; depth++) {
          tail.next = new Entry();
          tail.next.prev = tail;
          tail = tail.next;
          const deeper: unknown[] = [];
          level.push(deeper);
          level = deeper;
        }
        level.push(this.fc);
      }
      forward(x: Tensor): Tensor {
        return this.fc.forward(x);
      }
    }
    const model = new Cached();
    expect(new BlockSparseModelPatcher().getPatchableLayers(model).map((layer) => layer.name)).toEqual(["fc"]);
    const report = new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((layer) => layer.name)).toEqual(["fc"]);
    let level = model.history;
    for (let depth = 0; depth < DEPTH; depth++) level = level[0] as unknown[];
    expect(model.fc).toBeInstanceOf(BlockSparseLinear);
    expect(level[0]).toBe(model.fc);
  });
});

describe("a Linear held in a Map", () => {
  /** `heads` is a Map of Linear layers, which Module does not register, `body` a registered Linear. */
  class MapHeld extends Module {
    body = new Linear(8, 8, { seed: 1 });
    heads = new Map<string, Linear>([
      ["a", new Linear(8, 4, { seed: 2 })],
      ["b", new Linear(8, 4, { seed: 3 })],
    ]);
    forward(x: Tensor): Tensor {
      return (this.heads.get("a") as Linear).forward(this.body.forward(x));
    }
  }

  it("is refused by name when a pattern matches its path, beside a pattern that patches another layer, and nothing changes", () => {
    const model = new MapHeld();
    const a = model.heads.get("a");
    const error = thrown(() =>
      new BlockSparseModelPatcher()
        .addPattern("body", { density: 0.5, blockShape: [4, 4] })
        .addPattern("heads\\.a", { density: 0.5, blockShape: [4, 4] })
        .patchModel(model),
    );
    expect(error.problems).toEqual([
      "'heads.a' (matched by heads\\.a) is a Linear held in the Map 'heads' of MapHeld, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; hold the layers in a ModuleDict (or make each a property of a Module) to register them",
    ]);
    expect(model.body).toBeInstanceOf(Linear);
    expect(model.heads.get("a")).toBe(a);
    const none = thrown(() => new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(new MapHeld()));
    expect(none.message).toContain("Linear layers held in Maps, which Module does not register and the patcher cannot patch: heads.a, heads.b");
  });

  it("registered elsewhere, is replaced in the Map too, in its place, so the forward that reads the Map runs the patched layer", () => {
    class AlsoInMap extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      other = new Linear(8, 8, { seed: 2 });
      byName = new Map<unknown, Module>([
        ["first", this.fc],
        ["second", this.other],
      ]);
      forward(x: Tensor): Tensor {
        return (this.byName.get("first") as Module).forward(x);
      }
    }
    const model = new AlsoInMap();
    const key = {};
    model.byName.set(key, model.fc);
    new BlockSparseModelPatcher().addPattern("fc", { density: 1, blockShape: [4, 4] }).patchModel(model, { disposeReplaced: true });
    expect(model.fc).toBeInstanceOf(BlockSparseLinear);
    const entries = [...model.byName];
    expect(entries.map(([name]) => name)).toEqual(["first", "second", key]);
    expect(entries.map(([, layer]) => layer === model.fc)).toEqual([true, false, true]);
    expect(entries[1][1]).toBe(model.other);
    const x = seededTensor([2, 8], 5);
    const y = model.forward(x);
    expect(y.shape).toEqual([2, 8]);
    y.dispose();
    x.dispose();
  });
});

describe("a Linear held in a Set or in an instance of a class that is not a Module", () => {
  /** Not a Module: the Linear it holds is not registered. */
  class Holder {
    inner = { proj: new Linear(8, 4, { seed: 4 }) };
  }
  /** Not a Module either: holds a layer registered elsewhere. */
  class Cache {
    constructor(readonly layer: Module) {}
  }
  /** `set` is a Set of Linear layers, `extra` a Holder, `body` a registered Linear. */
  class Hidden extends Module {
    body = new Linear(8, 8, { seed: 1 });
    set = new Set<Linear>([new Linear(8, 4, { seed: 2 }), new Linear(8, 4, { seed: 3 })]);
    extra = new Holder();
    forward(x: Tensor): Tensor {
      return this.extra.inner.proj.forward(this.body.forward(x));
    }
  }

  it("is refused by name (a Set's element by its position, an instance's by its property path), beside a pattern that patches another layer, and nothing changes", () => {
    const model = new Hidden();
    const error = thrown(() =>
      new BlockSparseModelPatcher()
        .addPattern("body", { density: 0.5, blockShape: [4, 4] })
        .addPattern("set\\.1", { density: 0.5, blockShape: [4, 4] })
        .addPattern(/proj$/, { density: 0.5, blockShape: [4, 4] })
        .patchModel(model),
    );
    expect(error.problems).toEqual([
      "'set.1' (matched by set\\.1) is a Linear held in the Set 'set' of Hidden, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; hold the layers in a ModuleList (or Sequential) to register them",
      "'extra.inner.proj' (matched by /proj$/) is a Linear held in the Holder instance 'extra' of Hidden, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; make the Holder class extend Module (or hold the layers in a Module) to register them",
    ]);
    expect(model.body).toBeInstanceOf(Linear);
    const none = thrown(() => new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(new Hidden()));
    expect(none.message).toContain(
      "Linear layers held in Sets or instances of classes that are not Modules, which Module does not register and the patcher cannot patch: set.0, set.1, extra.inner.proj",
    );
  });

  it("held by an object whose prototype chain has no constructor (settings over null-prototype defaults) is named, and does not stop the patch", () => {
    class Configured extends Module {
      body = new Linear(8, 8, { seed: 1 });
      settings = Object.assign(Object.create(Object.create(null)), { proj: new Linear(8, 4, { seed: 2 }) });
      forward(x: Tensor): Tensor {
        return this.body.forward(x);
      }
    }
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/proj$/, { density: 0.5, blockShape: [4, 4] }).patchModel(new Configured()));
    expect(error.problems).toEqual([
      "'settings.proj' (matched by /proj$/) is a Linear held in the (anonymous) instance 'settings' of Configured, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; make the (anonymous) class extend Module (or hold the layers in a Module) to register them",
    ]);
    const model = new Configured();
    expect(new BlockSparseModelPatcher().getPatchableLayers(model).map((layer) => layer.name)).toEqual(["body"]);
    new BlockSparseModelPatcher().addPattern("body", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(model.body).toBeInstanceOf(BlockSparseLinear);
  });

  it("registered elsewhere, is refused rather than left dense in the Set or the instance, and getPatchableLayers leaves it out", () => {
    class AlsoHeld extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      other = new Linear(8, 8, { seed: 2 });
      set = new Set<Module>([this.other]);
      extra = { holder: new Cache(this.fc) };
      forward(x: Tensor): Tensor {
        return this.fc.forward(x);
      }
    }
    const model = new AlsoHeld();
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("fc|other", { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual([
      "'extra.holder.layer' is a property of a Cache, which is not a Module and which the patcher does not rewrite, so the replacement of 'fc' cannot be put there",
      "'set.0' is an element of a Set, which the patcher does not rewrite, so the replacement of 'other' cannot be put there",
    ]);
    expect(model.fc).toBeInstanceOf(Linear);
    expect(new BlockSparseModelPatcher().getPatchableLayers(model)).toEqual([]);
  });

  it("registered elsewhere and used as a Map's key, is refused rather than left dense as the key (a forward walking the keys ran the old weights)", () => {
    class Scaled extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      other = new Linear(8, 8, { seed: 2 });
      scales = new Map<Module, number>([[this.fc, 0.5]]);
      forward(x: Tensor): Tensor {
        const [[layer]] = [...this.scales];
        return layer.forward(x);
      }
    }
    const model = new Scaled();
    const fc = model.fc;
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("fc|other", { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual(["'scales.[key 0]' is a key of a Map, which the patcher does not rewrite, so the replacement of 'fc' cannot be put there"]);
    expect(model.fc).toBe(fc);
    expect(model.other).toBeInstanceOf(Linear);
    expect(new BlockSparseModelPatcher().getPatchableLayers(model).map((layer) => layer.name)).toEqual(["other"]);
    // A layer held only as a Map's key is not registered: a pattern matching its path is refused, naming it.
    class Keyed extends Module {
      body = new Linear(8, 8, { seed: 1 });
      heads = new Map<Module, string>([[new Linear(8, 4, { seed: 2 }), "a"]]);
      forward(x: Tensor): Tensor {
        return this.body.forward(x);
      }
    }
    const keyed = thrown(() => new BlockSparseModelPatcher().addPattern(/./, { density: 0.5, blockShape: [4, 4] }).patchModel(new Keyed()));
    expect(keyed.problems).toEqual([
      "'heads.[key 0]' (matched by /./) is a Linear held in the Map 'heads' of Keyed, which Module does not register (it is not in the model's parameters(), stateDict() or an optimizer), so it cannot be patched; hold the layers in a ModuleDict (or make each a property of a Module) to register them",
    ]);
  });
});

describe("big arrays of numbers", () => {
  it("a dry run over a model holding a 5-million-element number[] and typed array lists the right layers, and still finds the layers arrays hold", () => {
    const LENGTH = 5_000_000;
    class Embedded extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      table: number[] = new Array<number>(LENGTH).fill(0.5);
      ids = new Int32Array(LENGTH);
      layers = [new Linear(8, 8, { seed: 2 })];
      // A layer after millions of numbers, and one at a sparse array's far end (Object.keys of this array is cheap, its length is not).
      mixed: unknown[] = new Array(LENGTH + 1).fill(1);
      sparse: unknown[] = [];
      constructor() {
        super();
        this.mixed[LENGTH] = this.fc;
        this.sparse[4_000_000_000] = new Linear(8, 8, { seed: 3 });
      }
      forward(x: Tensor): Tensor {
        return this.fc.forward(x);
      }
    }
    const model = new Embedded();
    const report = new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(model, { dryRun: true });
    expect(report.layers.map((layer) => layer.name)).toEqual(["fc"]);
    expect(model.fc).toBeInstanceOf(Linear);
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(model, { dryRun: true }));
    expect(error.message).toContain("the model's Linear layers are: fc (pass allowNoMatch to accept this); Linear layers held in plain arrays, which Module does not register and the patcher cannot patch: layers.0, sparse.4000000000");
    // The array slot after the numbers holds fc too: frozen, it is refused by its index.
    Object.freeze(model.mixed);
    const frozen = thrown(() => new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(model, { dryRun: true }));
    expect(frozen.problems).toEqual([`'mixed.${LENGTH}' is an element of a frozen array, so the replacement of 'fc' cannot be put there`]);
  });
});
