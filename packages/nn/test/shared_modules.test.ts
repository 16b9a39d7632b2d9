import { tensor } from "@blocksparse/core";
import { functionalCall, Linear, loadStateDict, Module, ModuleDict, ModuleList, ReLU, Sequential, saveStateDict, StateDictError, ValueError } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";

/** A module held in two places, as torch's `self.dec = self.enc`. */
class Shared extends Module {
  enc = new Linear(2, 2, { seed: 1 });
  dec: Linear;
  head = new Linear(2, 1, { seed: 2 });
  constructor() {
    super();
    this.dec = this.enc;
  }
  forward(x: never): never {
    return x;
  }
}

describe("a module held in two places", () => {
  it("has state dict entries under each name, as torch's state_dict", () => {
    const model = new Shared();
    expect([...model.stateDict().keys()]).toEqual(["enc.weight", "enc.bias", "dec.weight", "dec.bias", "head.weight", "head.bias"]);
    const layer = new Linear(2, 2, { seed: 3 });
    expect([...new Sequential(layer, layer).stateDict().keys()]).toEqual(["0.weight", "0.bias", "1.weight", "1.bias"]);
    // parameters() and namedModules() still list each once.
    expect(model.namedParameters().map(([name]) => name)).toEqual(["enc.weight", "enc.bias", "head.weight", "head.bias"]);
    expect(model.namedModules().map(([name]) => name)).toEqual(["", "enc", "head"]);
  });

  it("is one child under its first name in namedChildren() and children(), as torch's named_children", () => {
    const model = new Shared();
    expect(model.namedChildren()).toEqual([
      ["enc", model.enc],
      ["head", model.head],
    ]);
    expect(model.children()).toEqual([model.enc, model.head]);
    // childSlots() lists every name (torch's _modules), as stateDict() and toString() do.
    expect(model.childSlots().map(([name]) => name)).toEqual(["enc", "dec", "head"]);
    expect(model.toString()).toMatch(/\(enc\): Linear[^\n]*\n {2}\(dec\): Linear[^\n]*\n {2}\(head\): Linear/);
  });

  it("runs twice in a Sequential that holds it twice, as torch's Sequential runs each of its entries", () => {
    const relu = new ReLU();
    const linear = new Linear(2, 2, { seed: 5 });
    linear.weight.assign(tensor([1, 0, 0, -1], [2, 2]));
    linear.bias?.assign(tensor([-1, 0], [2]));
    const model = new Sequential(relu, linear, relu);
    expect(model.length).toBe(3);
    expect(model.at(2)).toBe(relu);
    expect(model.namedChildren().map(([name]) => name)).toEqual(["0", "1"]);
    // relu([-3, 2]) = [0, 2]; linear: [0 - 1, -2] = [-1, -2]; the second relu: [0, 0] (one relu alone left [-1, -2]).
    expect([...model.forward(tensor([-3, 2], [1, 2])).dataSync()]).toEqual([0, 0]);
  });

  it("keeps its place under each name in ModuleList and ModuleDict", () => {
    const relu = new ReLU();
    const list = new ModuleList([relu, relu]).append(new ReLU());
    expect(list.length).toBe(3);
    expect([...list]).toEqual([relu, relu, list.at(2)]);
    expect(list.childSlots().map(([name]) => name)).toEqual(["0", "1", "2"]);
    const dict = new ModuleDict({ a: relu, b: relu });
    expect(dict.values()).toEqual([relu, relu]);
    expect(dict.namedChildren()).toEqual([["a", relu]]);
  });

  it("loads back through safetensors, and a strict load wants every name", () => {
    const source = new Shared();
    const target = new Shared();
    const loaded = loadStateDict(saveStateDict(source.stateDict()));
    expect(target.loadStateDict(loaded)).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect([...target.dec.weight.value.dataSync()]).toEqual([...source.enc.weight.value.dataSync()]);
    loaded.delete("dec.weight");
    expect(() => target.loadStateDict(loaded)).toThrow(StateDictError);
    expect(target.loadStateDict(loaded, { strict: false }).missingKeys).toEqual(["dec.weight"]);
  });

  it("held by its own descendant is walked once", () => {
    const outer = new Sequential(new Linear(2, 2, { seed: 4 }));
    (outer.at(0) as unknown as Record<string, unknown>).back = outer;
    expect([...outer.stateDict().keys()]).toEqual(["0.weight", "0.bias"]);
  });

  it("held by its own descendant is printed there without its children (it overflowed the stack)", () => {
    const outer = new Sequential(new Linear(2, 2, { seed: 4 }));
    (outer.at(0) as unknown as Record<string, unknown>).back = outer;
    expect(outer.toString()).toBe("Sequential(\n  (0): Linear(inFeatures=2, outFeatures=2, bias=true\n    (back): Sequential(...)\n  )\n)");
    // A module held twice, not by its own descendant, is printed in full under each name.
    const shared = new Linear(2, 2, { seed: 5 });
    expect(new Sequential(shared, shared).toString()).toBe(`Sequential(\n  (0): ${shared}\n  (1): ${shared}\n)`);
  });
});

describe("functionalCall with tied parameters", () => {
  it("takes any name of a tied parameter and replaces it everywhere, as torch's functional_call", () => {
    const model = new Shared();
    const zeros = tensor([0, 0, 0, 0], [2, 2]);
    const seen = functionalCall(model, { "dec.weight": zeros }, () => [model.enc.weight.value, model.dec.weight.value]);
    expect(seen).toEqual([zeros, zeros]);
    expect(model.enc.weight.value).not.toBe(zeros);
    // The same tensor under both names is one replacement; different ones are refused, as torch's.
    expect(functionalCall(model, { "enc.weight": zeros, "dec.weight": zeros }, () => model.enc.weight.value)).toBe(zeros);
    expect(() => functionalCall(model, { "enc.weight": zeros, "dec.weight": tensor([1, 1, 1, 1], [2, 2]) }, () => 0)).toThrow(ValueError);
    expect(() => functionalCall(model, { "enc.weight": zeros, "dec.weight": tensor([1, 1, 1, 1], [2, 2]) }, () => 0)).toThrow(/'enc.weight' and 'dec.weight' name one tied parameter/);
  });
});
