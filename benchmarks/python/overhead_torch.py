"""PyTorch's host time per op on tiny CUDA tensors, measured as benchmarks/src/overhead.ts measures
ours: 2,000 calls after a 50-call warm-up, then synchronised; the median of five runs once the path
is warm. Then, as overhead.ts does after the backend starts, the first call of a dense product at a
layer's size (a shape this process has not run) and its steady time (the median of 20). Prints a JSON
list of {what, microseconds} on stdout.

    python3 overhead_torch.py [--dtype bfloat16]
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def per_op(op, count=2000):
    for _ in range(50):
        op()
    torch.cuda.synchronize()

    def run():
        t0 = time.perf_counter()
        for _ in range(count):
            op()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e6 / count

    for _ in range(3):
        run()
    return statistics.median([run() for _ in range(5)])


def first_call(dtype, cuda, m=2048, k=3072, n=768):
    """The first x @ w.t() at [m, k] x [n, k]^T, and its steady time: labelled as overhead.ts labels ours."""
    x = torch.randn(m, k, device=cuda).to(dtype)
    w = torch.randn(n, k, device=cuda).to(dtype)
    torch.cuda.synchronize()

    def once():
        t0 = time.perf_counter()
        x @ w.t()
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1e6

    first = once()
    steady = statistics.median([once() for _ in range(20)])
    return [
        {"what": f"matmul first call (ms) {m}x{k}->{n}", "microseconds": first},
        {"what": f"matmul steady call (ms) {m}x{k}->{n}", "microseconds": steady},
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available to PyTorch", file=sys.stderr)
        sys.exit(1)
    dtype = getattr(torch, args.dtype)
    cuda = torch.device("cuda")
    gen = torch.Generator(device=cuda).manual_seed(0)
    a = torch.randn(16, device=cuda, generator=gen).to(dtype)
    b = torch.randn(16, device=cuda, generator=gen).to(dtype)
    x = torch.randn(8, 64, device=cuda, generator=gen).to(dtype)
    w = torch.randn(64, 64, device=cuda, generator=gen).to(dtype)
    rows = [
        {"what": "add [16]", "microseconds": per_op(lambda: a + b)},
        {"what": "gelu [16]", "microseconds": per_op(lambda: F.gelu(a))},
        {"what": f"cast {args.dtype} -> float32 [16]", "microseconds": per_op(lambda: a.float())},
        {"what": "matmul [8,64] x [64,64]^T", "microseconds": per_op(lambda: x @ w.t())},
        {"what": "linear [8,64] x [64,64]^T", "microseconds": per_op(lambda: F.linear(x, w))},
    ]
    rows += first_call(dtype, cuda)
    json.dump({"torch": torch.__version__, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
