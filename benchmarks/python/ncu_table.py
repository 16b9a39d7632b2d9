"""Kernels of a run under Nsight Compute, from `ncu --csv --metrics gpu__time_duration.sum ...`'s output: the last
launches in order, then each kernel name and grid with its launch count and mean time. Microseconds.

    python3 ncu_table.py LOG [LAST]
"""
import collections
import csv
import sys

METRIC = "gpu__time_duration.sum"
UNIT_US = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}


def launches(path):
    with open(path) as f:
        lines = [line for line in f if line.startswith('"')]
    rows = []
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != METRIC:
            continue
        scale = UNIT_US.get(r.get("Metric Unit", ""), 1.0)
        rows.append((r["Kernel Name"][:110], r.get("Grid Size", ""), float(r["Metric Value"].replace(",", "")) * scale))
    return rows


def main():
    rows = launches(sys.argv[1])
    last = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    print(f"{len(rows)} launches; the last {min(last, len(rows))}:")
    for name, grid, us in rows[-last:]:
        print(f"  {us:8.2f} us  grid {grid:>14}  {name}")
    totals = collections.defaultdict(lambda: [0, 0.0])
    for name, grid, us in rows:
        totals[(name, grid)][0] += 1
        totals[(name, grid)][1] += us
    print("by kernel and grid: launches, mean us")
    for (name, grid), (count, total) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
        print(f"  {count:5d} {total / count:8.2f}  grid {grid:>14}  {name}")


if __name__ == "__main__":
    main()
