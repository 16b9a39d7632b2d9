"""PyTorch's dense decoding through the stacks of benchmarks/src/decode_graph.ts, timed the way a PyTorch user
runs generation: the parameters cast to the dtype (no autocast), torch.inference_mode, eager calls and one
CUDA graph replay of the whole stack (torch.cuda.CUDAGraph). Prints a JSON list of
{tokens, eagerUsPerLayer, capturedUsPerLayer} on stdout (per block for --model ffn).

    python3 decode_torch.py --model ffn --width 4096 --hidden 16384 --layers 16 --tokens 1,8 [--dtype bfloat16]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from cuda_timing import warm_up_on_side_stream


class FeedForwardBlock(nn.Module):
    """h + fc2(GELU(fc1(LayerNorm(h)))), as decode_graph.ts's FeedForwardBlock (exact GELU, eps 1e-5)."""

    def __init__(self, width, hidden):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, h):
        return h + self.fc2(F.gelu(self.fc1(self.ln(h))))


def time_us(run, iterations):
    for _ in range(5):
        run()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        run()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e6 / iterations


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="linear", choices=["linear", "ffn"])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=16384)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--tokens", default="1,8")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--iterations", type=int, default=200)
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    torch.manual_seed(0)
    layers = [
        nn.Linear(a.width, a.width) if a.model == "linear" else FeedForwardBlock(a.width, a.hidden)
        for _ in range(a.layers)
    ]
    stack = nn.Sequential(*layers).to(device="cuda", dtype=dtype).eval()
    rows = []
    with torch.inference_mode():
        for tokens in [int(t) for t in a.tokens.split(",")]:
            x = (torch.randn(tokens, a.width, device="cuda") * 0.05).to(dtype)
            expected = stack(x)
            # Captured on a side stream, as torch.cuda.graphs documents, after warm-up there.
            warm_up_on_side_stream(lambda: stack(x))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = stack(x)
            graph.replay()
            torch.cuda.synchronize()
            # cuBLAS may pick another algorithm under capture: equal up to rounding, not bit for bit.
            if (out - expected).float().norm() > 1e-2 * expected.float().norm():
                raise SystemExit(f"tokens {tokens}: the replay differs from the eager stack")
            eager = time_us(lambda: stack(x), a.iterations)
            captured = time_us(graph.replay, a.iterations)
            rows.append({"tokens": tokens, "eagerUsPerLayer": eager / a.layers, "capturedUsPerLayer": captured / a.layers})
            del graph, out
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
