"""PyTorch's attention on the shapes of benchmarks/src/attention.ts: F.scaled_dot_product_attention (its flash
kernels for float16/bfloat16) forward, and forward + backward of q, k and v from a fixed output gradient, each
captured in a CUDA graph and timed as replays. Prints a JSON list of
{batch, heads, length, headDim, causal, forwardUs, trainUs} on stdout.

    python3 attention_torch.py --shapes 16x16x512x64 [--causal] [--dtype bfloat16] [--iterations 50]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F


def captured(fn):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def time_us(graph, iterations):
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        graph.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e6 / iterations


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", required=True)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    rows = []
    for item in args.shapes.split(","):
        batch, heads, length, head_dim = (int(x) for x in item.split("x"))
        shape = (batch, heads, length, head_dim)
        q, k, v, dout = (torch.randn(shape, device="cuda", dtype=dtype) for _ in range(4))
        forward = captured(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=args.causal))
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def train():
            for t in leaves:
                t.grad = None
            out = F.scaled_dot_product_attention(*leaves, is_causal=args.causal)
            out.backward(dout)

        train_graph = captured(train)
        rows.append({
            "batch": batch, "heads": heads, "length": length, "headDim": head_dim, "causal": args.causal,
            "forwardUs": time_us(forward, args.iterations), "trainUs": time_us(train_graph, args.iterations),
        })
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
