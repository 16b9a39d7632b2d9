import { reshape, tensor, tidy } from "@blocksparse/core";
import { describe, expect, it } from "vitest";
import { CharTransformer } from "../src/model";

const model = new CharTransformer({ vocabSize: 11, context: 8, dModel: 16, nHeads: 2, layers: 1, seed: 3 });

describe("CharTransformer.lastLogits", () => {
  it("takes one sequence as [T] and gives [vocabSize], the batch of one's logits", () => {
    tidy(() => {
      const ids = tensor([1, 4, 2, 9, 0], [5], "int32");
      const single = model.lastLogits(ids);
      expect(single.shape).toEqual([11]);
      const batched = model.lastLogits(reshape(ids, [1, 5]));
      expect(batched.shape).toEqual([1, 11]);
      expect(Array.from(single.dataSync())).toEqual(Array.from(batched.dataSync()));
    });
  });

  it("refuses ids of another rank, naming their shape", () => {
    tidy(() => {
      expect(() => model.lastLogits(tensor([1, 2, 3, 4], [1, 2, 2], "int32"))).toThrow("CharTransformer: ids have shape [1,2,2], expected [B, T] or [T]");
    });
  });
});
