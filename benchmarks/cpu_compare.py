"""NumPy's dense product and SciPy's BSR product at the shapes given, best-of-N wall times as JSON.

  python3 cpu_compare.py '{"dense": [[M, K, N], ...], "bsr": [[M, K, N, block, density], ...],
                          "stack": [[M, K, N, layers], ...], "repeats": 5}'

Dense is X [M, K] @ W [K, N]; BSR is W [N, K] (scipy.sparse.bsr_matrix) @ X^T, the block-sparse
linear layer's forward product; a stack is X [M, K] @ W_i.T for `layers` weights W_i [N, K] run
back to back (per layer), so that their weights, more than the caches, come from memory. Run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset so OpenBLAS
picks its kernels for this CPU.
"""
import json
import sys
import time

import numpy as np
import scipy
import scipy.sparse


def best_ms(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main():
    spec = json.loads(sys.argv[1])
    repeats = spec.get("repeats", 5)
    rng = np.random.default_rng(0)
    out = {"numpy": np.__version__, "scipy": scipy.__version__, "dense": [], "bsr": [], "stack": []}
    try:
        out["blas"] = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # older NumPy: no dict form
        out["blas"] = "unknown"
    for m, k, n in spec["dense"]:
        x = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((k, n), dtype=np.float32)
        out["dense"].append({"M": m, "K": k, "N": n, "ms": best_ms(lambda: x @ w, repeats)})
    for m, k, n, block, density in spec["bsr"]:
        blocks = rng.random((n // block, k // block)) < density
        mask = np.kron(blocks, np.ones((block, block), dtype=bool))
        w = np.where(mask, rng.standard_normal((n, k), dtype=np.float32), np.float32(0))
        bsr = scipy.sparse.bsr_matrix(w, blocksize=(block, block))
        xt = np.ascontiguousarray(rng.standard_normal((m, k), dtype=np.float32).T)
        out["bsr"].append({"M": m, "K": k, "N": n, "block": block, "density": density, "nnzBlocks": int(blocks.sum()), "ms": best_ms(lambda: bsr @ xt, max(2, repeats // 2))})
    for m, k, n, layers in spec.get("stack", []):
        x = rng.standard_normal((m, k), dtype=np.float32)
        weights = [rng.standard_normal((n, k), dtype=np.float32) for _ in range(layers)]
        out["stack"].append({"M": m, "K": k, "N": n, "layers": layers, "ms": best_ms(lambda: [x @ w.T for w in weights], repeats) / layers})
        del weights
    print(json.dumps(out))


if __name__ == "__main__":
    main()
