"""Reads the files write.ts made with the recipes of docs/format.md (PyTorch, SciPy), checks them
against the dense matrices, then writes files from PyTorch and SciPy for read.ts to check.
    python3 interop/check.py <dir>
"""
import os
import sys

try:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
except ImportError as error:
    sys.exit(f"check.py needs PyTorch and safetensors ({error}): pip install torch safetensors (SciPy optional)")

directory = sys.argv[1] if len(sys.argv) > 1 else "."
for name in ("ours.safetensors", "ours-dense.safetensors"):
    if not os.path.exists(os.path.join(directory, name)):
        sys.exit(f"check.py: {os.path.join(directory, name)} does not exist: tsx interop/write.ts {directory} writes it (interop/run.sh runs all three)")
failures = []


def report(what, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {what} {detail}")
    if not ok:
        failures.append(what)


# Ours -> PyTorch, exactly the recipe of docs/format.md.
path = f"{directory}/ours.safetensors"
tensors = load_file(path)
with safe_open(path, framework="pt") as f:
    metadata = f.metadata()
dense = load_file(f"{directory}/ours-dense.safetensors")
for name in sorted(dense):
    size = tuple(int(n) for n in metadata[f"{name}.shape"].split(","))
    weight = torch.sparse_bsr_tensor(
        tensors[f"{name}.crow_indices"],
        tensors[f"{name}.col_indices"],
        tensors[f"{name}.values"],
        size=size,
    )
    got = weight.to_dense().float()
    report(f"torch reads {name} ({tensors[f'{name}.values'].dtype}, blocks {tuple(weight.values().shape[1:])})",
           torch.equal(got, dense[name]))

# Ours -> SciPy.
try:
    import numpy as np
    import scipy.sparse
except ImportError as error:
    print(f"skip SciPy checks: {error}")
    scipy = None
if scipy is not None:
    for name in sorted(dense):
        values = tensors[f"{name}.values"].float().numpy()  # numpy has no bfloat16: the doc's advice
        size = tuple(int(n) for n in metadata[f"{name}.shape"].split(","))
        weight = scipy.sparse.bsr_matrix(
            (values, tensors[f"{name}.col_indices"].numpy(), tensors[f"{name}.crow_indices"].numpy()), shape=size)
        report(f"scipy reads {name}", np.array_equal(weight.toarray(), dense[name].numpy()))
    for file, name in (("ours-fc.npz", "fc.weight"), ("ours-proj.npz", "proj.weight")):
        matrix = scipy.sparse.load_npz(f"{directory}/{file}")
        report(f"scipy.sparse.load_npz {file}", matrix.format == "bsr" and np.array_equal(matrix.toarray(), dense[name].numpy()))

# PyTorch -> ours, the doc's "Writing it from Python" recipe, int32 and int64 indices.
generator = torch.Generator().manual_seed(0)
theirs, theirs_dense, meta = {}, {}, {}
for name, (rows, cols), block, dtype, index_dtype in (
    ("a.weight", (128, 96), (32, 32), torch.float32, torch.int32),
    ("b.weight", (64, 64), (16, 32), torch.bfloat16, torch.int64),
    ("c.weight", (32, 48), (16, 16), torch.float16, torch.int32),
):
    dense_weight = torch.randn(rows, cols, generator=generator).to(dtype)
    mask = torch.rand(rows // block[0], cols // block[1], generator=generator) < 0.5
    dense_weight *= mask.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1).to(dtype)
    w = dense_weight.to_sparse_bsr(block)
    theirs[f"{name}.crow_indices"] = w.crow_indices().to(index_dtype)
    theirs[f"{name}.col_indices"] = w.col_indices().to(index_dtype)
    theirs[f"{name}.values"] = w.values().contiguous()
    meta.update({f"{name}.shape": f"{w.shape[0]},{w.shape[1]}", f"{name}.layout": "bsr", f"{name}.layout_version": "1"})
    theirs_dense[name] = dense_weight.float()
save_file(theirs, f"{directory}/theirs.safetensors", metadata=meta)
save_file(theirs_dense, f"{directory}/theirs-dense.safetensors")
if scipy is not None:
    scipy.sparse.save_npz(f"{directory}/theirs-a.npz", scipy.sparse.bsr_matrix(theirs_dense["a.weight"].numpy(), blocksize=(32, 32)))
    scipy.sparse.save_npz(f"{directory}/theirs-c.npz", scipy.sparse.bsr_matrix(theirs_dense["c.weight"].numpy().astype(np.float64), blocksize=(16, 16)), compressed=False)
print(f"torch {torch.__version__}" + ("" if scipy is None else f", scipy {scipy.__version__}"))
sys.exit(1 if failures else 0)
