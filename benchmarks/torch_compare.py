"""PyTorch side of the GPU comparison.

Reads what `src/compare.ts` wrote (inputs, BSR pattern and values, our outputs at checked
rows and blocks, our timings in ours.json), runs on the same inputs

  - cuBLAS dense:   x @ W.T, dy @ W, dy.T @ x
  - PyTorch BSR:    F.linear(x, W_bsr) and F.linear(dy, (W.T)_bsr) (Triton BSR kernels),
                    torch.sparse.sampled_addmm for dW on W's pattern,

checks that our outputs agree with PyTorch's, and prints a table of times and ratios.
Writes compare.json and compare.md next to the inputs (or to --out).

    python torch_compare.py DIR [--out DIR]
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))
from cuda_timing import median_event_ms  # noqa: E402 - beside this script, in python/

DEVICE = "cuda"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Relative Frobenius error allowed between two float32-accumulated products of these inputs.
TOLERANCE = {"float32": 5e-3, "float16": 1e-2, "bfloat16": 3e-2}


TIMER = "CUDA events"


def median_ms(fn, reps=50, warmup=5):
    """Median milliseconds per call: triton's do_bench when present, else CUDA events (host clock on a CPU)."""
    global TIMER
    if DEVICE == "cpu":
        import time

        TIMER = "the host clock"
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        times.sort()
        return times[len(times) // 2]
    try:
        from triton.testing import do_bench

        TIMER = "triton.testing.do_bench"
        try:
            return float(do_bench(fn, warmup=10, rep=50, return_mode="median"))
        except TypeError:
            return float(do_bench(fn, warmup=10, rep=50, quantiles=[0.5])[0])
    except ImportError:
        pass
    return median_event_ms(fn, reps, warmup=warmup)


def rel_error(actual, reference):
    actual = actual.double()
    reference = reference.double()
    if not torch.isfinite(actual).all():
        return math.inf
    norm = reference.norm().item()
    diff = (actual - reference).norm().item()
    return diff / norm if norm > 0 else diff


def sampled_dw(w_bsr, dy_t, x):
    """dW = dy.T @ x on W's blocks, through the first PyTorch path that accepts BSR."""
    attempts = [
        ("torch.sparse.sampled_addmm(BSR)", lambda: torch.sparse.sampled_addmm(w_bsr, dy_t, x, beta=0.0, alpha=1.0)),
    ]
    try:
        from torch.sparse import _triton_ops

        attempts.append(("torch.sparse._triton_ops.sampled_addmm(BSR)", lambda: _triton_ops.sampled_addmm(w_bsr, dy_t, x, beta=0.0, alpha=1.0)))
    except ImportError:
        pass
    # Last resort: element-wise CSR of the same pattern (cuSPARSE SDDMM); its result is read back densely.
    w_csr = w_bsr.to_dense().to_sparse_csr()
    attempts.append(("torch.sparse.sampled_addmm(CSR of the pattern)", lambda: torch.sparse.sampled_addmm(w_csr, dy_t, x, beta=0.0, alpha=1.0)))
    errors = []
    for name, fn in attempts:
        try:
            out = fn()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
            return ("; ".join([*errors, f"used {name}"]) if errors else name), fn, out
        except Exception as error:  # noqa: BLE001 - every failure is reported, then the next path is tried
            errors.append(f"{name} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
    return "; ".join(errors), None, None


def run_case(case, base, inputs_cache):
    dtype = DTYPES[case["dtype"]]
    tol = TOLERANCE[case["dtype"]]
    M, K, N, bs = case["M"], case["K"], case["N"], case["blockSize"]
    if case["inputs"] not in inputs_cache:
        inputs_cache.clear()
        raw = load_file(os.path.join(base, case["inputs"]), device=DEVICE)
        x = raw["x"].to(dtype).contiguous()
        dy = raw["dy"].to(dtype).contiguous()
        inputs_cache[case["inputs"]] = (x, dy, dy.t().contiguous())
    x, dy, dy_t = inputs_cache[case["inputs"]]
    t = load_file(os.path.join(base, case["file"]), device=DEVICE)
    values = t["values"].to(dtype).contiguous()
    crow = t["crow_indices"].to(torch.int64)
    col = t["col_indices"].to(torch.int64)
    rows = t["rows"].to(torch.int64)
    blocks = t["blocks"].to(torch.int64)
    w_bsr = torch.sparse_bsr_tensor(crow, col, values, size=(N, K), dtype=dtype, device=DEVICE)
    w_dense = w_bsr.to_dense().contiguous()
    w_t_bsr = w_dense.t().contiguous().to_sparse_bsr((bs, bs))

    # Block coordinates of the checked blocks, for reading them out of dense results.
    block_row = torch.repeat_interleave(torch.arange(N // bs, device=DEVICE), crow[1:] - crow[:-1])
    block_col = col

    def dense_blocks(dense):
        return torch.stack([dense[block_row[b] * bs : (block_row[b] + 1) * bs, block_col[b] * bs : (block_col[b] + 1) * bs] for b in blocks.tolist()])

    result = {k: case[k] for k in ("dtype", "blockSize", "density", "M", "K", "N", "nnzBlocks")}
    ops = []

    # y = x W^T
    y_dense = x @ w_dense.t()
    checks = {"ours vs cuBLAS": rel_error(t["y_rows"], y_dense[rows].float())}
    row = {"op": "y = x·Wᵀ", "ours_ms": case["oursMs"]["bsrLinear"], "dense_ms": median_ms(lambda: x @ w_dense.t())}
    try:
        y_bsr = F.linear(x, w_bsr)
        checks["ours vs torch BSR"] = rel_error(t["y_rows"], y_bsr[rows].float())
        row["torch_bsr_ms"] = median_ms(lambda: F.linear(x, w_bsr))
        row["torch_bsr_path"] = "F.linear(x, W_bsr)"
    except Exception as error:  # noqa: BLE001
        row["torch_bsr_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    row["checks"] = checks
    ops.append(row)
    del y_dense

    # dX = dy W
    dx_dense = dy @ w_dense
    checks = {"ours vs cuBLAS": rel_error(t["dx_rows"], dx_dense[rows].float())}
    row = {"op": "dX = dY·W", "ours_ms": case["oursMs"]["bsrMatmul"], "dense_ms": median_ms(lambda: dy @ w_dense)}
    try:
        dx_bsr = F.linear(dy, w_t_bsr)
        checks["ours vs torch BSR"] = rel_error(t["dx_rows"], dx_bsr[rows].float())
        row["torch_bsr_ms"] = median_ms(lambda: F.linear(dy, w_t_bsr))
        row["torch_bsr_path"] = "F.linear(dy, Wᵀ_bsr)"
    except Exception as error:  # noqa: BLE001
        row["torch_bsr_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    row["checks"] = checks
    ops.append(row)
    del dx_dense

    # dW = dy^T x on W's blocks
    dw_dense = dy_t @ x
    checks = {"ours vs cuBLAS": rel_error(t["dw_blocks"], dense_blocks(dw_dense).float())}
    row = {"op": "dW = dYᵀ·X (sampled)", "ours_ms": case["oursMs"]["sampledMatmul"], "dense_ms": median_ms(lambda: dy_t @ x)}
    path, fn, out = sampled_dw(w_bsr, dy_t, x)
    if fn is not None:
        torch_blocks = out.values()[blocks] if out.layout == torch.sparse_bsr else dense_blocks(out.to_dense())
        checks["ours vs torch BSR"] = rel_error(t["dw_blocks"], torch_blocks.float())
        row["torch_bsr_ms"] = median_ms(fn)
        row["torch_bsr_path"] = path
    else:
        row["torch_bsr_error"] = path
    row["checks"] = checks
    ops.append(row)
    del dw_dense

    for row in ops:
        row["agree"] = all(err <= tol for err in row["checks"].values())
        row["tolerance"] = tol
    result["ops"] = ops
    result["ours_dense_linear_ms"] = case["oursMs"]["denseLinear"]
    return result


def fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def table(results):
    lines = [
        "| dtype | block | density | op | ours ms | cuBLAS dense ms | PyTorch BSR ms | dense ÷ ours | PyTorch BSR ÷ ours | max rel. err | agree |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        for op in r["ops"]:
            torch_ms = op.get("torch_bsr_ms")
            worst = max(op["checks"].values())
            lines.append(
                f"| {r['dtype']} | {r['blockSize']} | {r['density']} | {op['op']} | {fmt(op['ours_ms'])} | {fmt(op['dense_ms'])} | "
                f"{fmt(torch_ms) if torch_ms is not None else 'n/a'} | {fmt(op['dense_ms'] / op['ours_ms'], 2)} | "
                f"{fmt(torch_ms / op['ours_ms'], 2) if torch_ms is not None else 'n/a'} | {worst:.1e} | {'yes' if op['agree'] else 'NO'} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", help="folder written by src/compare.ts")
    parser.add_argument("--out", help="where compare.json and compare.md go (default: dir)")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu only checks this script on small inputs")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_compare.py: CUDA is not available to PyTorch")
    with open(os.path.join(args.dir, "ours.json")) as f:
        ours = json.load(f)
    out_dir = args.out or args.dir
    os.makedirs(out_dir, exist_ok=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    cache = {}

    def write_outputs(final):
        ok = [r for r in results if "error" not in r]
        dense_lines = sorted({(r["dtype"], r["ours_dense_linear_ms"]) for r in ok})
        environment = {
            "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "triton": __import__("importlib.metadata").metadata.version("triton") if __import__("importlib.util").util.find_spec("triton") else None,
        }
        header = (
            f"PyTorch {environment['torch']} (CUDA {environment['cuda']}, Triton {environment['triton']}) on {environment['gpu']}; "
            f"M={ok[0]['M'] if ok else '?'}, K={ok[0]['K'] if ok else '?'}, N={ok[0]['N'] if ok else '?'}. "
            f"Medians; PyTorch timed with {TIMER}, ours with host clocks around synchronized batches. "
            "Ratios above 1 mean ours is faster."
        )
        markdown = [header, "", table(ok), ""]
        for dtype, ms in dense_lines:
            markdown.append(f"- our own dense x·Wᵀ ({dtype}): {ms:.3f} ms")
        paths = sorted({op.get("torch_bsr_path") or op.get("torch_bsr_error") for r in ok for op in r["ops"]})
        markdown += [f"- PyTorch BSR path: {p}" for p in paths if p]
        failed = [r for r in results if "error" in r]
        markdown += [f"- failed: {r['dtype']} block {r['blockSize']} density {r['density']}: {r['error']}" for r in failed]
        text = "\n".join(markdown) + "\n"
        if final:
            print(text)
        with open(os.path.join(out_dir, "compare.md"), "w") as f:
            f.write(text)
        with open(os.path.join(out_dir, "compare.json"), "w") as f:
            json.dump({"environment": environment, "ours": {k: ours[k] for k in ("backend", "machine", "commit", "date")}, "results": results}, f, indent=2)
        return ok, failed

    for i, case in enumerate(ours["cases"]):
        print(f"[{i + 1}/{len(ours['cases'])}] {case['dtype']} block {case['blockSize']} density {case['density']}", file=sys.stderr, flush=True)
        try:
            results.append(run_case(case, args.dir, cache))
        except Exception as error:  # noqa: BLE001 - one failed case does not lose the others
            print(f"  failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            results.append({**{k: case[k] for k in ("dtype", "blockSize", "density")}, "error": f"{type(error).__name__}: {error}", "ops": []})
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        # Rewritten after every case, so that a run cut short still leaves its table.
        write_outputs(final=False)
    ok, failed = write_outputs(final=True)
    if failed or not all(op["agree"] for r in ok for op in r["ops"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
