"""Makes Hugging Face checkpoints with PyTorch + transformers and the outputs the
TypeScript loaders must reproduce.

    python3 make_hf_fixtures.py OUT_DIR [--preset tiny|small] [--text moby-dick.txt]

Writes, per model, a folder as `save_pretrained` makes it (config.json, model.safetensors
or a sharded index) and `reference.safetensors` holding the inputs and outputs (float32
and bfloat16 runs), plus a BPE tokenizer trained on the text with its encodings.
"""
import argparse, json, os, sys
import torch
from safetensors.torch import save_file
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel,
                          RobertaConfig, RobertaModel)

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--preset", default="tiny", choices=["tiny", "small"])
p.add_argument("--text", default=None)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
torch.manual_seed(1234)
tiny = a.preset == "tiny"
width, layers, heads, vocab, ctx = (32, 2, 4, 96, 32) if tiny else (256, 4, 8, 2048, 128)
batch, seq = (2, 12) if tiny else (4, 64)

def reference(model, inputs, outputs_of, path):
    tensors = {k: v.to(torch.int32).contiguous() for k, v in inputs.items()}
    with torch.no_grad():
        for name, value in outputs_of(model(**inputs)).items():
            tensors[name] = value.float().contiguous()
        m16 = model.to(torch.bfloat16)
        for name, value in outputs_of(m16(**inputs)).items():
            tensors[name + ".bf16"] = value.float().contiguous()
        model.to(torch.float32)
    save_file(tensors, path, metadata={"torch": torch.__version__})

def save(model, name, shard=None):
    d = os.path.join(a.out, name)
    model.save_pretrained(d, safe_serialization=True, **({"max_shard_size": shard} if shard else {}))
    return d

# GPT-2 (LM head tied to wte)
gcfg = GPT2Config(vocab_size=vocab, n_positions=ctx, n_embd=width, n_layer=layers, n_head=heads,
                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
gpt2 = GPT2LMHeadModel(gcfg).eval()
with torch.no_grad():  # non-trivial LayerNorm and bias values
    for n, prm in gpt2.named_parameters():
        if n.endswith("bias") or ".ln_" in n or n.startswith("transformer.ln_f"):
            prm.add_(0.1 * torch.randn_like(prm))
ids = torch.randint(0, vocab, (batch, seq))
d = save(gpt2, "gpt2")
save(gpt2, "gpt2-sharded", shard="40KB" if tiny else "2MB")
reference(gpt2, {"input_ids": ids}, lambda o: {"logits": o.logits}, os.path.join(d, "reference.safetensors"))

def encoder(cls, cfg_cls, name, **extra):
    cfg = cfg_cls(vocab_size=vocab, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=4 * width, max_position_embeddings=ctx + 2, type_vocab_size=2,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **extra)
    model = cls(cfg).eval()
    with torch.no_grad():
        for n, prm in model.named_parameters():
            if n.endswith("bias") or "LayerNorm" in n:
                prm.add_(0.1 * torch.randn_like(prm))
    ids = torch.randint(3, vocab, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq - 3:] = 0
    types = torch.zeros(batch, seq, dtype=torch.long)
    types[:, seq // 2:] = 1
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    dd = save(model, name)
    reference(model, inputs, lambda o: {"last_hidden_state": o.last_hidden_state, "pooler_output": o.pooler_output},
              os.path.join(dd, "reference.safetensors"))

encoder(BertModel, BertConfig, "bert")
encoder(RobertaModel, RobertaConfig, "roberta", pad_token_id=1)

if a.text:
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    text = open(a.text, encoding="utf-8").read()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=512 if tiny else 2048, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    td = os.path.join(a.out, "tokenizer")
    os.makedirs(td, exist_ok=True)
    tok.save(os.path.join(td, "tokenizer.json"))
    samples = ["Call me Ishmael.", "It was the Bible of the whale\u2014and its 1851 edition!", text[5000:5400]]
    json.dump([{"text": s, "ids": tok.encode(s).ids} for s in samples], open(os.path.join(td, "encodings.json"), "w"), indent=1)

import transformers
json.dump({"torch": torch.__version__, "transformers": transformers.__version__, "preset": a.preset},
          open(os.path.join(a.out, "versions.json"), "w"))
print("wrote", a.out, sorted(os.listdir(a.out)))
