"""Hugging Face transformers' GPT-2 generation beside benchmarks/src/generate.ts: a randomly initialised
GPT2LMHeadModel of the size, parameters in the dtype, greedy, every sequence running all its steps. Three ways:
`generate` (its dynamic cache), `generate(cache_implementation="static")`, and the model's decoding step written out
over a static cache, captured in one CUDA graph (torch.cuda.CUDAGraph) and replayed per token (see `captured`). ms per token as generate.ts measures it. Prints a JSON list of
{size, batch, mode, msPerToken, error?} on stdout; a way that fails on this transformers version reports its error.

    python3 generate_torch.py --sizes small,medium --batch 1,8 --prompt 32 --new 64 [--dtype bfloat16] [--repeats 3]
"""
import argparse
import json
import statistics
import sys
import time

import torch
from cuda_timing import warm_up_on_side_stream
from transformers import GPT2Config, GPT2LMHeadModel

SIZES = {
    "small": (768, 12, 12),
    "medium": (1024, 24, 16),
    "large": (1280, 36, 20),
    "xl": (1600, 48, 25),
}


def per_token(run, new, repeats):
    """(time of `new` tokens - time of 1) / (new - 1), the median of `repeats`."""
    run(4)
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        times = []
        for n in (new, 1):
            start = time.perf_counter()
            run(n)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        samples.append((times[0] - times[1]) * 1e3 / (new - 1))
    return statistics.median(samples)


def captured(model, ids, new, repeats):
    """A decoding step of `model`'s weights written out in PyTorch over a static key/value cache (index_copy_ at a
    device position, a boolean mask built on the device, F.scaled_dot_product_attention), captured in one CUDA graph
    and replayed per token; the token is read back each step, as generate.ts's loop does. Checked against the model's
    own logits first."""
    import torch.nn.functional as F

    t = model.transformer
    config = model.config
    batch, prompt = ids.shape
    heads, width = config.n_head, config.n_embd
    head_dim = width // heads
    length = prompt + new + 8
    blocks = list(t.h)
    keys = [torch.zeros(batch, heads, length, head_dim, device="cuda", dtype=model.dtype) for _ in blocks]
    values = [torch.zeros_like(k) for k in keys]
    key_positions = torch.arange(length, device="cuda")

    def forward(tokens, positions):
        # HF's Conv1D stores [in, out]: x @ W + b.
        x = t.wte(tokens) + t.wpe(positions)
        n = tokens.shape[1]
        mask = (key_positions[None, :] <= positions[:, None]).view(1, 1, n, length)
        for block, k_cache, v_cache in zip(blocks, keys, values):
            h = block.ln_1(x)
            q, k, v = block.attn.c_attn(h).split(width, dim=2)
            q, k, v = (z.view(batch, n, heads, head_dim).transpose(1, 2) for z in (q, k, v))
            k_cache.index_copy_(2, positions, k)
            v_cache.index_copy_(2, positions, v)
            a = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
            x = x + block.attn.c_proj(a.transpose(1, 2).reshape(batch, n, width))
            x = x + block.mlp(block.ln_2(x))
        return model.lm_head(t.ln_f(x))

    logits = forward(ids, torch.arange(prompt, device="cuda"))
    want = model(ids).logits
    if (logits - want).float().norm() > 2e-2 * want.float().norm():
        raise RuntimeError("the written-out forward differs from the model's")
    tok = ids[:, -1:].clone()
    pos = torch.tensor([prompt], device="cuda")

    def step():
        return forward(tok, pos)[:, -1, :].argmax(-1)

    warm_up_on_side_stream(step)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()

    def run(n):
        pos.fill_(prompt)
        for _ in range(n):
            graph.replay()
            tok.copy_(out.view(batch, 1))
            pos.add_(1)
            out.cpu()

    return per_token(run, new, repeats)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="small,medium")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    rows = []
    with torch.inference_mode():
        for size in a.sizes.split(","):
            width, layers, heads = SIZES[size]
            torch.manual_seed(0)
            config = GPT2Config(n_embd=width, n_layer=layers, n_head=heads, vocab_size=50257, n_positions=1024,
                                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
            model = GPT2LMHeadModel(config).to(device="cuda", dtype=dtype).eval()
            for batch in [int(b) for b in a.batch.split(",")]:
                ids = torch.randint(0, 50257, (batch, a.prompt), device="cuda")
                common = dict(do_sample=False, pad_token_id=50256, eos_token_id=None)
                ways = {
                    "generate": lambda n: model.generate(ids, max_new_tokens=n, min_new_tokens=n, **common),
                    "generate-static": lambda n: model.generate(ids, max_new_tokens=n, min_new_tokens=n, cache_implementation="static", **common),
                }
                for mode, run in ways.items():
                    try:
                        rows.append({"size": size, "batch": batch, "mode": mode, "msPerToken": per_token(run, a.new, a.repeats)})
                    except Exception as error:  # a way this transformers version lacks
                        rows.append({"size": size, "batch": batch, "mode": mode, "msPerToken": None, "error": repr(error)[:300]})
                try:
                    rows.append({"size": size, "batch": batch, "mode": "captured", "msPerToken": captured(model, ids, a.new, a.repeats)})
                except Exception as error:
                    rows.append({"size": size, "batch": batch, "mode": "captured", "msPerToken": None, "error": repr(error)[:300]})
                print(f"torch {size} batch {batch}: {rows[-3:]}", file=sys.stderr)
            del model
            torch.cuda.empty_cache()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
