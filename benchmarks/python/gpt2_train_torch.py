"""Hugging Face's GPT2LMHeadModel training step for benchmarks/src/gpt2_train.ts, timed the way a PyTorch user
runs it: float32 parameters, forward under torch.autocast, cross-entropy over the whole vocabulary (the same loss
as ours: every position against a target token), backward, fused AdamW. Prints a JSON list of
{size, batch, context, vocab, medianMs, graph} on stdout.

    python3 gpt2_train_torch.py --cases '[{"size":"small","batch":8,"context":1024,"vocab":50257}]'
        --sizes '{"small":{"n_embd":768,"n_layer":12,"n_head":12}}' [--dtype bfloat16] [--graph]

--graph captures the whole step (AdamW with capturable=True) in one CUDA graph, torch.cuda.graph's recipe (warm-up on
a side stream, autocast without its cast cache); where the capture fails, the eager step is reported
("graph": false) and why goes to stderr. --compile adds a row per case for the same model under torch.compile
(default mode, eager steps: what nanoGPT-style training scripts run), "compiled": true.
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F
import transformers
from cuda_timing import median_event_ms, warm_up_on_side_stream
from transformers import GPT2Config, GPT2LMHeadModel


def time_step(model, ids, targets, dtype, graph, repeats=20):
    vocab = model.config.vocab_size
    extra = {"capturable": True} if graph else {}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True, **extra)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, cache_enabled=not graph):
            logits = model(input_ids=ids).logits
            loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        loss.backward()
        opt.step()

    run, captured_ok = step, False
    if graph:
        try:
            warm_up_on_side_stream(step)
            captured = torch.cuda.CUDAGraph()
            opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(captured):
                with torch.autocast("cuda", dtype=dtype, cache_enabled=False):
                    logits = model(input_ids=ids).logits
                    loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
                loss.backward()
                opt.step()
            run, captured_ok = captured.replay, True
        except Exception as error:  # noqa: BLE001 - any failure to capture means: time it eagerly
            print(f"gpt2_train_torch: capture failed ({error}); timing the eager step", file=sys.stderr)
            torch.cuda.synchronize()
            graph = False  # step() reads it: autocast's cast cache back on
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True)
            run = step
    return median_event_ms(run, repeats, warmup=3), captured_ok


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", required=True)
    p.add_argument("--sizes", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--graph", action="store_true")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    sizes = json.loads(a.sizes)
    torch.manual_seed(0)
    rows = []
    for c in json.loads(a.cases):
        s = sizes[c["size"]]
        config = GPT2Config(n_embd=s["n_embd"], n_layer=s["n_layer"], n_head=s["n_head"], vocab_size=c["vocab"],
                            n_positions=c["context"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        for compiled in [False, True] if a.compile else [False]:
            torch.manual_seed(0)
            model = GPT2LMHeadModel(config).cuda().train()  # the attention transformers picks (sdpa where it can)
            attention = getattr(model.config, "_attn_implementation", None)
            ids = torch.randint(0, c["vocab"], (c["batch"], c["context"]), device="cuda")
            targets = torch.randint(0, c["vocab"], (c["batch"], c["context"]), device="cuda")
            # Compiled: eager steps of the compiled model (its own graphs, if any, are torch.compile's choice).
            ms, captured = time_step(torch.compile(model) if compiled else model, ids, targets, dtype, a.graph and not compiled)
            rows.append({**c, "medianMs": ms, "graph": captured, "compiled": compiled, "torch": torch.__version__,
                         "transformers": transformers.__version__, "attention": attention})
            label = " (torch.compile)" if compiled else (" (captured)" if captured else "")
            print(f"torch gpt2 {c['size']}{label}: {ms:.2f} ms per step, attention {attention}", file=sys.stderr)
            del model, ids, targets
            torch.cuda.empty_cache()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
