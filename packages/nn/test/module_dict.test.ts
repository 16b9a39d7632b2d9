import { tensor } from "@blocksparse/core";
import { Dropout, Linear, Module, ModuleDict, ModuleList, type Parameter, ReLU, SGD, type Tensor } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { thrown } from "./helpers";

class Heads extends Module {
  heads = new ModuleDict([
    ["b", new Linear(2, 3, { seed: 1 })],
    ["10", new Linear(2, 1, { seed: 2 })],
    ["a", new Linear(2, 2, { seed: 3, bias: false })],
  ]);
  forward(x: Tensor): Tensor {
    return (this.heads.get("b") as Linear).forward(x);
  }
}

describe("ModuleDict (torch.nn.ModuleDict)", () => {
  it("keeps insertion order (integer-like keys too) through keys, iteration and every walk of the tree", () => {
    const model = new Heads();
    const dict = model.heads;
    expect(dict.keys()).toEqual(["b", "10", "a"]);
    expect([...dict].map(([key]) => key)).toEqual(["b", "10", "a"]);
    expect(dict.values()).toEqual(dict.entries().map(([, m]) => m));
    expect(dict.size).toBe(3);
    expect(model.namedParameters().map(([name]) => name)).toEqual(["heads.b.weight", "heads.b.bias", "heads.10.weight", "heads.10.bias", "heads.a.weight"]);
    expect(model.parameters()).toHaveLength(5);
    expect([...model.stateDict().keys()]).toEqual(["heads.b.weight", "heads.b.bias", "heads.10.weight", "heads.10.bias", "heads.a.weight"]);
    expect(model.namedModules().map(([name]) => name)).toEqual(["", "heads", "heads.b", "heads.10", "heads.a"]);
    expect(model.getSubmodule("heads.10")).toBe(dict.get("10"));
    expect(model.toString().split("\n").slice(2, 5).map((line) => line.trim().slice(0, 5))).toEqual(["(b): ", "(10):", "(a): "]);
  });

  it("get, set (a held key keeps its place), has, delete, pop, clear and update from an object, a Map, pairs or a ModuleDict", () => {
    const [l1, l2, l3, l4] = [1, 2, 3, 4].map((seed) => new Linear(2, 2, { seed }));
    const dict = new ModuleDict({ x: l1, y: l2 });
    expect(dict.get("x")).toBe(l1);
    expect(dict.get("missing")).toBeUndefined();
    expect(dict.get("train")).toBeUndefined();
    expect(dict.has("y")).toBe(true);
    expect(dict.has("forward")).toBe(false);
    dict.set("x", l3).set("z", l4);
    expect(dict.entries()).toEqual([
      ["x", l3],
      ["y", l2],
      ["z", l4],
    ]);
    expect(dict.delete("y")).toBe(true);
    expect(dict.delete("y")).toBe(false);
    expect(dict.pop("x")).toBe(l3);
    expect(dict.keys()).toEqual(["z"]);
    dict.update(new Map([["m", l1]])).update([["p", l2]]).update({ o: l3 }).update(new ModuleDict({ z: l2 }));
    expect(dict.entries()).toEqual([
      ["z", l2],
      ["m", l1],
      ["p", l2],
      ["o", l3],
    ]);
    expect(dict.parameters()).toHaveLength(6); // l2, held twice, counts once
    dict.clear();
    expect(dict.size).toBe(0);
    expect(dict.parameters()).toEqual([]);
  });

  it("refuses bad keys and values with a ValueError naming them, and a refused update changes nothing", () => {
    const dict = new ModuleDict({ a: new ReLU() });
    const cases: [() => unknown, string][] = [
      [() => dict.set("", new ReLU()), "ModuleDict.set: key must not be empty"],
      [() => dict.set("a.b", new ReLU()), 'ModuleDict.set: key "a.b" must not contain "." (a module\'s name is a dotted path)'],
      [() => dict.set("train", new ReLU()), 'ModuleDict.set: key "train" would shadow ModuleDict\'s property "train"; choose another key'],
      [() => dict.set("training", new ReLU()), 'ModuleDict.set: key "training" would shadow ModuleDict\'s property "training"; choose another key'],
      [() => dict.set("keys", new ReLU()), 'ModuleDict.set: key "keys" would shadow ModuleDict\'s property "keys"; choose another key'],
      [() => dict.set("__proto__", new ReLU()), 'ModuleDict.set: key "__proto__" would shadow ModuleDict\'s property "__proto__"; choose another key'],
      [() => dict.set(3 as never, new ReLU()), "ModuleDict.set: key must be a string, got 3"],
      [() => dict.set("b", {} as never), 'ModuleDict.set: the value for key "b" must be a Module, got object'],
      [() => dict.get(1 as never), "ModuleDict.get: key must be a string, got 1"],
      [() => new ModuleDict(new ReLU() as never), "ModuleDict: expected a ModuleDict, a Map, an object of key to Module or [key, Module] pairs, got ReLU"],
      [() => new ModuleDict(new ModuleList([new ReLU()]) as never), "ModuleDict: entry 0 must be a [key, Module] pair, got ReLU"],
      [() => new ModuleDict(null as never), "ModuleDict: expected a ModuleDict, a Map, an object of key to Module or [key, Module] pairs, got null"],
      [() => dict.update([["b", new ReLU()], ["c.d", new ReLU()]]), 'ModuleDict.update: key "c.d" must not contain "." (a module\'s name is a dotted path)'],
      [() => dict.forward(), "ModuleDict: a ModuleDict has no forward; call its modules (get(key))"],
    ];
    for (const [run, message] of cases) expect(thrown(run)).toEqual(["ValueError", message]);
    expect(dict.keys()).toEqual(["a"]);
  });

  it("its modules follow train()/eval(), apply(), to(), loadStateDict() and an optimizer", () => {
    const model = new Heads();
    model.heads.set("drop", new Dropout(0.5));
    model.eval();
    expect(model.heads.values().every((m) => !m.training)).toBe(true);
    const visited: string[] = [];
    model.apply((m) => visited.push(m.constructor.name));
    expect(visited).toEqual(["Linear", "Linear", "Linear", "Dropout", "ModuleDict", "Heads"]);
    expect(model.to("bfloat16").parameters().every((p) => p.dtype === "bfloat16")).toBe(true);
    model.to("float32");
    const other = new Heads();
    other.loadStateDict(model.stateDict());
    expect(Array.from((other.heads.get("a") as Linear).weight.value.dataSync())).toEqual(Array.from((model.heads.get("a") as Linear).weight.value.dataSync()));
    const optimizer = new SGD(model.parameters(), { lr: 0.5 });
    const bias = (model.heads.get("10") as Linear).bias as Parameter;
    bias.grad = tensor([1], [1]);
    const before = bias.value.dataSync()[0];
    optimizer.step();
    expect(bias.value.dataSync()[0]).toBeCloseTo(before - 0.5, 6);
  });
});
