"""A results folder's runs evaluated again from their best-epoch checkpoints, beside their recorded test
metrics: what a fix of the evaluation changes for runs made before it (e.g. the two KGIN fixes of
``recbole_mkg.compat``: ``stale_ranking_caches``, ``kgin_eval_edges``), without training again.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reevaluate.py --results_dir=results/ml-1m-kg-e10-gpu --model=KGIN

Writes ``reevaluated_<models>.json`` and ``.md`` into ``--out_dir`` (default: the results folder). A run
whose checkpoint is not found or unreadable (damaged, or a RecBole-format file) is listed with the reason,
and the others go on. The model selection (which epoch is best) stays the run's.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRICS = ("ndcg@20", "recall@20", "mrr@20", "hit@20")


def reevaluate(results_dir, models=None, seeds=None, log=print):
    """``[{"key", "model", "seed", "checkpoint", "recorded": {...}, "now": {...} or None, "error": str or
    None}]`` per run; a run whose checkpoint is missing or unreadable has ``now`` None and says why."""
    from recbole_mkg.results_report import load_records
    from recbole_mkg.retest import UNREADABLE_CHECKPOINT_ERRORS, evaluate_checkpoint, find_checkpoint

    records, _, _ = load_records(results_dir, models, seeds)
    rows = []
    for record in records:
        key = f"{record['model']}__seed{record['seed']}"
        checkpoint = find_checkpoint(results_dir, record)
        now, error = None, None if checkpoint else "no checkpoint found"
        if checkpoint:
            try:
                now = evaluate_checkpoint(results_dir, checkpoint)[0]
            except UNREADABLE_CHECKPOINT_ERRORS as err:  # this run's file damaged: the other runs go on
                error = str(err)
        rows.append({"key": key, "model": record["model"], "seed": record["seed"], "checkpoint": checkpoint,
                     "device": record.get("device"), "recorded": record["test_result"], "now": now,
                     "error": error})
        shown = error if now is None else \
            ", ".join(f"{m} {record['test_result'][m]:.4f} -> {now[m]:.4f}" for m in METRICS if m in now)
        log(f"[reevaluate] {key}: {shown}")
    return rows


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.4f}" + (f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else "")


def write_report(rows, out_dir, name):
    from recbole_mkg.atomic_io import atomic_write_json, atomic_write_text

    os.makedirs(out_dir, exist_ok=True)
    atomic_write_json(os.path.join(out_dir, f"{name}.json"), rows)
    lines = ["Test metrics recorded by each run, and evaluated again now from its best-epoch checkpoint "
             "(same weights, same split; the evaluation code of this checkout).", "",
             "| run | device | " + " | ".join(f"{m} recorded | {m} now" for m in METRICS) + " |",
             "|---|---|" + "---|---|" * len(METRICS)]
    for row in rows:
        now = row["now"] or {}
        lines.append(f"| {row['key']} | {row['device']} | " + " | ".join(
            f"{row['recorded'].get(m, float('nan')):.4f} | " + (f"{now[m]:.4f}" if m in now else "-") for m in METRICS) + " |")
    failed = [f"* {row['key']}: {row['error']}" for row in rows if row.get("error")]
    if failed:
        lines += ["", "Not evaluated again (\"-\" above):", ""] + failed
    lines += ["", "Mean ± std over seeds:", "", "| model | seeds | " + " | ".join(f"{m} recorded | {m} now" for m in METRICS) + " |",
              "|---|---|" + "---|---|" * len(METRICS)]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        cells = [f"{_mean_std([r['recorded'].get(m) for r in mine])} | "
                 f"{_mean_std([(r['now'] or {}).get(m) for r in mine])}" for m in METRICS]
        lines.append(f"| {model} | {','.join(str(r['seed']) for r in mine)} | " + " | ".join(cells) + " |")
    atomic_write_text(os.path.join(out_dir, f"{name}.md"), "\n".join(lines) + "\n")
    return os.path.join(out_dir, f"{name}.md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results_dir", required=True, help="a results folder of the side-by-side runner")
    parser.add_argument("--model", default=None, help="comma-separated run labels (default: every run)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: every seed)")
    parser.add_argument("--out_dir", default=None, help="where the report goes (default: --results_dir)")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.results_dir, "runs")):
        raise SystemExit(f"--results_dir={args.results_dir!r} has no runs/ folder (a results folder of the runner)")
    models = [m.strip() for m in args.model.split(",") if m.strip()] if args.model else None
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    rows = reevaluate(args.results_dir, models, seeds)
    if not rows:
        raise SystemExit(f"{args.results_dir}: no finished run of {args.model or 'any model'}")
    name = "reevaluated_" + "_".join(dict.fromkeys(r["model"] for r in rows)).replace("@", "-")
    print(f"[reevaluate] wrote {write_report(rows, args.out_dir or args.results_dir, name)}")
    return rows


if __name__ == "__main__":
    main()
