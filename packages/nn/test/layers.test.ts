import { gradcheck } from "@blocksparse/autograd";
import { DTypeError, IndexError, randn, ShapeError, tensor, ValueError } from "@blocksparse/core";
import { crossEntropy, Dropout, Embedding, functionalCall, GELU, LayerNorm, Linear, ModuleList, mseLoss, SGD, Sequential, TransformerBlock } from "@blocksparse/nn";
import { describe, expect, it } from "vitest";
import { host, maxAbsDiff } from "./helpers";

describe("layers", () => {
  it("Embedding gathers rows and wants int32 indices", () => {
    const embedding = new Embedding(10, 3, { seed: 1 });
    const w = host(embedding.weight.value);
    const out = host(embedding.forward(tensor(new Int32Array([7, 0, 7]), [3], "int32")));
    expect(Array.from(out)).toEqual([...w.subarray(21, 24), ...w.subarray(0, 3), ...w.subarray(21, 24)]);
    expect(() => embedding.forward(tensor([1, 2], [2]))).toThrow(DTypeError);
  });

  it("LayerNorm matches a float64 reference", () => {
    const norm = new LayerNorm(6);
    norm.weight!.assign(randn([6], { seed: 2 }));
    norm.bias!.assign(randn([6], { seed: 3 }));
    const x = randn([4, 6], { seed: 4 });
    const [xs, g, b] = [host(x), host(norm.weight!.value), host(norm.bias!.value)];
    const expected = new Float64Array(24);
    for (let r = 0; r < 4; r++) {
      const row = xs.subarray(r * 6, r * 6 + 6);
      const mean = row.reduce((a, v) => a + v, 0) / 6;
      const variance = row.reduce((a, v) => a + (v - mean) ** 2, 0) / 6;
      for (let i = 0; i < 6; i++) expected[r * 6 + i] = ((row[i] - mean) / Math.sqrt(variance + 1e-5)) * g[i] + b[i];
    }
    expect(maxAbsDiff(host(norm.forward(x)), expected)).toBeLessThan(1e-5);
    expect(() => norm.forward(randn([2, 5]))).toThrow(ShapeError);
  });

  it("Dropout zeroes about p of the elements and scales the rest by 1/(1-p); eval is the identity", () => {
    const dropout = new Dropout(0.25, { seed: 5 });
    const x = randn([4000], { seed: 6 });
    const xs = host(x);
    const out = host(dropout.forward(x));
    let zeros = 0;
    for (let i = 0; i < out.length; i++) {
      if (out[i] === 0) zeros++;
      else expect(out[i]).toBeCloseTo(xs[i] / 0.75, 5);
    }
    expect(zeros / out.length).toBeGreaterThan(0.22);
    expect(zeros / out.length).toBeLessThan(0.28);
    dropout.eval();
    expect(host(dropout.forward(x))).toEqual(xs);
    expect(() => new Dropout(1.5)).toThrow(ValueError);
    expect(() => new Dropout(-0.1)).toThrow(ValueError);
  });

  it("GELU (exact) matches x * Phi(x)", () => {
    const x = randn([50], { seed: 7 });
    const xs = host(x);
    // Phi via erf from Abramowitz-Stegun 7.1.26 (error < 1.5e-7).
    const erf = (z: number) => {
      const t = 1 / (1 + 0.3275911 * Math.abs(z));
      const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-z * z);
      return z >= 0 ? y : -y;
    };
    const expected = xs.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2)));
    expect(maxAbsDiff(host(new GELU().forward(x)), expected)).toBeLessThan(1e-5);
  });
});

describe("losses", () => {
  it("crossEntropy and mseLoss match float64 references", () => {
    const logits = randn([5, 4], { seed: 8 });
    const targets = tensor(new Int32Array([0, 3, 1, 1, 2]), [5], "int32");
    const ls = host(logits);
    let expected = 0;
    for (let r = 0; r < 5; r++) {
      const row = ls.subarray(r * 4, r * 4 + 4);
      const max = Math.max(...row);
      const logSum = max + Math.log(row.reduce((a, v) => a + Math.exp(v - max), 0));
      expected += logSum - row[[0, 3, 1, 1, 2][r]];
    }
    expect(crossEntropy(logits, targets).item()).toBeCloseTo(expected / 5, 5);
    const target = randn([5, 4], { seed: 9 });
    const ts = host(target);
    const mse = ls.reduce((a, v, i) => a + (v - ts[i]) ** 2, 0);
    expect(mseLoss(logits, target).item()).toBeCloseTo(mse / 20, 5);
    expect(mseLoss(logits, target, "sum").item()).toBeCloseTo(mse, 4);
    expect(() => mseLoss(logits, randn([4, 5]))).toThrow("mseLoss: pred has shape [5,4] but target has [4,5]");
  });
});

describe("TransformerBlock", () => {
  const block = new TransformerBlock({ dModel: 8, nHeads: 2, mlpRatio: 2, dropout: 0, seed: 10 });

  it("keeps the shape, and a position never sees later positions (causal)", () => {
    const x = randn([2, 5, 8], { seed: 11 });
    const y = host(block.forward(x));
    const changed = host(x);
    for (let i = 0; i < 8; i++) changed[4 * 8 + i] += 1; // batch 0, last position
    const y2 = host(block.forward(tensor(changed, [2, 5, 8])));
    expect(maxAbsDiff(y.subarray(0, 4 * 8), y2.subarray(0, 4 * 8))).toBe(0);
    expect(maxAbsDiff(y.subarray(4 * 8, 5 * 8), y2.subarray(4 * 8, 5 * 8))).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(y.subarray(40), y2.subarray(40))).toBe(0);
    expect(block.namedModules().map(([n]) => n)).toContain("mlp.fc1");
    expect(() => new TransformerBlock({ dModel: 8, nHeads: 3 })).toThrow("nHeads=3 does not divide dModel=8");
  });

  it("gradients with respect to the input and the attention weights match finite differences", () => {
    const x = randn([1, 3, 8], { seed: 12 });
    const byName = new Map(block.namedParameters());
    const names = ["attn.qkv.weight", "mlp.fc2.weight"];
    const copies = names.map((n) => tensor(host(byName.get(n)!.value), byName.get(n)!.shape));
    const result = gradcheck(
      (input, qkv, fc2) => functionalCall(block, { [names[0]]: qkv, [names[1]]: fc2 }, () => block.forward(input)),
      [x, ...copies],
    );
    expect(result.ok, `abs ${result.maxAbsError} rel ${result.maxRelError}`).toBe(true);
  });
});

describe("an Embedding index outside the vocabulary", () => {
  // torch says "index out of range in self"; gather's message named neither the layer nor its size.
  it("is an IndexError naming the layer and its number of embeddings, then gather's index and position", () => {
    const model = new Sequential(new Embedding(5, 2, { seed: 1 }));
    model.namedModules();
    for (const id of [5, -1]) {
      const ids = tensor([0, id], [2], "int32");
      expect(() => model.forward(ids)).toThrow(IndexError);
      expect(() => model.forward(ids)).toThrow(`Embedding(0) of 5 embeddings: gather: index ${id} at position 1 is out of range [0, 5)`);
    }
    expect(model.forward(tensor([4, 0], [2], "int32")).shape).toEqual([2, 2]);
  });
});

describe("LayerNorm's normalizedShape as a list", () => {
  it("takes torch's list of one (LayerNorm([8]) is LayerNorm(8))", () => {
    const norm = new LayerNorm([8]);
    expect(norm.normalizedShape).toBe(8);
    expect(norm.weight?.shape).toEqual([8]);
    expect(norm.forward(randn([2, 8], { seed: 1 })).shape).toEqual([2, 8]);
  });

  it("refuses a longer list, printed as a list, since only the last dim is normalised (torch would normalise both)", () => {
    expect(() => new LayerNorm([4, 8] as never)).toThrow(ValueError);
    expect(() => new LayerNorm([4, 8] as never)).toThrow("LayerNorm: normalizedShape must be one dim (n or [n]), got [4, 8]");
    expect(() => new LayerNorm([] as never)).toThrow("LayerNorm: normalizedShape must be one dim (n or [n]), got []");
    expect(() => new LayerNorm(["8"] as never)).toThrow('LayerNorm: normalizedShape must be a positive integer, got "8"');
  });
});

describe("a string where a layer takes a number", () => {
  // "got 0.5" read as if 0.5 were refused; torch's Dropout("0.5") fails comparing str with int.
  it("is quoted in the message, as core's ops quote one", () => {
    expect(() => new Dropout("0.5" as never)).toThrow('Dropout: p must be in [0, 1], got "0.5"');
    expect(() => new Linear("8" as never, 4)).toThrow('Linear: inFeatures must be a positive integer, got "8"');
    expect(() => new LayerNorm(4, { eps: "1e-5" as never })).toThrow('LayerNorm: eps must be a finite number >= 0, got "1e-5"');
    expect(() => new SGD(new Linear(2, 2).parameters(), { lr: "0.1" as never })).toThrow('SGD: lr must be a finite number >= 0, got "0.1"');
    expect(() => new Sequential().train("false" as never)).toThrow('train: mode must be a boolean, got "false"');
  });
});

describe("Sequential.at and ModuleList.at", () => {
  // Array's at() truncated 1.5 to 1 and read NaN, undefined and "1" as 0: another module than asked, silently.
  it("refuse an index that is not an integer, naming it, and still count negative ones from the end", () => {
    const first = new Linear(2, 2);
    const second = new GELU();
    for (const [name, container] of [
      ["Sequential", new Sequential(first, second)],
      ["ModuleList", new ModuleList([first, second])],
    ] as const) {
      expect(container.at(1)).toBe(second);
      expect(container.at(-2)).toBe(first);
      for (const [index, shown] of [[1.5, "1.5"], [Number.NaN, "NaN"], [undefined, "undefined"], ["1", '"1"']] as const) {
        expect(() => container.at(index as never)).toThrow(new ValueError(`${name}.at: index must be an integer, got ${shown}`));
      }
      expect(() => container.at(2)).toThrow(ValueError);
    }
  });
});
