"""PyTorch's dense training step for the models of benchmarks/src/ffn.ts, timed the way a
PyTorch user runs it: float32 parameters, forward under torch.autocast, backward with a
fixed output gradient, torch.optim.AdamW (fused). Models: "ffn", "block" and "head" (one Linear). Prints a JSON list
of {model, dModel, hidden, tokens, medianMs} on stdout.

    python3 ffn_torch.py --cases '[{"model":"ffn","dModel":1024,"hidden":4096,"tokens":8192}]'
        [--dtype bfloat16] [--context 512] [--heads 16] [--graph] [--out torch.json]

--graph captures the whole step (forward, backward and AdamW with capturable=True) in one CUDA graph,
torch.cuda.graph's recipe (warm-up on a side stream, autocast without its cast cache), and times replays.
"""
import argparse
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from cuda_timing import median_event_ms, warm_up_on_side_stream


class Block(nn.Module):
    """GPT-2's block, as @blocksparse/nn's TransformerBlock: pre-norm, causal attention, GELU MLP."""

    def __init__(self, d_model, hidden, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, hidden)
        self.fc2 = nn.Linear(hidden, d_model)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


def time_step(model, x, dy, dtype, graph=False, repeats=30):
    # The fused CUDA AdamW (one kernel for all parameters), as ours: the strongest eager baseline; captured,
    # the same with capturable=True (its step count and learning rate on the device).
    extra = {"capturable": True} if graph else {}
    # float32 is the plain float32 step (autocast has no float32 target on CUDA); PyTorch's default keeps TF32 off.
    autocast = dtype != torch.float32
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=True, **extra)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, **extra)

    def step():
        opt.zero_grad(set_to_none=True)
        # The cast cache must be off for a captured step (torch.cuda.graph's documentation).
        with torch.autocast("cuda", dtype=dtype, cache_enabled=not graph, enabled=autocast):
            y = model(x)
        y.backward(dy)
        opt.step()

    if graph:
        warm_up_on_side_stream(step)
        captured = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(captured):
            with torch.autocast("cuda", dtype=dtype, cache_enabled=False, enabled=autocast):
                y = model(x)
            y.backward(dy)
            opt.step()
        step = captured.replay

    return median_event_ms(step, repeats)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cases", required=True)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--graph", action="store_true")
    p.add_argument("--out")
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    rows = []
    for c in json.loads(a.cases):
        d, h, tokens = c["dModel"], c["hidden"], c["tokens"]
        out_shape = None
        if c["model"] == "ffn":
            model = nn.Sequential(nn.Linear(d, h), nn.GELU(approximate="tanh"), nn.Linear(h, d)).cuda()
            shape = (tokens, d)
        elif c["model"] == "head":  # a language model's output layer: dModel -> h outputs (the vocabulary)
            model = nn.Linear(d, h).cuda()
            shape, out_shape = (tokens, d), (tokens, h)
        else:
            model = Block(d, h, a.heads).cuda()
            shape = (tokens // a.context, a.context, d)
        x = torch.randn(shape, device="cuda")
        dy = torch.randn(out_shape or shape, device="cuda", dtype=dtype if a.dtype != "float32" else torch.float32) / tokens ** 0.5
        ms = time_step(model, x, dy, dtype, graph=a.graph)
        rows.append({**c, "medianMs": ms, "torch": torch.__version__, "graph": a.graph})
        print(f"torch {c['model']} {d}x{h} tokens {tokens}: {ms:.3f} ms", file=sys.stderr)
        del model, x, dy
        torch.cuda.empty_cache()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=1)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
