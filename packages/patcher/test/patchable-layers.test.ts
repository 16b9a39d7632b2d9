import { type Tensor, mul, tensor } from "@blocksparse/core";
import { BlockSparseLinear, Linear, Module, ModuleList, Parameter, Sequential } from "@blocksparse/nn";
import { BlockSparseModelPatcher, PatchError } from "@blocksparse/patcher";
import { describe, expect, it } from "vitest";
import { Mlp, Tied, TinyNet } from "./helpers";

const escapeRegex = (name: string): string => name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const settings = { density: 0.5, blockShape: [4, 4] as [number, number] };
const patchNames = (model: Module, names: string[]) =>
  new BlockSparseModelPatcher().addPattern(names.map(escapeRegex).join("|"), settings).patchModel(model, { dryRun: true, allowNoMatch: true });

/**
 * Every dotted path a pattern could aim at a Linear below the root: its registered names (all aliases), and
 * the paths through plain arrays of a Linear that nn does not register (a registered one's array path is no name).
 */
function linearPaths(model: Module): string[] {
  const registered = new Set(model.modules());
  const paths: string[] = [];
  const visit = (value: unknown, path: string, viaArray: boolean, depth: number): void => {
    if (depth > 8) return;
    if (Array.isArray(value)) {
      for (const [i, item] of value.entries()) visit(item, `${path}.${i}`, true, depth + 1);
    } else if (value instanceof Module) {
      if (value instanceof Linear && path !== "" && !(viaArray && registered.has(value))) paths.push(path);
      for (const key of Object.keys(value)) visit((value as unknown as Record<string, unknown>)[key], path === "" ? key : `${path}.${key}`, viaArray, depth + 1);
    }
  };
  visit(model, "", false, 0);
  return paths;
}

/**
 * getPatchableLayers lists exactly what patchModel matches and accepts: patching every listed name
 * at once is accepted and reports each listed layer once, under its first name; each other name of a
 * listed layer is accepted in its place; and adding any path to a Linear not listed is refused.
 */
function expectAgreement(build: () => Module): void {
  const listed = new BlockSparseModelPatcher().getPatchableLayers(build());
  const listedNames = listed.flatMap((layer) => layer.names);
  for (const layer of listed) expect(layer.names[0]).toBe(layer.name);
  const report = patchNames(build(), listed.map((layer) => layer.name));
  expect(report.layers.map((l) => [l.name, l.shape[1], l.shape[0], l.bias])).toEqual(listed.map((l) => [l.name, l.inFeatures, l.outFeatures, l.bias]));
  for (const layer of listed) {
    for (const alias of layer.names.slice(1)) {
      const others = listed.filter((other) => other !== layer).map((other) => other.name);
      expect(patchNames(build(), [...others, alias]).layers.map((l) => l.name)).toContain(alias);
    }
  }
  for (const path of linearPaths(build())) {
    if (listedNames.includes(path)) continue;
    expect(() => patchNames(build(), [...listed.map((layer) => layer.name), path]), path).toThrow(PatchError);
  }
}

class Holder extends Module {
  forward(): never {
    throw new Error("not called");
  }
}

class LoraLinear extends Linear {
  loraA = new Parameter(tensor(new Float32Array(16), [2, 8]));
}

class ScaledLinear extends Linear {
  override forward(x: Tensor): Tensor {
    return mul(super.forward(x), 0.5);
  }
}

class PlainSubclass extends Linear {}

describe("getPatchableLayers lists exactly what patchModel matches and accepts", () => {
  it("a Linear held under two names is one entry, first name first, with every name a pattern can match", () => {
    const build = () => {
      const model = new Holder();
      model.registerModule("enc", new Sequential(new Linear(8, 8, { seed: 1 })));
      model.registerModule("head", (model as unknown as { enc: Sequential }).enc.at(0));
      return model;
    };
    expect(new BlockSparseModelPatcher().getPatchableLayers(build())).toEqual([{ name: "enc.0", names: ["enc.0", "head"], inFeatures: 8, outFeatures: 8, bias: true }]);
    expectAgreement(build);
  });

  it("leaves out Linear subclasses patchModel refuses (extra state, own forward) and keeps one that computes as Linear", () => {
    const build = () => {
      const model = new Holder();
      model.registerModule("lora", new LoraLinear(8, 8, { seed: 1 }));
      model.registerModule("scaled", new ScaledLinear(8, 8, { seed: 2 }));
      model.registerModule("plain", new PlainSubclass(8, 8, { seed: 3 }));
      const hooked = new Linear(8, 8, { seed: 4 });
      hooked.forward = (x: Tensor) => mul(Linear.prototype.forward.call(hooked, x), 2);
      model.registerModule("hooked", hooked);
      return model;
    };
    expect(new BlockSparseModelPatcher().getPatchableLayers(build()).map((l) => l.name)).toEqual(["plain"]);
    expectAgreement(build);
  });

  it("follows nested containers (Sequential, ModuleList, blocks), and leaves out layers already block-sparse", () => {
    const build = () => {
      const model = new Holder();
      model.registerModule("stack", new Sequential(new ModuleList([new Mlp(8, 16, 1), new Mlp(8, 16, 3)]), new Linear(8, 4, { seed: 5 })));
      model.registerModule("sparse", BlockSparseLinear.fromLinear(new Linear(8, 8, { seed: 6 }), settings));
      return model;
    };
    expect(new BlockSparseModelPatcher().getPatchableLayers(build()).map((l) => l.name)).toEqual(["stack.0.0.fc1", "stack.0.0.fc2", "stack.0.1.fc1", "stack.0.1.fc2", "stack.1"]);
    expectAgreement(build);
  });

  it("leaves out Linear layers held in plain arrays (nn does not register them) and lists a registered one also held in an array once", () => {
    const build = () => {
      const model = new Holder();
      const fc = new Linear(8, 8, { seed: 1 });
      model.registerModule("fc", fc);
      (model as unknown as { layers: unknown[] }).layers = [new Linear(8, 8, { seed: 2 }), [new Mlp(8, 16, 3)], fc];
      return model;
    };
    expect(new BlockSparseModelPatcher().getPatchableLayers(build())).toEqual([{ name: "fc", names: ["fc"], inFeatures: 8, outFeatures: 8, bias: true }]);
    expectAgreement(build);
  });

  it("keeps a weight tied between two patchable layers, and leaves out both sides of a tie with a layer that cannot be patched", () => {
    expect(new BlockSparseModelPatcher().getPatchableLayers(new Tied()).map((l) => l.name)).toEqual(["a", "b"]);
    expectAgreement(() => new Tied());
    const build = () => {
      const model = new TinyNet();
      const scaled = new ScaledLinear(16, 8, { seed: 9 });
      scaled.weight = (model.head as Linear).weight;
      model.registerModule("aux", scaled);
      return model;
    };
    expect(new BlockSparseModelPatcher().getPatchableLayers(build()).map((l) => l.name)).toEqual(["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]);
    expectAgreement(build);
  });

  it("leaves out layers in read-only slots, with disposed weights or with a weight of the wrong shape", () => {
    const build = () => {
      const model = new Sequential(new Linear(8, 8, { seed: 1 }), new Linear(8, 8, { seed: 2 }), new Linear(8, 8, { seed: 3 }), new Linear(8, 8, { seed: 4 }));
      (model.at(1) as Linear).weight.value.dispose();
      (model.at(2) as Linear).weight.value = tensor(new Float32Array(32), [4, 8]);
      Object.defineProperty(model, "3", { value: model.at(3), enumerable: true, writable: false });
      return model;
    };
    expect(new BlockSparseModelPatcher().getPatchableLayers(build()).map((l) => l.name)).toEqual(["0"]);
    expectAgreement(build);
  });
});
