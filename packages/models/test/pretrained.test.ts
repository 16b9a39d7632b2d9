import { cast, type Tensor } from "@blocksparse/core";
import { BertModel, GPT2LMHeadModel, RobertaModel } from "@blocksparse/models";
import { fromPretrained } from "@blocksparse/models/node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fixtures, readReference, relativeError } from "./helpers";

describe("GPT-2 from a transformers checkpoint", () => {
  let reference: Map<string, Tensor>;
  beforeAll(async () => {
    reference = await readReference("gpt2");
  });
  afterAll(() => {
    for (const t of reference.values()) t.dispose();
  });

  it("gives PyTorch's logits in float32 (max relative error <= 1e-4)", async () => {
    const model = await fromPretrained(fixtures("gpt2"));
    expect(model).toBeInstanceOf(GPT2LMHeadModel);
    const logits = model.forward(reference.get("input_ids")!);
    const error = relativeError(logits, reference.get("logits")!);
    console.log(`gpt2 float32 logits: max relative error ${error.toExponential(2)}`);
    expect(error).toBeLessThanOrEqual(1e-4);
  });

  it("loads the sharded copy into the same logits", async () => {
    const model = await fromPretrained(fixtures("gpt2-sharded"));
    const error = relativeError(model.forward(reference.get("input_ids")!), reference.get("logits")!);
    expect(error).toBeLessThanOrEqual(1e-4);
  });

  it("ties lm_head to wte: one Parameter", async () => {
    const model = (await fromPretrained(fixtures("gpt2"))) as GPT2LMHeadModel;
    expect(model.lm_head.weight).toBe(model.transformer.wte.weight);
    expect(model.parameters().filter((p) => p === model.lm_head.weight)).toHaveLength(1);
  });

  it("cast to bfloat16 stays within bfloat16 rounding of PyTorch's bfloat16 run", async () => {
    const model = await fromPretrained(fixtures("gpt2"), { dtype: "bfloat16" });
    const logits = cast(model.forward(reference.get("input_ids")!), "float32");
    const ours = relativeError(logits, reference.get("logits")!);
    const theirs = relativeError(reference.get("logits.bf16")!, reference.get("logits")!);
    const between = relativeError(logits, reference.get("logits.bf16")!);
    console.log(`gpt2 bfloat16 logits: ours vs float32 ${ours.toExponential(2)}, PyTorch bf16 vs float32 ${theirs.toExponential(2)}, ours vs PyTorch bf16 ${between.toExponential(2)}`);
    expect(ours).toBeLessThanOrEqual(2 * theirs);
    expect(between).toBeLessThanOrEqual(2 ** -6);
  });
});

for (const [name, Model] of [
  ["bert", BertModel],
  ["roberta", RobertaModel],
] as const) {
  describe(`${name} from a transformers checkpoint`, () => {
    let reference: Map<string, Tensor>;
    beforeAll(async () => {
      reference = await readReference(name);
    });
    afterAll(() => {
      for (const t of reference.values()) t.dispose();
    });
    const inputs = () => ({ attentionMask: reference.get("attention_mask")!, tokenTypeIds: reference.get("token_type_ids")! });

    it("gives PyTorch's last hidden state and pooler output with an attention mask (max relative error <= 1e-4)", async () => {
      const model = await fromPretrained(fixtures(name));
      expect(model).toBeInstanceOf(Model);
      const out = (model as BertModel).encode(reference.get("input_ids")!, inputs());
      const hiddenError = relativeError(out.lastHiddenState, reference.get("last_hidden_state")!);
      const poolerError = relativeError(out.poolerOutput, reference.get("pooler_output")!);
      console.log(`${name} float32: last_hidden_state ${hiddenError.toExponential(2)}, pooler_output ${poolerError.toExponential(2)}`);
      expect(hiddenError).toBeLessThanOrEqual(1e-4);
      expect(poolerError).toBeLessThanOrEqual(1e-4);
    });

    it("cast to bfloat16 stays within bfloat16 rounding of PyTorch's bfloat16 run", async () => {
      const model = (await fromPretrained(fixtures(name), { dtype: "bfloat16" })) as BertModel;
      const out = model.encode(reference.get("input_ids")!, inputs());
      for (const [key, got] of [
        ["last_hidden_state", out.lastHiddenState],
        ["pooler_output", out.poolerOutput],
      ] as const) {
        const widened = cast(got, "float32");
        const ours = relativeError(widened, reference.get(key)!);
        const theirs = relativeError(reference.get(`${key}.bf16`)!, reference.get(key)!);
        const between = relativeError(widened, reference.get(`${key}.bf16`)!);
        console.log(`${name} bfloat16 ${key}: ours vs float32 ${ours.toExponential(2)}, PyTorch bf16 vs float32 ${theirs.toExponential(2)}, ours vs PyTorch bf16 ${between.toExponential(2)}`);
        expect(ours).toBeLessThanOrEqual(2 * theirs);
        expect(between).toBeLessThanOrEqual(2 ** -6);
      }
    });
  });
}
