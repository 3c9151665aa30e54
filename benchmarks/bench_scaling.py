"""Scaling of the full-graph propagation (KGAT port and Multi-KG4Rec's two views) on generated graphs.

    nice -n 10 .venv/bin/python benchmarks/bench_scaling.py [--sizes=1e4,1e5,1e6,1e7] [--steps=3]
        [--time_cap=240] [--memory_cap_gb=8]

For each size (number of KG triples; the graph grows by 10x steps) a generated collaborative KG with as
many user-item interactions as triples (users = E/50, items = E/100, entities = E/10, 20 relations) is
built in its own child process, which times:

* building the graph structures (``CollaborativeKG``) and the BFS neighbour sequences (once per model);
* ``--steps`` training steps of the propagation core (L=3 Bi-Interaction layers of 64/32/16 over the whole
  CKG + a BPR batch of 2048 + backward + Adam), with 1 view (KGAT) and 2 views (Multi-KG4Rec's text and
  visual graphs; the transformer is per item, independent of the KG size, and left out);
* one attention update (pi(h,r,t) of every edge).

The parent watches each child: past ``--time_cap`` seconds or ``--memory_cap_gb`` of RSS it is stopped and
the size is recorded as capped. It fits time ~ a * edges^b on the finished sizes and writes
``benchmarks/results/scaling_<device>.{json,md,png}``.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from recbole_mkg.atomic_io import atomic_open, atomic_write_report  # noqa: E402


class _FakeDataset:
    """What ``CollaborativeKG`` and the BFS read from a RecBole ``KnowledgeBasedDataset``."""

    def __init__(self, n_users, n_items, n_entities, n_relations, n_inter, n_kg, seed=0):
        import numpy as np

        rng = np.random.default_rng(seed)
        self.n_users, self.n_entities, self.n_relations = n_users, n_entities, n_relations
        users = rng.integers(0, n_users, n_inter)
        items = (rng.zipf(1.3, n_inter) - 1) % n_items  # popularity skew
        head = rng.integers(0, n_entities, n_kg)
        head[: n_kg // 2] = rng.integers(0, n_items, n_kg // 2)  # half the triples start at an item
        tail = rng.integers(0, n_entities, n_kg)
        rel = rng.integers(1, n_relations, n_kg)
        n = n_users + n_entities
        # relation ids as RecBole numbers them: KG relations and their inverses, [UI-Relation] the last
        self.relation_num = 2 * n_relations + 1
        self.row = np.concatenate([users, n_users + items, n_users + head, n_users + tail])
        self.col = np.concatenate([n_users + items, users, n_users + tail, n_users + head])
        self.rel = np.concatenate([np.full(2 * n_inter, self.relation_num - 1, dtype=np.int64), rel, rel + n_relations])
        self.shape = (n, n)

    def ckg_graph(self, form="coo", value_field=None):
        import numpy as np
        import scipy.sparse as sp

        data = self.rel if value_field else np.ones(len(self.row), dtype=np.float32)
        return sp.coo_matrix((data, (self.row, self.col)), shape=self.shape)


def child(size, steps, views, device, sample_sizes=None, profile_to=None):
    """Run one size; print a JSON line of timings. ``sample_sizes``: mini-batched propagation over the
    batch's sampled receptive field (``neighbour_sample_sizes``) instead of the full graph. ``profile_to``:
    also write a torch.profiler table of one more step to that file."""
    import numpy as np
    import torch

    from recbole_mkg.model.layers import CollaborativeKG, KnowledgePropagation, knowledge_aware_attention
    from recbole_mkg.model.neighbour_sampling import sample_hops
    from recbole_mkg.model.neighbour_sequences import bfs_sequences

    torch.manual_seed(0)
    n_kg = int(size)
    n_inter = n_kg
    n_users, n_items, n_entities = max(50, n_kg // 50), max(100, n_kg // 100), max(200, n_kg // 10)
    out = {"kg_triples": n_kg, "interactions": n_inter, "users": n_users, "items": n_items, "entities": n_entities}
    t = time.perf_counter()
    data = _FakeDataset(n_users, n_items, n_entities, 20, n_inter, n_kg)
    out["generate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ckg = CollaborativeKG(data).to(device)
    out["ckg_build_s"] = time.perf_counter() - t
    out["ckg_edges"] = ckg.num_edges
    t = time.perf_counter()
    coo = data.ckg_graph().tocsr()
    adj = ((coo + coo.T) > 0).astype(np.float32).tocsr()
    bfs_sequences(adj, n_users + np.arange(n_items), 16, 2, 0)
    out["bfs_build_s"] = time.perf_counter() - t
    del coo, adj

    d, layers = 64, [64, 32, 16]
    n_nodes = ckg.n_nodes
    embeddings = [torch.nn.Parameter(torch.randn(n_nodes, d, device=device) * 0.1) for _ in range(views)]
    props = [KnowledgePropagation(d, layers, 0.1, "bi").to(device) for _ in range(views)]
    relation = torch.nn.Parameter(torch.randn(data.relation_num, d, device=device) * 0.1)
    trans_w = torch.nn.Parameter(torch.randn(data.relation_num, d, d, device=device) * 0.1)
    params = embeddings + [p for m in props for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    adjacency = ckg.adjacency(ckg.init_weight)

    def step():
        optimizer.zero_grad()
        user = torch.randint(0, n_users, (2048,), device=device)
        pos = n_users + torch.randint(0, n_items, (2048,), device=device)
        neg = n_users + torch.randint(0, n_items, (2048,), device=device)
        if sample_sizes:
            targets, inverse = torch.unique(torch.cat([user, pos, neg]), return_inverse=True)
            hops = sample_hops(adjacency, targets, sample_sizes)
            blocks = hops.blocks(adjacency.csr.values())
            outs = torch.cat([p(blocks, e[hops.nodes]) for p, e in zip(props, embeddings)], dim=1)
            u, i, j = outs[inverse].split(len(user))
        else:
            outs = torch.cat([p(adjacency, e) for p, e in zip(props, embeddings)], dim=1)
            u, i, j = outs[user], outs[pos], outs[neg]
        loss = -torch.nn.functional.logsigmoid((u * i).sum(1) - (u * j).sum(1)).mean()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    out["step_s"] = sorted(times)[len(times) // 2]
    if profile_to:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        with atomic_open(profile_to) as f:
            f.write(f"# one training step, {n_kg:,} KG triples, {views} view(s), {device}, "
                    f"{torch.get_num_threads()} thread(s)\n")
            f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15) + "\n")
    t = time.perf_counter()
    with torch.no_grad():
        knowledge_aware_attention(ckg, embeddings[0].detach(), relation.detach(), trans_w.detach())
    out["attention_s"] = time.perf_counter() - t
    
    from recbole_mkg.utils import peak_rss_mb  # VmHWM: not inherited from the parent

    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(out), flush=True)


def run_capped(cmd, time_cap, memory_cap_gb, env=None):
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    start, peak, reason = time.time(), 0.0, None
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss / 2**30
        except psutil.NoSuchProcess:
            break
        peak = max(peak, rss)
        if rss > memory_cap_gb:
            reason = f"memory cap {memory_cap_gb} GB"
        elif time.time() - start > time_cap:
            reason = f"time cap {time_cap} s"
        if reason:
            proc.kill()
            break
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if lines and reason is None:
        return json.loads(lines[-1][7:]), None
    return None, reason or f"failed: {stderr.strip().splitlines()[-1] if stderr.strip() else proc.returncode}"


def fit_exponent(xs, ys):
    """Least-squares slope of log y on log x (y ~ a x^b): returns b."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e4,1e5,1e6,1e7", help="KG triples per size (10x steps)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--time_cap", type=float, default=240, help="seconds per size and view count")
    parser.add_argument("--memory_cap_gb", type=float, default=8)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--views", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--profile_to", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--sample_sizes", default=None,
                        help="e.g. 10,10,10: time mini-batched propagation with neighbour sampling "
                             "(neighbour_sample_sizes) instead of the full graph; results go to scaling_sampled_<device>")
    parser.add_argument("--view_counts", default="1,2", help="1 (KGAT), 2 (Multi-KG4Rec) or both")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one step per size: <out_dir>/scaling_profile_<size>_<views>v[_malloc_keep].txt")
    parser.add_argument("--malloc_keep", action="store_true",
                        help="run the children with glibc's MALLOC_MMAP_MAX_=0 and a 64 GB MALLOC_TRIM_THRESHOLD_: "
                             "freed blocks stay in the heap for reuse instead of going back to the OS (blocks "
                             "over 32 MB are otherwise mmap'ed and page-faulted anew at every allocation); "
                             "results go to scaling_<device>_malloc_keep")
    parser.add_argument("--out_dir", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    if args.child:
        sizes = [int(k) for k in args.sample_sizes.split(",")] if args.sample_sizes else None
        child(float(args.child), args.steps, args.views, args.device, sizes, args.profile_to)
        return 0
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    view_counts = {int(v) for v in args.view_counts.split(",")}
    env = dict(os.environ)
    if args.malloc_keep:
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(64 << 30))
    rows = []
    for size in sizes:
        for views, label in ((1, "KGAT (1 view)"), (2, "Multi-KG4Rec (2 views)")):
            if views not in view_counts:
                continue
            cmd = [sys.executable, os.path.abspath(__file__), f"--child={size}", f"--views={views}",
                   f"--steps={args.steps}", f"--device={args.device}"]
            if args.sample_sizes:
                cmd.append(f"--sample_sizes={args.sample_sizes}")
            if args.profile:
                os.makedirs(args.out_dir, exist_ok=True)
                name = f"scaling_profile_{size:.0e}_{views}v{'_malloc_keep' if args.malloc_keep else ''}.txt"
                cmd.append(f"--profile_to={os.path.join(args.out_dir, name)}")
            start = time.time()
            result, capped = run_capped(cmd, args.time_cap, args.memory_cap_gb, env)
            row = {"size": size, "views": views, "model": label, "wall_s": round(time.time() - start, 1),
                   "capped": capped, **(result or {})}
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(args.out_dir, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": args.device, "cpu_count": os.cpu_count(),
              "steps": args.steps, "time_cap_s": args.time_cap, "memory_cap_gb": args.memory_cap_gb,
              "sample_sizes": args.sample_sizes, "malloc_keep": args.malloc_keep, "rows": rows, "exponents": {}}
    mode = (f"mini-batched propagation over each batch's sampled receptive field (neighbour_sample_sizes "
            f"[{args.sample_sizes}])" if args.sample_sizes else "full-graph propagation")
    lines = [f"# Scaling on generated graphs ({report['date']}, {args.device}, {os.cpu_count()} cores)", "",
             f"Time per training step of the propagation core, {mode} (3 Bi-Interaction layers 64/32/16 + BPR "
             "batch 2048 + backward + Adam), median of "
             f"{args.steps}; caps {args.time_cap:.0f} s and {args.memory_cap_gb} GB RSS per size"
             + ("; glibc malloc keeps freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_=64 GB)."
                if args.malloc_keep else "."), "",
             "| KG triples | CKG edges | model | graph build s | BFS build s | step s | attention s | peak RSS MB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row.get("step_s") is None:
            lines.append(f"| {row['size']:,} | - | {row['model']} | - | - | - | - | - | {row['capped']} |")
            continue
        lines.append(f"| {row['kg_triples']:,} | {row['ckg_edges']:,} | {row['model']} | {row['ckg_build_s']:.2f} | "
                     f"{row['bfs_build_s']:.2f} | {row['step_s']:.3f} | {row['attention_s']:.3f} | "
                     f"{row['peak_rss_mb']:.0f} | |")
    lines.append("")
    for views in (1, 2):
        done = [r for r in rows if r["views"] == views and r.get("step_s")]
        big = [r for r in done if r["ckg_edges"] >= 1e5] or done  # fixed overheads dominate tiny graphs
        if len(big) >= 2:
            b = fit_exponent([r["ckg_edges"] for r in big], [r["step_s"] for r in big])
            report["exponents"][views] = b
            lines.append(f"Fitted growth exponent (step time ~ edges^b, sizes with >= 1e5 edges), {views} view(s): "
                         f"b = {b:.2f}")
    base = os.path.join(args.out_dir, f"scaling_{'sampled_' if args.sample_sizes else ''}{args.device}"
                        f"{'_malloc_keep' if args.malloc_keep else ''}")
    atomic_write_report(base, report, lines)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for views, label in ((1, "KGAT (1 view)"), (2, "Multi-KG4Rec (2 views)")):
            done = [r for r in rows if r["views"] == views and r.get("step_s")]
            ax.loglog([r["ckg_edges"] for r in done], [r["step_s"] for r in done], "o-", label=label)
        ax.set_xlabel("CKG edges")
        ax.set_ylabel("s per training step")
        ax.legend()
        fig.tight_layout()
        with atomic_open(base + ".png", "wb") as f:
            fig.savefig(f, format="png", dpi=110)
    except Exception as err:  # the chart is optional
        print(f"no chart: {err}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
