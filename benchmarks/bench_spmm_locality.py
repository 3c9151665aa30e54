"""Why the full-graph step grows faster than the edges on large random graphs: the sparse product's gathers.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_spmm_locality.py [--sizes=4e6,4e7]

Times ``A @ X`` (CSR, the propagation's core product; X [n, 64] float32) for graphs of E edges on n = E / 33
nodes (the scaling benchmark's ratio), in two column orders of the same row structure: *random* (the
generated graphs of ``bench_scaling.py``: each edge's tail uniform over all nodes) and *local* (each tail
within +-500 of its head: an upper bound of what a locality-improving node order could give). Reports
seconds and nanoseconds per nonzero; a per-nonzero cost that grows with E is the gathers of X's rows
missing the caches. Writes ``benchmarks/results/spmm_locality_<device>.{json,md}``.
"""
import argparse
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from recbole_mkg.atomic_io import atomic_open, atomic_write_json  # noqa: E402


def time_product(crow, col, n, x, repeats):
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sparse CSR is beta
        matrix = torch.sparse_csr_tensor(crow, col, torch.rand(col.numel()), (n, n))
    matrix @ x  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matrix @ x
        best = min(best, time.perf_counter() - start)
    return best


def main(argv=None):
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4e6,4e7", help="edges per graph")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out_dir", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    rows_out = []
    for e in (int(float(s)) for s in args.sizes.split(",")):
        n = max(2, e // 33)
        rng = np.random.default_rng(0)
        heads = np.sort(rng.integers(0, n, e))
        crow = torch.zeros(n + 1, dtype=torch.long)
        crow[1:] = torch.cumsum(torch.bincount(torch.from_numpy(heads), minlength=n), 0)
        x = torch.randn(n, args.dim)
        orders = {"random": rng.integers(0, n, e), "local": np.clip(heads + rng.integers(-500, 501, e), 0, n - 1)}
        for order, tails in orders.items():
            seconds = time_product(crow, torch.from_numpy(tails), n, x, args.repeats)
            rows_out.append({"edges": e, "nodes": n, "order": order, "seconds": seconds, "ns_per_nnz": seconds / e * 1e9})
            print(f"E={e:,} n={n:,} {order}: {seconds:.3f} s, {seconds / e * 1e9:.1f} ns per nonzero", flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = {"when": stamp, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "dim": args.dim, "rows": rows_out}
    base = os.path.join(args.out_dir, "spmm_locality_cpu")
    atomic_write_json(base + ".json", report)
    with atomic_open(base + ".md") as f:
        f.write(f"# CSR A @ X gathers: random vs local column order ({stamp}, {report['torch_threads']} thread(s), "
                f"X [n, {args.dim}])\n\n| edges | nodes | column order | seconds (best of {args.repeats}) | ns per nonzero |\n"
                "|---|---|---|---|---|\n")
        for r in rows_out:
            f.write(f"| {r['edges']:,} | {r['nodes']:,} | {r['order']} | {r['seconds']:.3f} | {r['ns_per_nnz']:.1f} |\n")


if __name__ == "__main__":
    main()
