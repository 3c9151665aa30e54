"""CrossGMMI's relation-aware GAT layer alone, forward + backward, on a random graph of a dataset's size, in
interleaved rounds in one process; and the outputs' largest difference from the literal equations:

* ``sparse`` (the default): the weighted messages summed as one CSR product per attention head (SDDMM for the
  weights' gradient), the relation term W_r e_r per (head, relation), the edge set sorted once;
* ``grouped``: the [E, H, d_head] weighted messages scattered edge by edge, the relation term per (head, relation);
* ``edgewise``: the literal equations, one [E, H, d_head] copy of W_r e_r per edge too;

and the edge set of one training step after edge dropout (``--edge_drop``, CrossGMMI's ``aug_edge_drop``):
``sort`` (the dropped list sorted again, what CrossGMMI did per step before 2026-12-06) against ``subset``
(:meth:`SortedEdges.subset` of the graph sorted once: masks and gathers, no sort).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gat_layer.py     # ml-1m-kg's sizes (the defaults)

Writes ``benchmarks/results/gat_layer_<device>.{json,md}`` (``--out_dir``).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    import torch

    from recbole_mkg.atomic_io import atomic_write_json, atomic_write_text
    from recbole_mkg.model.edge_aggregation import SortedEdges
    from recbole_mkg.model.graph_encoder import RelationalGATLayer, drop_edges

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=15041, help="users + entities (ml-1m-kg: 15,041)")
    parser.add_argument("--edges", type=int, default=1528850, help="CKG edges (ml-1m-kg: 1,528,850)")
    parser.add_argument("--relations", type=int, default=24, help="relation ids, inverses included (ml-1m-kg: 24)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--edge_drop", type=float, default=0.1, help="edge dropout of the edge-set timing")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out_dir", default=os.path.join("benchmarks", "results"))
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    device = torch.device(args.device)
    layer = RelationalGATLayer(args.dim, n_heads=args.heads).to(device)
    edges = (torch.randint(0, args.nodes, (args.edges,), device=device),
             torch.randint(0, args.nodes, (args.edges,), device=device),
             torch.randint(0, args.relations, (args.edges,), device=device))
    x = torch.randn(args.nodes, args.dim, device=device, requires_grad=True)
    rel = torch.randn(args.relations, args.dim, device=device, requires_grad=True)
    variants = {"sparse": dict(message_sum="sparse", group_relations=True),
                "grouped": dict(message_sum="edgewise", group_relations=True),
                "edgewise": dict(message_sum="edgewise", group_relations=False)}
    with torch.no_grad():
        outputs = {name: layer(x, rel, edges, **options) for name, options in variants.items()}
    difference = {name: (outputs[name] - outputs["edgewise"]).abs().max().item() for name in variants}
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, options in variants.items():
            start = time.perf_counter()
            layer(x, rel, edges, **options).square().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}

    sorted_once = SortedEdges(edges, args.nodes)
    edge_sets = {"sort": lambda g: SortedEdges(drop_edges(edges, args.edge_drop, g), args.nodes),
                 "subset": lambda g: drop_edges(sorted_once, args.edge_drop, g)}
    reference = edge_sets["sort"](torch.Generator(device).manual_seed(1))
    subset = edge_sets["subset"](torch.Generator(device).manual_seed(1))
    same = [torch.equal(getattr(subset, k), getattr(reference, k)) for k in ("head", "tail", "crow", "t_crow")]
    set_times = {name: [] for name in edge_sets}
    for i in range(args.rounds):
        for name, make in edge_sets.items():
            generator = torch.Generator(device).manual_seed(i)
            start = time.perf_counter()
            make(generator)
            if device.type == "cuda":
                torch.cuda.synchronize()
            set_times[name].append(time.perf_counter() - start)
    set_median = {name: sorted(t)[len(t) // 2] for name, t in set_times.items()}
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "device": args.device, "torch_threads": torch.get_num_threads(),
              "shapes": vars(args), "seconds": times, "median_s": median, "max_abs_difference": difference,
              "edge_set_seconds": set_times, "edge_set_median_s": set_median, "edge_sets_equal": all(same)}
    os.makedirs(args.out_dir, exist_ok=True)
    name = f"gat_layer_{args.device}"
    atomic_write_json(os.path.join(args.out_dir, f"{name}.json"), record)
    lines = [f"# One relation-aware GAT layer, forward + backward ({record['date']}, {args.device}, "
             f"{record['torch_threads']} torch threads)", "",
             f"{args.nodes:,} nodes, {args.edges:,} edges, {args.relations} relation ids, d {args.dim}, "
             f"{args.heads} heads; {args.rounds} interleaved rounds.", "",
             "| message sum | s per fwd+bwd (median) | all rounds | largest difference from edgewise |", "|---|---|---|---|"]
    lines += [f"| {n} | {median[n]:.3f} | {', '.join(f'{t:.3f}' for t in times[n])} | {difference[n]:.1e} |"
              for n in variants]
    lines += ["", f"The edge set of one training step, edge dropout {args.edge_drop} (the same edges kept by both: "
              f"{all(same)}):", "", "| edge set | s (median) | all rounds |", "|---|---|---|"]
    lines += [f"| {n} | {set_median[n]:.3f} | {', '.join(f'{t:.3f}' for t in set_times[n])} |" for n in edge_sets]
    atomic_write_text(os.path.join(args.out_dir, f"{name}.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return record


if __name__ == "__main__":
    main()
