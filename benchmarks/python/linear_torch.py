"""PyTorch's F.linear over the grid of benchmarks/src/linear_shapes.ts: each call captured in one CUDA graph
(torch.cuda.CUDAGraph, after warm-up on a side stream as torch.cuda.graphs documents) and replayed. Prints a JSON
list of {m, k, n, torchUs} on stdout.

    python3 linear_torch.py --rows 1,8,64,512 --features 64,768,4096 --widths 129,1001,4097,50257 [--dtype bfloat16] [--bias]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from cuda_timing import warm_up_on_side_stream


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default="1,8,64,512")
    p.add_argument("--features", default="64,768,4096")
    p.add_argument("--widths", default="129,1001,4097,50257")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--bias", action="store_true")
    p.add_argument("--iterations", type=int, default=100)
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    ints = lambda text: [int(v) for v in text.split(",")]
    rows = []
    with torch.inference_mode():
        for k in ints(a.features):
            for n in ints(a.widths):
                w = (torch.randn(n, k, device="cuda") * 0.05).to(dtype)
                b = torch.randn(n, device="cuda").to(dtype) if a.bias else None
                for m in ints(a.rows):
                    x = torch.randn(m, k, device="cuda").to(dtype)
                    warm_up_on_side_stream(lambda: F.linear(x, w, b))
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        F.linear(x, w, b)
                    for _ in range(5):
                        graph.replay()
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    for _ in range(a.iterations):
                        graph.replay()
                    torch.cuda.synchronize()
                    rows.append({"m": m, "k": k, "n": n, "torchUs": (time.perf_counter() - start) * 1e6 / a.iterations})
                    del graph
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
