import { runInNewContext } from "node:vm";
import { type Tensor, ValueError, manualSeed, memory, mul, tensor } from "@blocksparse/core";
import { BlockSparseLinear, Linear, Module, Parameter, Sequential, parameterCount } from "@blocksparse/nn";
import { BlockSparseModelPatcher, PatchError, PatchReport } from "@blocksparse/patcher";
import { describe, expect, it } from "vitest";
import { Tied, TinyNet, asBlockSparse, thrown } from "./helpers";

const linearNames = ["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2", "head"];

function typesByName(model: Module): Record<string, string> {
  return Object.fromEntries(model.namedModules().map(([name, m]) => [name, m.constructor.name]));
}

describe("getPatchableLayers", () => {
  it("lists every Linear below the root by dotted name, with its dims and bias", () => {
    const layers = new BlockSparseModelPatcher().getPatchableLayers(new TinyNet());
    expect(layers).toEqual([
      { name: "blocks.0.fc1", names: ["blocks.0.fc1"], inFeatures: 16, outFeatures: 32, bias: true },
      { name: "blocks.0.fc2", names: ["blocks.0.fc2"], inFeatures: 32, outFeatures: 16, bias: false },
      { name: "blocks.1.fc1", names: ["blocks.1.fc1"], inFeatures: 16, outFeatures: 32, bias: true },
      { name: "blocks.1.fc2", names: ["blocks.1.fc2"], inFeatures: 32, outFeatures: 16, bias: false },
      { name: "head", names: ["head"], inFeatures: 16, outFeatures: 8, bias: true },
    ]);
  });

  it("rejects something that is not a Module", () => {
    expect(() => new BlockSparseModelPatcher().getPatchableLayers({} as Module)).toThrow(/model must be a Module, got Object/);
  });
});

describe("patchModel: matching", () => {
  it("replaces exactly the Linear layers a pattern matches, in place", () => {
    const model = new TinyNet();
    const untouchedHead = (model as TinyNet).head;
    const report = new BlockSparseModelPatcher().addPattern(/fc1$/, { density: 0.5, blockShape: [8, 8] }).patchModel(model);
    const types = typesByName(model);
    expect(types["blocks.0.fc1"]).toBe("BlockSparseLinear");
    expect(types["blocks.1.fc1"]).toBe("BlockSparseLinear");
    expect(types["blocks.0.fc2"]).toBe("Linear");
    expect(types["blocks.1.fc2"]).toBe("Linear");
    expect(model.head).toBe(untouchedHead);
    expect(report.layers.map((l) => l.name)).toEqual(["blocks.0.fc1", "blocks.1.fc1"]);
    expect(report.dryRun).toBe(false);
  });

  it("anchors a string pattern to the whole name", () => {
    const model = new TinyNet();
    const patcher = new BlockSparseModelPatcher().addPattern("fc1", { density: 0.5, blockShape: [8, 8] });
    expect(() => patcher.patchModel(model)).toThrow(PatchError);
    const report = new BlockSparseModelPatcher().addPattern(String.raw`blocks\.\d+\.fc1`, { density: 0.5, blockShape: [8, 8] }).patchModel(model);
    expect(report.layers.map((l) => l.name)).toEqual(["blocks.0.fc1", "blocks.1.fc1"]);
    expect(report.layers[0].pattern).toBe(String.raw`blocks\.\d+\.fc1`);
  });

  it("gives each layer to the first pattern that matches it; a pattern left with nothing is reported as shadowed", () => {
    const model = new TinyNet();
    const report = new BlockSparseModelPatcher()
      .addPattern(/^blocks\.0\.fc1$/, { density: 0.25, blockShape: [8, 8] })
      .addPattern(/fc1$/, { density: 0.75, blockShape: [8, 8] })
      .addPattern(/^blocks\.0\.fc\d$/, { density: 0.5, blockShape: [4, 4] })
      .patchModel(model);
    const byName = Object.fromEntries(report.layers.map((l) => [l.name, l]));
    expect(byName["blocks.0.fc1"].density).toBe(0.25);
    expect(byName["blocks.0.fc1"].pattern).toBe("/^blocks\\.0\\.fc1$/");
    expect(byName["blocks.1.fc1"].density).toBe(0.75);
    expect(byName["blocks.0.fc2"].blockShape).toEqual([4, 4]);
    expect(Object.keys(byName).sort()).toEqual(["blocks.0.fc1", "blocks.0.fc2", "blocks.1.fc1"]);
    expect((model as TinyNet).blocks.at(0).namedChildren().map(([, m]) => (m as BlockSparseLinear).density ?? null)).toEqual([0.25, null, 0.5]);
    expect(report.unmatchedPatterns).toEqual([]);
    expect(report.shadowedPatterns).toEqual([]);

    const shadowed = new BlockSparseModelPatcher()
      .addPattern(/head/, { density: 0.5, blockShape: [8, 8] })
      .addPattern(/^head$/, { density: 0.25, blockShape: [8, 8] })
      .patchModel(new TinyNet(), { dryRun: true });
    expect(shadowed.shadowedPatterns).toEqual(["/^head$/"]);
  });

  it("reports a pattern that matches nothing, and still patches the others", () => {
    const report = new BlockSparseModelPatcher()
      .addPattern(/^head$/, { density: 0.5, blockShape: [8, 8] })
      .addPattern("decoder\\..*", { density: 0.5 })
      .patchModel(new TinyNet());
    expect(report.layers.map((l) => l.name)).toEqual(["head"]);
    expect(report.unmatchedPatterns).toEqual(["decoder\\..*"]);
    expect(report.toString()).toContain("patterns that matched nothing: decoder\\..*");
  });

  it("throws when no layer matches, naming the model's Linear layers, unless allowNoMatch", () => {
    const model = new TinyNet();
    const patcher = new BlockSparseModelPatcher().addPattern(/^encoder/, { density: 0.5 });
    const error = thrown(() => patcher.patchModel(model));
    expect(error.message).toContain("no layer matched /^encoder/");
    for (const name of linearNames) expect(error.message).toContain(name);
    const report = patcher.patchModel(model, { allowNoMatch: true });
    expect(report.layers).toEqual([]);
    expect(report.unmatchedPatterns).toEqual(["/^encoder/"]);
    expect(report.totals.modelParamsAfter).toBe(report.totals.modelParamsBefore);
    expect(Object.values(typesByName(model))).not.toContain("BlockSparseLinear");
    expect(() => new BlockSparseModelPatcher().patchModel(model)).toThrow(/no patterns were added/);
  });

  it("drops g and y flags so that repeated matching is stateless", () => {
    const report = new BlockSparseModelPatcher().addPattern(/fc2$/g, { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet());
    expect(report.layers.map((l) => l.name)).toEqual(["blocks.0.fc2", "blocks.1.fc2"]);
  });

  it("hints that a RegExp was meant when a string written like a regex literal matches nothing", () => {
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("/fc1$/i", { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet()));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toContain('the string "/fc1$/i" is a name pattern matched with its slashes; for a regular expression pass a RegExp: /fc1$/i, not "/fc1$/i"');
    // Still a name pattern: with allowNoMatch it is listed as matching nothing, as before.
    const report = new BlockSparseModelPatcher().addPattern("/fc1$/i", { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet(), { allowNoMatch: true });
    expect(report.unmatchedPatterns).toEqual(["/fc1$/i"]);
    const plain = thrown(() => new BlockSparseModelPatcher().addPattern("fc1", { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet()));
    expect(plain.message).not.toContain("RegExp");
  });

  it("says so when a string pattern matches only the start of names (pytorch_block_sparse's re.match would patch them), in the error and the report", () => {
    // A torch user's pattern: re.match takes blocks.0.fc1 and blocks.0.fc2; a string here matches whole names.
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(String.raw`blocks\.\d+\.fc`, { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet()));
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toContain(
      String.raw`the string pattern blocks\.\d+\.fc must match a whole name; it matches only the start of blocks.0.fc1, blocks.0.fc2, blocks.1.fc1, blocks.1.fc2 (as Python's re.match would take it): to patch those, write blocks\.\d+\.fc.* or pass the RegExp /blocks\.\d+\.fc/y`,
    );
    // Beside a pattern that matches, the report lists it as matching nothing, with the same hint.
    const report = new BlockSparseModelPatcher()
      .addPattern(/^head$/, { density: 0.5, blockShape: [8, 8] })
      .addPattern(String.raw`blocks\.0\.f|blocks\.1\.fc1x`, { density: 0.5, blockShape: [8, 8] })
      .patchModel(new TinyNet(), { dryRun: true });
    expect(report.unmatchedPatterns).toEqual([String.raw`blocks\.0\.f|blocks\.1\.fc1x`]);
    expect(report.hints).toHaveLength(1);
    expect(report.hints[0]).toContain("matches only the start of blocks.0.fc1, blocks.0.fc2 (as");
    expect(report.hints[0]).toContain(String.raw`write (?:blocks\.0\.f|blocks\.1\.fc1x).* or`);
    expect(report.toString()).toContain(report.hints[0]);
    // What the hint says to write patches them (an alternation's .* goes after a group, or it binds to the last branch).
    const fixed = new BlockSparseModelPatcher().addPattern(String.raw`(?:blocks\.0\.f|blocks\.1\.fc1x).*`, { density: 0.5, blockShape: [8, 8] });
    expect(fixed.patchModel(new TinyNet(), { dryRun: true }).layers.map((l) => l.name)).toEqual(["blocks.0.fc1", "blocks.0.fc2"]);
    const sticky = new BlockSparseModelPatcher().addPattern(/blocks\.0\.fc/y, { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet(), { dryRun: true });
    expect(sticky.layers.map((l) => l.name)).toEqual(["blocks.0.fc1", "blocks.0.fc2"]);
    // A string that starts no name, and a RegExp (matched anywhere already), get no hint.
    expect(new BlockSparseModelPatcher().addPattern("head", { density: 0.5, blockShape: [8, 8] }).addPattern("fc1", { density: 0.5 }).patchModel(new TinyNet()).hints).toEqual([]);
    expect(thrown(() => new BlockSparseModelPatcher().addPattern(/^fc/, { density: 0.5 }).patchModel(new TinyNet())).message).not.toContain("re.match");
  });

  it("keeps a y flag's anchoring at the start of the name (re.match), statelessly", () => {
    // Sticky at lastIndex 0 matches only at the start: /fc1/y matches no name here, /blocks\.\d\.fc1/y both fc1 layers.
    const none = new BlockSparseModelPatcher().addPattern(/fc1/y, { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet(), { dryRun: true, allowNoMatch: true });
    expect(none.layers).toEqual([]);
    expect(none.unmatchedPatterns).toEqual(["/fc1/y"]);
    const report = new BlockSparseModelPatcher().addPattern(/blocks\.\d\.fc1/gy, { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet(), { dryRun: true });
    expect(report.layers.map((l) => l.name)).toEqual(["blocks.0.fc1", "blocks.1.fc1"]);
    // One Linear under two names: each test starts at the name's start, so the report names the first name matched.
    const shared = new Linear(8, 8, { seed: 1 });
    const aliased = new Sequential(shared, shared);
    expect(new BlockSparseModelPatcher().addPattern(/\d/y, { density: 0.5, blockShape: [4, 4] }).patchModel(aliased).layers.map((l) => l.name)).toEqual(["0"]);
  });

  it("walks a model whose blocks hold earlier blocks (prev and skip) in bounded work, and patches every slot", () => {
    // Block i holds blocks i-1 and i-2: the paths to block 0 number fib(24); listing them all never ended.
    let walks = 0;
    class Chained extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      constructor(prev: Module | undefined, skip: Module | undefined) {
        super();
        if (prev) this.registerModule("prev", prev);
        if (skip) this.registerModule("skip", skip);
      }
      override childSlots(): [string, Module][] {
        walks++;
        return super.childSlots();
      }
      forward(): never {
        throw new Error("not called");
      }
    }
    const blocks: Chained[] = [];
    for (let i = 0; i < 24; i++) blocks.push(new Chained(blocks[i - 1], blocks[i - 2]));
    const model = new Sequential(...blocks);
    const report = new BlockSparseModelPatcher().addPattern(/^\d+\.fc$/, { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((l) => l.name)).toEqual(blocks.map((_, i) => `${i}.fc`));
    expect(blocks.every((block) => block.fc instanceof BlockSparseLinear)).toBe(true);
    // At most 64 names are walked per module (a few walks more for the other passes), not every path.
    expect(walks).toBeLessThan(4 * 64 * blocks.length);
  });

  it("never patches the root module (it has no parent to hold the replacement)", () => {
    const root = new Linear(8, 8, { seed: 1 });
    expect(new BlockSparseModelPatcher().getPatchableLayers(root)).toEqual([]);
    expect(() => new BlockSparseModelPatcher().addPattern(/.*/, { density: 0.5, blockShape: [4, 4] }).patchModel(root)).toThrow(
      /no layer matched \/\.\*\/; the model's Linear layers are: \(none\)/,
    );
  });

  it("says so when the model itself is a Linear, rather than only that it has none", () => {
    const root = new Linear(8, 8, { seed: 1 });
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(root));
    expect(error.problems).toEqual([
      "no layer matched fc; the model's Linear layers are: (none) (pass allowNoMatch to accept this); the model itself is a Linear, which is never patched " +
        "(the root has no parent to hold its replacement): use BlockSparseLinear.fromLinear for a lone layer",
    ]);
    expect(thrown(() => new BlockSparseModelPatcher().addPattern("fc", { density: 0.5 }).patchModel(new Sequential())).problems[0]).toMatch(/\(none\) \(pass allowNoMatch to accept this\)$/);
  });

  it("keeps each replaced layer's training mode: a model in eval mode stays in eval mode", () => {
    const model = new TinyNet();
    model.eval();
    new BlockSparseModelPatcher().addPattern(/fc1$/, { density: 0.5, blockShape: [8, 8] }).patchModel(model);
    expect(model.modules().filter((m) => m instanceof BlockSparseLinear)).toHaveLength(2);
    expect(model.modules().every((m) => !m.training)).toBe(true);
    const training = new TinyNet();
    new BlockSparseModelPatcher().addPattern(/fc1$/, { density: 0.5, blockShape: [8, 8] }).patchModel(training);
    expect(training.modules().every((m) => m.training)).toBe(true);
  });

  it("replaces a Linear reachable under two names everywhere, by one BlockSparseLinear", () => {
    const shared = new Linear(8, 8, { seed: 3 });
    const model = new Sequential(shared, new Sequential(shared));
    const report = new BlockSparseModelPatcher().addPattern("0", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((l) => l.name)).toEqual(["0"]);
    const outer = model.at(0);
    expect(outer).toBeInstanceOf(BlockSparseLinear);
    expect((model.at(1) as Sequential).at(0)).toBe(outer);
  });

  it("replaces a Linear one parent holds under two names in both places (namedChildren lists it once)", () => {
    const shared = new Linear(8, 8, { seed: 3 });
    const model = new Sequential(shared, shared);
    new BlockSparseModelPatcher().addPattern("0", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(model.at(0)).toBeInstanceOf(BlockSparseLinear);
    expect(model.at(1)).toBe(model.at(0));
  });
});

describe("patchModel: a Linear reachable under several names", () => {
  /** One Linear held as "enc.0" and as "head" (the same object), "enc" first. */
  class Aliased extends Module {
    enc = new Sequential(new Linear(8, 8, { seed: 4 }));
    head: Module;
    constructor() {
      super();
      this.head = this.enc.at(0);
    }
    forward(): never {
      throw new Error("not called");
    }
  }

  it("is matched by a pattern for any of its names, and replaced at every one of them", () => {
    const model = new Aliased();
    const report = new BlockSparseModelPatcher().addPattern("head", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((l) => [l.name, l.pattern])).toEqual([["head", "head"]]);
    expect(report.unmatchedPatterns).toEqual([]);
    expect(model.head).toBeInstanceOf(BlockSparseLinear);
    expect(model.enc.at(0)).toBe(model.head);
  });

  it("belongs to the first pattern in the order added, whichever name it matches; the other is reported as shadowed", () => {
    const encFirst = new BlockSparseModelPatcher()
      .addPattern(String.raw`enc\.0`, { density: 0.25, blockShape: [4, 4] })
      .addPattern("head", { density: 0.75, blockShape: [2, 2] })
      .patchModel(new Aliased(), { dryRun: true });
    expect(encFirst.layers.map((l) => [l.name, l.density])).toEqual([["enc.0", 0.25]]);
    expect(encFirst.unmatchedPatterns).toEqual([]);
    expect(encFirst.shadowedPatterns).toEqual(["head"]);

    const model = new Aliased();
    const headFirst = new BlockSparseModelPatcher()
      .addPattern("head", { density: 0.75, blockShape: [2, 2] })
      .addPattern(String.raw`enc\.0`, { density: 0.25, blockShape: [4, 4] })
      .patchModel(model);
    expect(headFirst.layers.map((l) => [l.name, l.density, l.blockShape])).toEqual([["head", 0.75, [2, 2]]]);
    expect(headFirst.unmatchedPatterns).toEqual([]);
    expect(headFirst.shadowedPatterns).toEqual([String.raw`enc\.0`]);
    expect(asBlockSparse(model.enc.at(0), "enc.0").blockShape).toEqual([2, 2]);
    expect(model.head).toBe(model.enc.at(0));
  });

  it("counts the names below an aliased container, and a module holding its parent does not loop", () => {
    const model = new Aliased();
    (model as unknown as { dec: Module }).dec = model.enc;
    (model.enc as unknown as { owner: Module }).owner = model;
    const report = new BlockSparseModelPatcher().addPattern(String.raw`dec\.0`, { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((l) => l.name)).toEqual(["dec.0"]);
    expect(model.head).toBeInstanceOf(BlockSparseLinear);
  });

  it("lists every name of each Linear when no pattern matches", () => {
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(new Aliased()));
    expect(error.message).toContain("the model's Linear layers are: enc.0, head");
  });
});

describe("patchModel: refusals leave the model untouched", () => {
  function snapshot(model: Module): [string, unknown][] {
    return [...model.namedModules(), ...model.namedParameters()];
  }

  it("throws naming a matched module that is not a Linear", () => {
    const model = new TinyNet();
    const before = snapshot(model);
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/^blocks\.0(\..*)?$/, { density: 0.5, blockShape: [8, 8] }).patchModel(model));
    expect(error).toBeInstanceOf(ValueError);
    expect(error.message).toContain("'blocks.0' (matched by /^blocks\\.0(\\..*)?$/) is a Mlp, not a Linear");
    expect(error.message).toContain("'blocks.0.act' (matched by /^blocks\\.0(\\..*)?$/) is a ReLU, not a Linear");
    expect(snapshot(model)).toEqual(before);
    for (const [i, [name, value]] of snapshot(model).entries()) expect(value, name).toBe(before[i][1]);
  });

  it("names the layer, its dims and the block sizes that would work when the block shape does not tile it", () => {
    const model = new TinyNet();
    const before = snapshot(model);
    const error = thrown(() =>
      new BlockSparseModelPatcher()
        .addPattern(/fc1$/, { density: 0.5, blockShape: [8, 8] })
        .addPattern(/^head$/, { density: 0.5, blockShape: [3, 5] })
        .patchModel(model),
    );
    expect(error.problems).toEqual([
      "'head' has weight [out=8, in=16], which 3x5 blocks do not tile; block heights R that divide 8: 1, 2, 4, 8; block widths C that divide 16: 1, 2, 4, 8, 16",
    ]);
    // fc1 layers were valid, yet nothing changed: everything is checked first.
    for (const [i, [name, value]] of snapshot(model).entries()) expect(value, name).toBe(before[i][1]);
    expect(Object.values(typesByName(model))).not.toContain("BlockSparseLinear");
  });

  it("refuses a layer whose weight was disposed, before building anything", () => {
    const model = new TinyNet();
    model.head.namedOwnParameters()[0][1].value.dispose();
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/fc1$|^head$/, { density: 0.5, blockShape: [8, 8] }).patchModel(model));
    expect(error.problems).toEqual(["'head' has disposed parameters: head.weight"]);
    expect(Object.values(typesByName(model))).not.toContain("BlockSparseLinear");
  });

  it("refuses a weight holding NaN or an infinity as a PatchError listed with the others, in a dry run too, before building anything", () => {
    const model = new TinyNet();
    const layers = new Map(model.namedModules());
    const poison = (name: string, index: number, value: number): void => {
      const { weight } = layers.get(name) as Linear;
      const values = Float32Array.from(weight.value.dataSync());
      values[index] = value;
      weight.value = tensor(values, weight.shape);
    };
    poison("head", 2 * 16 + 5, Number.NaN);
    poison("blocks.0.fc1", 3, Number.NEGATIVE_INFINITY);
    const patcher = new BlockSparseModelPatcher().addPattern(/fc1$|^head$/, { density: 0.5, blockShape: [8, 8] });
    const expected = [
      "'blocks.0.fc1.weight' holds -Infinity at [0, 3]: a non-finite weight has no strongest blocks to keep; fix or reinitialise it before patching",
      "'head.weight' holds NaN at [2, 5]: a non-finite weight has no strongest blocks to keep; fix or reinitialise it before patching",
    ];
    expect(thrown(() => patcher.patchModel(model, { dryRun: true })).problems).toEqual(expected);
    expect(thrown(() => patcher.patchModel(model)).problems).toEqual(expected);
    expect(Object.values(typesByName(model))).not.toContain("BlockSparseLinear");
    expect(patcher.getPatchableLayers(model).map((layer) => layer.name)).toEqual(["blocks.0.fc2", "blocks.1.fc1", "blocks.1.fc2"]);
  });

  it("gives a zero-initialised weight (every block tied) a random pattern, reproducible under manualSeed, not its first blocks", () => {
    const zeroHead = () => {
      const model = new TinyNet();
      (model.head as Linear).weight.value = tensor(new Float32Array(8 * 16), [8, 16]);
      return model;
    };
    const patcher = new BlockSparseModelPatcher().addPattern("head", { density: 0.25, blockShape: [2, 2] });
    const masks: number[][] = [];
    for (let run = 0; run < 2; run++) {
      manualSeed(11);
      const model = zeroHead();
      patcher.patchModel(model);
      const layer = asBlockSparse(model.head, "head");
      expect(layer.nnzBlocks).toBe(8);
      expect(Array.from(layer.weight.value.dataSync()).every((v) => v === 0)).toBe(true);
      masks.push(Array.from(layer.pattern.blockMask()));
    }
    expect(masks[1]).toEqual(masks[0]);
    // Ties in row-major order kept the 8 blocks of the first block row: outputs 2-7 had no weights to train.
    expect(masks[0].slice(0, 8)).not.toEqual([1, 1, 1, 1, 1, 1, 1, 1]);
    // One value set: that block is the strongest.
    const model = new TinyNet();
    const values = new Float32Array(8 * 16);
    values[7 * 16 + 15] = 1;
    (model.head as Linear).weight.value = tensor(values, [8, 16]);
    new BlockSparseModelPatcher().addPattern("head", { density: 0.125, blockShape: [4, 4] }).patchModel(model);
    expect(Array.from(asBlockSparse(model.head, "head").pattern.blockMask())).toEqual([0, 0, 0, 0, 0, 0, 0, 1]);
  });

  it("refuses a layer already block-sparse", () => {
    const model = new TinyNet();
    const patcher = new BlockSparseModelPatcher().addPattern(/^head$/, { density: 0.5, blockShape: [8, 8] });
    patcher.patchModel(model);
    expect(() => patcher.patchModel(model)).toThrow(/'head' \(matched by \/\^head\$\/\) is already a BlockSparseLinear/);
  });

  it("refuses to untie a weight shared with a module that stays dense", () => {
    const model = new Tied();
    expect(() => new BlockSparseModelPatcher().addPattern("a", { density: 0.5, blockShape: [4, 4] }).patchModel(model)).toThrow(
      /'a\.weight' is shared with b\.weight/,
    );
    expect(model.a).toBeInstanceOf(Linear);
    // Patching both keeps nothing tied to a dense copy, so it is allowed.
    new BlockSparseModelPatcher().addPattern("a|b", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(model.a).toBeInstanceOf(BlockSparseLinear);
    expect(model.b).toBeInstanceOf(BlockSparseLinear);
  });
});

describe("options are validated with readable errors", () => {
  const patcher = () => new BlockSparseModelPatcher();

  it.each([
    [{ density: 0 }, "density: must be in (0, 1], got 0"],
    [{ density: 1.5 }, "density: must be in (0, 1], got 1.5"],
    [{ density: Number.NaN }, "density: must be a number in (0, 1], got NaN"],
    [{ density: "0.5" }, 'density: must be a number in (0, 1], got "0.5"'],
    [{}, "density: must be a number in (0, 1], got undefined"],
    [{ density: 0.5, blockShape: [32] }, "blockShape: must be [R, C] of positive integers, got [32]"],
    [{ density: 0.5, blockShape: [32, 0] }, "blockShape.1: must be a positive integer, got 0"],
    [{ density: 0.5, blockShape: [2.5, 4] }, "blockShape.0: must be a positive integer, got 2.5"],
    [{ density: 0.5, desnity: 0.5 }, 'Unrecognized key: "desnity"; the options are density, blockShape'],
    [{ density: 0.5, blocksize: [16, 16] }, 'Unrecognized key: "blocksize"; the options are density, blockShape'],
    [{ density: 0.5, block_shape: [8, 8], x: 1 }, 'Unrecognized keys: "block_shape", "x" (did you mean blockShape?); the options are density, blockShape'],
  ])("addPattern(/x/, %j) throws '%s'", (options, message) => {
    const error = thrown(() => patcher().addPattern(/x/, options as { density: number }));
    expect(error.message).toContain(`BlockSparseModelPatcher.addPattern: ${message}`);
  });

  it("names a BigInt as one, not as the number it holds (which read as a valid density)", () => {
    expect(thrown(() => patcher().addPattern(/x/, { density: 1n as unknown as number })).problems).toEqual(["density: must be a number in (0, 1], got 1n (a BigInt)"]);
    expect(thrown(() => patcher().addPattern(/x/, { density: 0.5, blockShape: [4, 4n as unknown as number] })).problems).toEqual([
      "blockShape.1: Invalid input: expected number, received 4n (a BigInt)",
    ]);
  });

  it("names BigInts inside an option as BigInts (String([1n]) reads as the density 1), and describes an object without a prototype rather than throwing", () => {
    expect(thrown(() => patcher().addPattern(/x/, { density: [1n] as unknown as number })).problems).toEqual(["density: must be a number in (0, 1], got [1n]"]);
    const bare = Object.assign(Object.create(null), { value: 1n });
    expect(thrown(() => patcher().addPattern(/x/, { density: bare })).problems).toEqual(['density: must be a number in (0, 1], got {"value":1n}']);
    const cycle = Object.create(null);
    cycle.self = cycle;
    expect(thrown(() => patcher().addPattern(/x/, { density: cycle })).problems).toEqual(["density: must be a number in (0, 1], got [object Object]"]);
  });

  it("rejects missing options, a bad pattern and an invalid regex source", () => {
    expect(() => patcher().addPattern(/x/, undefined as unknown as { density: number })).toThrow(/options \{ density, blockShape\? \} are required/);
    expect(() => patcher().addPattern("", { density: 0.5 })).toThrow(/pattern must be a RegExp or a non-empty regex source string, got ""/);
    expect(() => patcher().addPattern(42 as unknown as string, { density: 0.5 })).toThrow(/got number/);
    expect(() => patcher().addPattern(null as unknown as string, { density: 0.5 })).toThrow(/non-empty regex source string, got null$/);
    expect(() => patcher().addPattern(["fc1", "fc2"] as unknown as string, { density: 0.5 })).toThrow(
      /got an array \(add each pattern with its own addPattern call, or join them with \| in one regex\)$/,
    );
    expect(() => patcher().addPattern("fc(1", { density: 0.5 })).toThrow(/pattern "fc\(1" is not a valid regular expression/);
  });

  it("rejects unknown and mistyped patchModel options", () => {
    const p = patcher().addPattern(/^head$/, { density: 0.5, blockShape: [8, 8] });
    expect(() => p.patchModel(new TinyNet(), { dryrun: true } as object)).toThrow(
      /Unrecognized key: "dryrun" \(did you mean dryRun\?\); the options are dryRun, allowNoMatch, disposeReplaced$/,
    );
    expect(() => p.patchModel(new TinyNet(), { dryRun: "yes" } as unknown as object)).toThrow(/dryRun: Invalid input: expected boolean/);
  });

  it("takes null patchModel options as the defaults", () => {
    const p = patcher().addPattern(/^head$/, { density: 0.5, blockShape: [8, 8] });
    const model = new TinyNet();
    const report = p.patchModel(model, null);
    expect(report.dryRun).toBe(false);
    expect(report.layers.map((layer) => layer.name)).toEqual(["head"]);
    expect(model.head).toBeInstanceOf(BlockSparseLinear);
  });

  it("takes a RegExp made in another realm (a vm context) as a RegExp", () => {
    const pattern = runInNewContext("/fc1$/g") as RegExp;
    expect(pattern instanceof RegExp).toBe(false);
    const report = patcher().addPattern(pattern, { density: 0.5, blockShape: [8, 8] }).patchModel(new TinyNet(), { dryRun: true });
    expect(report.layers.map((layer) => [layer.name, layer.pattern])).toEqual([
      ["blocks.0.fc1", "/fc1$/g"],
      ["blocks.1.fc1", "/fc1$/g"],
    ]);
  });

  it("keeps the patterns in the order added", () => {
    expect(patcher().addPattern(/a/, { density: 0.5 }).addPattern("b", { density: 0.5 }).patterns).toEqual(["/a/", "b"]);
  });
});

describe("the report", () => {
  it("has per-layer shapes, blocks and parameter counts, and totals", () => {
    const model = new TinyNet();
    const before = parameterCount(model);
    const report = new BlockSparseModelPatcher()
      .addPattern(/^blocks\.0\.fc1$/, { density: 0.3, blockShape: [8, 4] })
      .addPattern(/^head$/, { density: 0.5, blockShape: [4, 8] })
      .patchModel(model);
    expect(report).toBeInstanceOf(PatchReport);
    // fc1: [32, 16] in 8x4 blocks = 4*4 = 16 blocks, round(0.3*16) = 5 kept; bias 32.
    // head: [8, 16] in 4x8 blocks = 2*2 = 4 blocks, 2 kept; bias 8.
    expect(report.layers).toEqual([
      {
        name: "blocks.0.fc1",
        pattern: "/^blocks\\.0\\.fc1$/",
        shape: [32, 16],
        density: 0.3,
        blockShape: [8, 4],
        keptBlocks: 5,
        totalBlocks: 16,
        keptDensity: 5 / 16,
        bias: true,
        paramsBefore: 32 * 16 + 32,
        paramsAfter: 5 * 32 + 32,
      },
      {
        name: "head",
        pattern: "/^head$/",
        shape: [8, 16],
        density: 0.5,
        blockShape: [4, 8],
        keptBlocks: 2,
        totalBlocks: 4,
        keptDensity: 0.5,
        bias: true,
        paramsBefore: 8 * 16 + 8,
        paramsAfter: 2 * 32 + 8,
      },
    ]);
    expect(report.totals).toEqual({
      layers: 2,
      paramsBefore: 544 + 136,
      paramsAfter: 192 + 72,
      modelParamsBefore: before,
      modelParamsAfter: before - (544 + 136) + (192 + 72),
    });
  });

  it("renders a table naming each layer, the totals and the model's parameters", () => {
    const report = new BlockSparseModelPatcher().addPattern(/fc1$/, { density: 0.25, blockShape: [8, 8] }).patchModel(new TinyNet(), { dryRun: true });
    const text = report.toString();
    const lines = text.split("\n");
    expect(lines[0]).toBe("Dry run: would patch 2 Linear layers to BlockSparseLinear");
    expect(lines[1]).toMatch(/^layer\s+pattern\s+shape\s+block\s+density\s+blocks\s+params before\s+params after$/);
    expect(lines[2]).toMatch(/^blocks\.0\.fc1\s+\/fc1\$\/\s+32x16\s+8x8\s+0\.25\s+2\/8\s+544\s+160$/);
    expect(lines[4]).toMatch(/^total\s+1,088\s+320$/);
    expect(lines[5]).toMatch(/^model parameters: [\d,]+ -> [\d,]+ \(\d+\.\d% of before\)$/);
    expect(report.toRows()).toHaveLength(3);
    // Every layer keeps 2 of 8 blocks, the density asked: no layer is named as keeping another.
    expect(text).not.toContain("keep a density");
  });

  it("names the layers whose blocks are too few to keep about the density asked (one block kept at least: even a dense layer)", () => {
    // fc1 [32, 16] in 16x16 blocks: 2 blocks, density 0.1 keeps 1 (0.5); fc2 [16, 32] in 16x32: one block, kept whole.
    const report = new BlockSparseModelPatcher()
      .addPattern(/fc1$/, { density: 0.1, blockShape: [16, 16] })
      .addPattern(/fc2$/, { density: 0.5, blockShape: [16, 32] })
      .patchModel(new TinyNet(), { dryRun: true });
    expect(report.layers.map((layer) => [layer.name, layer.keptDensity])).toEqual([
      ["blocks.0.fc1", 0.5],
      ["blocks.0.fc2", 1],
      ["blocks.1.fc1", 0.5],
      ["blocks.1.fc2", 1],
    ]);
    const line = report.toString().split("\n").at(-1);
    expect(line).toBe(
      "layers that keep a density more than 10% from the one asked (too few blocks to round to it; a smaller blockShape gives finer steps): " +
        "blocks.0.fc1 1/2 = 0.5 for 0.1, blocks.0.fc2 1/1 = 1 for 0.5, blocks.1.fc1 1/2 = 0.5 for 0.1, blocks.1.fc2 1/1 = 1 for 0.5",
    );
  });
});

describe("reliability of patterns and ties", () => {
  it("a string pattern cannot escape its anchoring", () => {
    expect(() => new BlockSparseModelPatcher().addPattern("fc1)|(x", { density: 0.5 })).toThrow(PatchError);
    expect(() => new BlockSparseModelPatcher().addPattern("fc1)|(x", { density: 0.5 })).toThrow(/not a valid regular expression/);
    class Named extends Module {
      fc1 = new Linear(8, 8, { seed: 1 });
      fc10 = new Linear(8, 8, { seed: 2 });
      forward(): never {
        throw new Error("not called");
      }
    }
    const model = new Named();
    new BlockSparseModelPatcher().addPattern("fc1|x", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(model.fc1).toBeInstanceOf(BlockSparseLinear);
    expect(model.fc10).toBeInstanceOf(Linear);
  });

  it("a weight tied between two patched layers stays one parameter", () => {
    const model = new Tied();
    const before = model.parameters().length;
    new BlockSparseModelPatcher().addPattern("a|b", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    const a = model.a as unknown as BlockSparseLinear;
    const b = model.b as unknown as BlockSparseLinear;
    expect(a.weight).toBe(b.weight);
    expect(a.bias).not.toBe(b.bias);
    expect(model.parameters().length).toBe(before);
  });

  it("a tie patched with two different settings is refused before anything changes", () => {
    const model = new Tied();
    const patcher = new BlockSparseModelPatcher().addPattern("a", { density: 0.5, blockShape: [4, 4] }).addPattern("b", { density: 0.25, blockShape: [4, 4] });
    expect(() => patcher.patchModel(model)).toThrow(/'b\.weight' is tied to 'a\.weight'/);
    expect(model.a).toBeInstanceOf(Linear);
  });
});

describe("inputs nobody tuned for", () => {
  class Holder extends Module {
    forward(): never {
      throw new Error("not called");
    }
  }

  it("counts a weight tied between two patched layers once, so a dry run's totals are the real patch's", () => {
    const patcher = () => new BlockSparseModelPatcher().addPattern("a|b", { density: 0.5, blockShape: [4, 4] });
    const dry = patcher().patchModel(new Tied(), { dryRun: true });
    const model = new Tied();
    const real = patcher().patchModel(model);
    // One 8x8 weight (64 -> 2 kept 4x4 blocks = 32) and two 8-element biases.
    expect(real.totals).toEqual({ layers: 2, paramsBefore: 64 + 16, paramsAfter: 32 + 16, modelParamsBefore: 80, modelParamsAfter: 48 });
    expect(parameterCount(model)).toBe(48);
    expect(dry.totals).toEqual(real.totals);
  });

  it("refuses slots the replacement cannot be put in (a dotted property name, a read-only property), before building anything", () => {
    const model = new Holder();
    (model as unknown as Record<string, Module>).c = new Linear(8, 8, { seed: 1 });
    (model as unknown as Record<string, Module>)["a.b"] = new Linear(8, 8, { seed: 2 });
    Object.defineProperty(model, "d", { value: new Linear(8, 8, { seed: 3 }), enumerable: true, writable: false });
    const tensorsBefore = memory().numTensors;
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/./, { density: 0.5, blockShape: [4, 4] }).patchModel(model, { disposeReplaced: true }));
    expect(error.problems).toEqual([
      "'a.b' is held under the property \"a.b\", which registerModule cannot set (a name must have no dots); rename the property",
      "'d' is a read-only property of Holder, so its replacement cannot be put there",
    ]);
    expect(model.namedChildren().map(([, child]) => child.constructor.name)).toEqual(["Linear", "Linear", "Linear"]);
    expect(model.parameters().every((p) => !p.value.isDisposed)).toBe(true);
    expect(memory().numTensors).toBe(tensorsBefore);
    const frozen = new Sequential(new Linear(8, 8, { seed: 4 }));
    Object.freeze(frozen);
    expect(() => new BlockSparseModelPatcher().addPattern("0", { density: 0.5, blockShape: [4, 4] }).patchModel(frozen)).toThrow(/'0' is a read-only property of Sequential/);
  });

  it('lists a Linear held under the property "" as [""] (its children as [""].fc), apart from the root, and patches it by that name', () => {
    class Blank extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      forward(): never {
        throw new Error("not called");
      }
    }
    const build = () => {
      const model = new Blank();
      const inner = new Blank();
      (model as unknown as Record<string, Module>)[""] = new Linear(8, 4, { seed: 2 });
      (model as unknown as Record<string, Module>).nested = inner;
      (inner as unknown as Record<string, Module>)[""] = new Sequential(new Linear(4, 4, { seed: 3 }));
      return model;
    };
    expect(new BlockSparseModelPatcher().getPatchableLayers(build()).map((layer) => layer.name)).toEqual(["fc", '[""]', "nested.fc", 'nested.[""].0']);
    const model = build();
    const report = new BlockSparseModelPatcher().addPattern(/^\[""\]$|\.\[""\]\.0$/, { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect(report.layers.map((layer) => layer.name)).toEqual(['[""]', 'nested.[""].0']);
    const blank = (holder: Module) => (holder as unknown as Record<string, Module>)[""];
    expect(blank(model)).toBeInstanceOf(BlockSparseLinear);
    expect((blank((model as unknown as { nested: Module }).nested) as Sequential).at(0)).toBeInstanceOf(BlockSparseLinear);
    expect(model.fc.constructor).toBe(Linear);
    // A string pattern "fc" matches model.fc alone, not a layer below "".
    const fc = new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] }).patchModel(build(), { dryRun: true });
    expect(fc.layers.map((layer) => layer.name)).toEqual(["fc"]);
    // In a plain object or a Map, a layer under "" is named [""] too, so that a refusal can point at it.
    class Held extends Module {
      body = new Linear(8, 8, { seed: 1 });
      heads = { "": new Linear(8, 4, { seed: 2 }) };
      byName = new Map([["", new Linear(8, 4, { seed: 3 })]]);
      forward(): never {
        throw new Error("not called");
      }
    }
    const none = thrown(() => new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(new Held()));
    expect(none.message).toContain('which Module does not register and the patcher cannot patch: heads.[""], byName.[""]');
    const matched = thrown(() => new BlockSparseModelPatcher().addPattern(/^heads\.\[""\]$/, { density: 0.5, blockShape: [4, 4] }).patchModel(new Held()));
    expect(matched.problems[0]).toMatch(/^'heads\.\[""\]' \(matched by .*\) is a Linear held in the plain object 'heads' of Held/);
  });

  it("refuses a Linear whose weight is not [outFeatures, inFeatures], naming it, before building anything", () => {
    const model = new Sequential(new Linear(8, 8, { seed: 1 }), new Linear(8, 8, { seed: 2 }));
    (model.at(1) as Linear).weight.value = tensor(new Float32Array(32), [4, 8]);
    const tensorsBefore = memory().numTensors;
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("0|1", { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual(["'1' has a weight of shape [4, 8], expected [out=8, in=8]"]);
    expect(memory().numTensors).toBe(tensorsBefore);
    expect(model.at(0)).toBeInstanceOf(Linear);
  });

  it("refuses a Linear whose bias was replaced by one of another shape, naming it, and patches nothing", () => {
    const model = new Sequential(new Linear(8, 8, { seed: 1 }), new Linear(8, 8, { seed: 2 }));
    (model.at(1) as Linear).bias!.value = tensor(new Float32Array(4), [4]);
    const error = thrown(() => new BlockSparseModelPatcher().addPattern("0|1", { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual(["'1' has a bias of shape [4], expected [out=8]"]);
    expect(model.at(0)).toBeInstanceOf(Linear);
    expect(model.at(1)).toBeInstanceOf(Linear);
  });

  it("refuses a Linear whose weight or bias is a Tensor, not a Parameter, naming it, and leaks nothing", () => {
    const model = new Sequential(new Linear(8, 8, { seed: 1 }), new Linear(8, 8, { seed: 2 }));
    const [first, second] = [model.at(0) as Linear, model.at(1) as Linear];
    (first as unknown as { bias: Tensor }).bias = tensor(new Float32Array(8), [8]);
    (second as unknown as { weight: Tensor }).weight = tensor(new Float32Array(64), [8, 8]);
    const patcher = new BlockSparseModelPatcher().addPattern("0|1", { density: 0.5, blockShape: [4, 4] });
    expect(patcher.getPatchableLayers(model)).toEqual([]);
    const tensorsBefore = memory().numTensors;
    const error = thrown(() => patcher.patchModel(model));
    expect(error.problems).toEqual([
      "'0.bias' is a Tensor, not a Parameter, so it is not one of the model's parameters; assign new Parameter(tensor) (or null for no bias)",
      "'1.weight' is a Tensor, not a Parameter, so it is not one of the model's parameters; assign new Parameter(tensor)",
    ]);
    expect(memory().numTensors).toBe(tensorsBefore);
    expect(model.at(0)).toBe(first);
    expect(model.at(1)).toBe(second);
  });

  it("patches, dry runs and lists the other layers when a layer no pattern matches has a plain Tensor bias, and refuses it by name when one does", () => {
    class Stale extends Module {
      fc = new Linear(8, 8, { seed: 1 });
      other = new Linear(8, 8, { seed: 2 });
      forward(): never {
        throw new Error("not called");
      }
    }
    const staleBias = (model: Stale): Stale => {
      (model.other as unknown as { bias: Tensor }).bias = tensor(new Float32Array(8), [8]);
      return model;
    };
    // nn's parameters() throws a ValueError for the tensor: the plain tensor is not counted (Module registers only Parameters).
    const fcOnly = () => new BlockSparseModelPatcher().addPattern("fc", { density: 0.5, blockShape: [4, 4] });
    const dry = fcOnly().patchModel(staleBias(new Stale()), { dryRun: true });
    expect(dry.layers.map((layer) => layer.name)).toEqual(["fc"]);
    expect(dry.totals).toMatchObject({ modelParamsBefore: 72 + 64, modelParamsAfter: 40 + 64 });
    const model = staleBias(new Stale());
    const real = fcOnly().patchModel(model);
    expect(model.fc).toBeInstanceOf(BlockSparseLinear);
    expect(real.totals).toEqual(dry.totals);
    const none = new BlockSparseModelPatcher().addPattern("decoder", { density: 0.5 }).patchModel(staleBias(new Stale()), { allowNoMatch: true });
    expect(none.totals.modelParamsBefore).toBe(72 + 64);
    expect(new BlockSparseModelPatcher().getPatchableLayers(staleBias(new Stale())).map((layer) => layer.name)).toEqual(["fc"]);
    const refused = thrown(() => new BlockSparseModelPatcher().addPattern(/./, { density: 0.5, blockShape: [4, 4] }).patchModel(staleBias(new Stale()), { dryRun: true }));
    expect(refused.problems).toEqual([
      "'other.bias' is a Tensor, not a Parameter, so it is not one of the model's parameters; assign new Parameter(tensor) (or null for no bias)",
    ]);
  });

  it("takes a deleted (undefined) bias as no bias: the report counts no bias, as the model's parameters do", () => {
    const model = new Sequential(new Linear(8, 8, { seed: 1 }));
    delete (model.at(0) as { bias?: unknown }).bias;
    const patcher = new BlockSparseModelPatcher().addPattern("0", { density: 0.5, blockShape: [4, 4] });
    expect(patcher.getPatchableLayers(model)[0].bias).toBe(false);
    const report = patcher.patchModel(model);
    expect(report.layers[0]).toMatchObject({ bias: false, paramsBefore: 64, paramsAfter: 32 });
    expect(report.totals).toMatchObject({ paramsBefore: 64, paramsAfter: 32, modelParamsBefore: 64, modelParamsAfter: 32 });
    expect(asBlockSparse(model.at(0), "0").bias).toBeNull();
  });

  it("refuses a Linear subclass holding parameters or modules besides weight and bias, which the BlockSparseLinear would drop", () => {
    class LoraLinear extends Linear {
      loraA = new Parameter(tensor(new Float32Array(16), [2, 8]));
      adapter = new Linear(8, 8, { seed: 9 });
    }
    const model = new Holder();
    model.registerModule("fc", new LoraLinear(8, 8, { seed: 1 }));
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/^fc$/, { density: 0.5, blockShape: [4, 4] }).patchModel(model));
    expect(error.problems).toEqual(["'fc' is a LoraLinear that also holds loraA, adapter, which a BlockSparseLinear would drop"]);
    expect((model as unknown as { fc: Module }).fc).toBeInstanceOf(LoraLinear);
  });

  it("refuses a Linear whose forward is its own (a subclass's, or one set on the instance), which the BlockSparseLinear would not run", () => {
    class ScaledLinear extends Linear {
      override forward(x: Tensor): Tensor {
        return mul(super.forward(x), 0.5);
      }
    }
    class PlainSubclass extends Linear {}
    const model = new Holder();
    model.registerModule("scaled", new ScaledLinear(8, 8, { seed: 1 }));
    const hooked = new Linear(8, 8, { seed: 2 });
    hooked.forward = (x: Tensor) => mul(Linear.prototype.forward.call(hooked, x), 2);
    model.registerModule("hooked", hooked);
    model.registerModule("plain", new PlainSubclass(8, 8, { seed: 3 }));
    const tensorsBefore = memory().numTensors;
    const error = thrown(() => new BlockSparseModelPatcher().addPattern(/./, { density: 0.5, blockShape: [4, 4] }).patchModel(model, { disposeReplaced: true }));
    expect(error.problems).toEqual([
      "'scaled' is a ScaledLinear with its own forward, which a BlockSparseLinear would not run (the layer would compute something else); leave it out of the patterns",
      "'hooked' is a Linear with its own forward, which a BlockSparseLinear would not run (the layer would compute something else); leave it out of the patterns",
    ]);
    expect(model.namedChildren().map(([, child]) => child.constructor.name)).toEqual(["ScaledLinear", "Linear", "PlainSubclass"]);
    expect(memory().numTensors).toBe(tensorsBefore);
    // A subclass that computes as Linear does is patched.
    new BlockSparseModelPatcher().addPattern("plain", { density: 0.5, blockShape: [4, 4] }).patchModel(model);
    expect((model as unknown as { plain: Module }).plain).toBeInstanceOf(BlockSparseLinear);
  });

  it("names what it got when the model is an object without a prototype", () => {
    const model = Object.create(null) as Module;
    expect(() => new BlockSparseModelPatcher().getPatchableLayers(model)).toThrow(/model must be a Module, got an object/);
    expect(() => new BlockSparseModelPatcher().patchModel(model)).toThrow(PatchError);
  });

  it("names a class passed for its model by name, not by its source, and says to await a Promise", () => {
    const patcher = new BlockSparseModelPatcher().addPattern("head", { density: 0.5, blockShape: [8, 8] });
    expect(thrown(() => patcher.patchModel(TinyNet as unknown as Module)).problems).toEqual([
      "model must be a Module, got the class TinyNet, not a model built from it (construct it first: new TinyNet(...))",
    ]);
    expect(thrown(() => patcher.getPatchableLayers((() => new TinyNet()) as unknown as Module)).problems).toEqual(["model must be a Module, got a function ((anonymous))"]);
    const pending = Promise.resolve(new TinyNet());
    expect(thrown(() => patcher.patchModel(pending as unknown as Module)).problems).toEqual(["model must be a Module, got a Promise (await it first)"]);
  });
});
