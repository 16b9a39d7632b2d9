import type { Tensor } from "@blocksparse/core";
import { memory, randn, tensor, tidy, ValueError } from "@blocksparse/core";
import {
  BlockSparseLinear,
  BlockSparseWeight,
  Dropout,
  disposeStateDict,
  functionalCall,
  Linear,
  Module,
  ModuleList,
  parameterCount,
  ReLU,
  Sequential,
  StateDictError,
  weightBytes,
} from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host } from "./helpers";

class Encoder extends Module {
  fc1 = new Linear(8, 16, { seed: 1 });
  act = new ReLU();
  drop = new Dropout(0.5, { seed: 2 });
  fc2 = new Linear(16, 4, { seed: 3 });
  forward(x: Tensor): Tensor {
    return tidy(() => this.fc2.forward(this.drop.forward(this.act.forward(this.fc1.forward(x)))));
  }
}

class Net extends Module {
  encoder = new Encoder();
  head = new Sequential(new Linear(4, 2, { seed: 4 }));
  forward(x: Tensor): Tensor {
    return tidy(() => this.head.forward(this.encoder.forward(x)));
  }
}

describe("Module", () => {
  it("lists modules and parameters with dotted names, root first, in assignment order", () => {
    const net = new Net();
    expect(net.namedModules().map(([name, m]) => [name, m.constructor.name])).toEqual([
      ["", "Net"],
      ["encoder", "Encoder"],
      ["encoder.fc1", "Linear"],
      ["encoder.act", "ReLU"],
      ["encoder.drop", "Dropout"],
      ["encoder.fc2", "Linear"],
      ["head", "Sequential"],
      ["head.0", "Linear"],
    ]);
    expect(net.namedParameters().map(([name]) => name)).toEqual([
      "encoder.fc1.weight",
      "encoder.fc1.bias",
      "encoder.fc2.weight",
      "encoder.fc2.bias",
      "head.0.weight",
      "head.0.bias",
    ]);
    expect(parameterCount(net)).toBe(8 * 16 + 16 + 16 * 4 + 4 + 4 * 2 + 2);
    expect(weightBytes(net)).toBe(4 * parameterCount(net));
    expect(net.toString()).toContain("(fc1): Linear(inFeatures=8, outFeatures=16, bias=true)");
  });

  it("replaces a child by dotted name (setSubmodule) and says which part is missing", () => {
    const net = new Net();
    const sparse = BlockSparseLinear.fromLinear(net.encoder.fc1, { density: 0.5, blockShape: [4, 4] });
    net.setSubmodule("encoder.fc1", sparse);
    expect(net.getSubmodule("encoder.fc1")).toBe(sparse);
    expect(net.encoder.fc1).toBe(sparse);
    expect(net.namedModules().map(([name]) => name)[2]).toBe("encoder.fc1");
    net.setSubmodule("head.0", new Linear(4, 2));
    expect(net.forward(randn([3, 8])).shape).toEqual([3, 2]);
    expect(parameterCount(net)).toBe(0.5 * 8 * 16 + 16 + 16 * 4 + 4 + 4 * 2 + 2);
    expect(() => net.getSubmodule("encoder.fc9")).toThrow("getSubmodule: 'encoder' has no child module 'fc9'");
    expect(() => net.setSubmodule("decoder.fc1", new ReLU())).toThrow("the model has no child module 'decoder'");
    expect(() => net.setSubmodule("encoder.fc1.weight", new ReLU())).toThrow("is not a child module");
  });

  it("train() and eval() reach every module; Dropout is the identity in eval", () => {
    const net = new Net();
    net.eval();
    expect(net.modules().every((m) => !m.training)).toBe(true);
    const x = randn([4, 8], { seed: 5 });
    expect(host(net.forward(x))).toEqual(host(net.forward(x)));
    net.train();
    expect(net.encoder.drop.training).toBe(true);
  });

  it("to() moves parameters to a registered backend and rejects an unknown one", () => {
    const net = new Net();
    const before = host(net.encoder.fc1.weight.value);
    expect(net.to("js")).toBe(net);
    expect(host(net.encoder.fc1.weight.value)).toEqual(before);
    expect(() => net.to("no-such-backend")).toThrow();
  });
});

describe("loadStateDict", () => {
  it("strict: lists missing and unexpected keys and shape mismatches, and changes nothing", () => {
    const net = new Net();
    const before = host(net.encoder.fc1.weight.value);
    const sd = new Net().stateDict();
    sd.delete("head.0.bias");
    sd.set("head.1.weight", tensor([1, 2], [2]));
    sd.set("encoder.fc1.weight", randn([16, 7]));
    let error: unknown;
    try {
      net.loadStateDict(sd);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(StateDictError);
    const { missingKeys, unexpectedKeys, mismatches, message } = error as StateDictError;
    expect(missingKeys).toEqual(["head.0.bias"]);
    expect(unexpectedKeys).toEqual(["head.1.weight"]);
    expect(mismatches.map((m) => m.key)).toEqual(["encoder.fc1.weight"]);
    expect(message).toContain("missing keys: head.0.bias");
    expect(message).toContain("unexpected keys: head.1.weight");
    expect(message).toContain("size mismatch for encoder.fc1.weight: the checkpoint has [16, 7] float32, the model has [16, 8] float32");
    expect(host(net.encoder.fc1.weight.value)).toEqual(before);
    disposeStateDict(sd);
  });

  it("leaves no tensor behind: live tensors after loading equal those before", () => {
    const net = new Net();
    const sd = new Net().stateDict();
    const before = memory().numTensors;
    net.loadStateDict(sd);
    expect(memory().numTensors).toBe(before);
    const loaded = host(net.encoder.fc1.weight.value);
    disposeStateDict(sd);
    expect(host(net.encoder.fc1.weight.value)).toEqual(loaded);
  });

  it("non-strict: loads what matches and reports the rest", () => {
    const net = new Net();
    const other = new Net();
    const sd = other.stateDict();
    sd.delete("head.0.bias");
    sd.set("extra", tensor([1], [1]));
    const result = net.loadStateDict(sd, { strict: false });
    expect(result).toEqual({ missingKeys: ["head.0.bias"], unexpectedKeys: ["extra"] });
    expect(host(net.encoder.fc2.weight.value)).toEqual(host(other.encoder.fc2.weight.value));
  });

  it("a dense [out, in] weight loads into a BlockSparseLinear's current blocks; a block-sparse one brings its pattern", () => {
    const linear = new Linear(8, 8, { seed: 6 });
    const layer = new BlockSparseLinear(8, 8, { density: 0.5, blockShape: [4, 4], seed: 7 });
    const pattern = layer.pattern;
    layer.loadStateDict(linear.stateDict());
    expect(layer.pattern).toBe(pattern);
    const mask = pattern.blockMask();
    const w = host(linear.weight.value);
    const got = host(layer.toDense());
    for (let i = 0; i < 64; i++) expect(got[i]).toBe(mask[Math.floor(i / 32) * 2 + Math.floor((i % 8) / 4)] ? w[i] : 0);

    const other = new BlockSparseLinear(8, 8, { density: 0.25, blockShape: [4, 4], seed: 8 });
    layer.loadStateDict(other.stateDict());
    expect(layer.pattern.equals(other.pattern)).toBe(true);
    expect(layer.nnzBlocks).toBe(1);
    expect(host(layer.toDense())).toEqual(host(other.toDense()));
    const entry = other.stateDict().get("weight");
    expect(entry).toBeInstanceOf(BlockSparseWeight);
    expect(() => new BlockSparseLinear(8, 16, { density: 0.5, blockShape: [4, 4] }).loadStateDict(other.stateDict())).toThrow(
      "size mismatch for weight: the checkpoint has block-sparse [8, 8]",
    );
  });

  it("refuses a block-sparse entry of another block shape, naming the entry and both block shapes, and changes nothing", () => {
    const saved = new Sequential(new BlockSparseLinear(128, 128, { density: 0.5, seed: 9 }));
    expect((saved.at(0) as BlockSparseLinear).blockShape).toEqual([32, 32]);
    for (const blockShape of [[64, 64], [16, 16], [32, 16]] as const) {
      const target = new Sequential(new BlockSparseLinear(128, 128, { density: 0.5, blockShape, seed: 10 }));
      const layer = target.at(0) as BlockSparseLinear;
      const [pattern, values] = [layer.pattern, host(layer.weight.value)];
      const sd = saved.stateDict();
      const before = memory().numTensors;
      for (const strict of [true, false]) {
        let error: unknown;
        try {
          target.loadStateDict(sd, { strict });
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(StateDictError);
        const { mismatches, message } = error as StateDictError;
        expect(mismatches.map((m) => m.key)).toEqual(["0.weight"]);
        expect(message).toContain("size mismatch for 0.weight: the checkpoint has block-sparse [128, 128] with 32x32 blocks (8 stored)");
        expect(message).toContain(`the model has block-sparse [128, 128] with ${blockShape[0]}x${blockShape[1]} blocks`);
      }
      expect(layer.pattern).toBe(pattern);
      expect(layer.blockShape).toEqual(blockShape);
      expect(host(layer.weight.value)).toEqual(values);
      expect(memory().numTensors).toBe(before);
      disposeStateDict(sd);
    }
    // The same block shape with another pattern (moved sparsity) still loads, pattern and all.
    const same = new BlockSparseLinear(128, 128, { density: 0.25, seed: 11 });
    const sd = saved.stateDict();
    same.loadStateDict({ weight: sd.get("0.weight") as BlockSparseWeight, bias: sd.get("0.bias") as Tensor });
    expect(same.pattern.equals((saved.at(0) as BlockSparseLinear).pattern)).toBe(true);
    expect(host(same.toDense())).toEqual(host((saved.at(0) as BlockSparseLinear).toDense()));
    disposeStateDict(sd);
  });
});

describe("ModuleList", () => {
  it("registers its modules by index, so their parameters are found", () => {
    class Stack extends Module {
      layers = new ModuleList([new Linear(4, 4, { seed: 1 }), new Linear(4, 2, { seed: 2 })]);
      forward(x: Tensor): Tensor {
        return tidy(() => {
          let h = x;
          for (const layer of this.layers) h = layer.forward(h);
          return h;
        });
      }
    }
    const stack = new Stack();
    stack.layers.append(new ReLU());
    expect(stack.layers.length).toBe(3);
    expect(stack.namedParameters().map(([n]) => n)).toEqual(["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]);
    expect(stack.forward(randn([3, 4])).shape).toEqual([3, 2]);
    expect(stack.layers.at(-1)).toBeInstanceOf(ReLU);
    expect(() => stack.layers.forward()).toThrow("has no forward");
  });
});

describe("functionalCall's arguments", () => {
  // torch's functional_call(module, params, args) takes the inputs third: passing x there was a TypeError from inside the swap.
  it("are checked first, each a ValueError naming what was passed, and the module keeps its own weights", () => {
    const layer = new Linear(2, 1, { seed: 1 });
    const weight = layer.weight.value;
    const x = tensor([1, 2], [1, 2]);
    const swapped = { weight: tensor([3, 4], [1, 2]) };
    expect(() => functionalCall(layer, swapped, x as never)).toThrow(new ValueError("functionalCall: fn must be a function that runs the module (() => module.forward(x)), got a Tensor"));
    expect(() => functionalCall(layer, null as never, () => layer.forward(x))).toThrow(new ValueError("functionalCall: tensors must be a Map or an object of name to Tensor, got null"));
    expect(() => functionalCall({} as never, swapped, () => layer.forward(x))).toThrow(new ValueError("functionalCall: module must be a Module, got object"));
    expect(layer.weight.value).toBe(weight);
    expect(host(functionalCall(layer, swapped, () => layer.forward(x)))[0]).toBeCloseTo(11 + host(layer.bias!.value)[0], 5);
  });
});
