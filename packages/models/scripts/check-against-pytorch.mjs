#!/usr/bin/env node
// Compares the models @blocksparse/models loads with the outputs PyTorch computed for them.
//
//   python3 packages/models/scripts/make_hf_fixtures.py DIR --preset small
//   node packages/models/scripts/check-against-pytorch.mjs DIR [--backend js|cuda]
//
// Uses the built dist (run `pnpm build` first). Runs on cuda when its addon starts, else js;
// prints the max relative error (max |ours - theirs| / max |theirs|) of every output in
// float32 and bfloat16 and exits 1 when one is off: float32 above 1e-4; bfloat16 farther
// from PyTorch's float32 result than twice PyTorch's own bfloat16 run is (our rounding
// error of the size of theirs). The distance to PyTorch's bfloat16 run is printed too.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { noGrad } from "@blocksparse/autograd";
import { cast, fromStorage, getBackend, getBackendInstance, setBackend } from "@blocksparse/core";
import { loadSafetensors } from "@blocksparse/format/node";
import { maxRelativeError as relativeError } from "../dist/index.js";
import { fromPretrained } from "../dist/node.js";

const FLOAT32_LIMIT = 1e-4;

const { values, positionals } = parseArgs({ allowPositionals: true, options: { backend: { type: "string" } } });
const dir = positionals[0];
if (dir === undefined) {
  console.error("usage: node check-against-pytorch.mjs DIR [--backend js|cuda] (DIR made by make_hf_fixtures.py)");
  process.exit(2);
}
await import("@blocksparse/backend-cuda").catch((error) => console.warn(`@blocksparse/backend-cuda not importable (${error.message}); running on js`));
if (values.backend !== undefined) setBackend(values.backend);
getBackendInstance();
const backend = getBackend();

async function readReference(name) {
  const content = await loadSafetensors(join(dir, name, "reference.safetensors"));
  const out = new Map();
  for (const [key, t] of content.tensors) out.set(key, fromStorage(t.data, t.shape, t.dtype === "I32" ? "int32" : "float32"));
  return out;
}

/** The outputs of `model` on the reference inputs, as float32 tensors by reference name. */
function outputsOf(name, model, reference) {
  if (name.startsWith("gpt2")) return { logits: cast(model.forward(reference.get("input_ids")), "float32") };
  const out = model.encode(reference.get("input_ids"), { attentionMask: reference.get("attention_mask"), tokenTypeIds: reference.get("token_type_ids") });
  return { last_hidden_state: cast(out.lastHiddenState, "float32"), pooler_output: cast(out.poolerOutput, "float32") };
}

const rows = [];
let failed = false;
for (const name of ["gpt2", "gpt2-sharded", "bert", "roberta"]) {
  if (!existsSync(join(dir, name))) {
    console.error(`${join(dir, name)} is missing`);
    failed = true;
    continue;
  }
  const reference = await readReference(name === "gpt2-sharded" ? "gpt2" : name);
  for (const dtype of ["float32", "bfloat16"]) {
    const started = performance.now();
    const model = await fromPretrained(join(dir, name), { dtype });
    const outputs = noGrad(() => outputsOf(name, model, reference));
    const seconds = (performance.now() - started) / 1000;
    for (const [key, got] of Object.entries(outputs)) {
      const want = reference.get(key);
      const error = relativeError(got, want);
      let ok = error <= FLOAT32_LIMIT;
      let detail = `<= ${FLOAT32_LIMIT}`;
      if (dtype === "bfloat16") {
        const theirs = relativeError(reference.get(`${key}.bf16`), want);
        const between = relativeError(got, reference.get(`${key}.bf16`));
        ok = error <= 2 * theirs;
        detail = `<= 2 x PyTorch bf16 vs float32 (${theirs.toExponential(2)}); ours vs PyTorch bf16 ${between.toExponential(2)}`;
      }
      failed ||= !ok;
      rows.push({ model: name, dtype, output: key, "max rel. error vs float32": error.toExponential(2), check: detail, ok: ok ? "ok" : "FAIL", seconds: seconds.toFixed(1) });
    }
    for (const parameter of model.parameters()) parameter.dispose();
  }
}
console.log(`backend: ${backend}; checkpoints: ${dir}`);
console.table(rows);
console.log(failed ? "FAILED" : "all outputs within tolerance");
process.exitCode = failed ? 1 : 0;
