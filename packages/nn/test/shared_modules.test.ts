import { tensor } from "@blocksparse/core";
import { functionalCall, Linear, loadStateDict, Module, Sequential, saveStateDict, StateDictError, ValueError } from "@blocksparse/nn";
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
