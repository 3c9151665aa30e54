"""How large each kind of node's row is where Multi-KG4Rec's propagation starts: at initialisation and trained.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/row_scale.py --checkpoint=<a Multi-KG4Rec checkpoint> \\
        [--out_dir=benchmarks/results] [--key=value ...]

The checkpoint is restored with its dataset and split (``load_data_and_model``; ``--key=value`` overrides its
config, e.g. ``--data_path=`` when the data moved). For every modal view, the root mean square of the rows
that enter the propagation (Eq. 9): users' (ID embeddings), items' before fusion (ID + projected features),
items' after fusion (the transformer output of Eq. 7 with ``fusion_output: replace``), the other entities',
and the transformer's outputs alone. The same for a freshly initialised model of the same config and seed.
The paper's fusion replaces item rows by post-LayerNorm outputs (elements of about unit scale) among
xavier-initialised embeddings, so a large ratio of "items after fusion" to the other rows says that items
and their neighbours enter the Bi-Interaction on different scales. Writes
``row_scale_<model>_<dataset>_<fusion_output>.{json,md}`` to ``--out_dir``. A diagnostic, not a test.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from benchmarks.cli import config_overrides  # noqa: E402
from recbole_mkg.atomic_io import atomic_write_report  # noqa: E402

GROUPS = ("users", "items before fusion", "items after fusion", "transformer output", "other entities")


def row_scales(model):
    """view -> {group: RMS of its rows} of a Multi-KG4Rec model (eval mode, no gradient)."""
    import torch

    model.eval()
    with torch.no_grad():
        inputs = model.view_inputs()
        fused = model.fuse(inputs)
        outputs = None
        if model.transformer is not None:  # the transformer's outputs alone (what "add"/"gated" add)
            members = {m: inputs[m][model.item_sequences] for m in model.modalities}
            outputs = model.fusion_transformer(members, model.item_padding, first_only=True)
    users, items = slice(0, model.n_users), slice(model.n_users, model.n_users + model.n_items)
    others = slice(model.n_users + model.n_items, None)

    def rms(t):
        return round(float(t.pow(2).mean().sqrt()), 4) if t.numel() else None

    return {m: {"users": rms(inputs[m][users]), "items before fusion": rms(inputs[m][items]),
                "items after fusion": rms(fused[m][items]),
                "transformer output": rms(outputs[m]) if outputs is not None else None,
                "other entities": rms(inputs[m][others])}
            for m in inputs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out_dir", default=os.path.join(HERE, "results"))
    args, unknown = parser.parse_known_args(argv)
    from recbole.utils import init_seed

    from recbole_mkg.quick_start import load_data_and_model
    from recbole_mkg.utils import get_model

    sys.argv = sys.argv[:1]  # RecBole's Config would read this script's flags too
    overrides = {"show_progress": False, "state": "ERROR", **config_overrides(unknown)}
    config, trained, _, train, _, _ = load_data_and_model(args.checkpoint, config_dict=overrides)
    if not hasattr(trained, "view_inputs"):
        raise SystemExit(f"{args.checkpoint}: a {config['model']} checkpoint; row_scale reads Multi-KG4Rec's views")
    init_seed(config["seed"], config["reproducibility"])
    fresh = get_model(config["model"])(config, train._dataset).to(config["device"])
    report = {"checkpoint": os.path.abspath(args.checkpoint), "model": config["model"], "dataset": config["dataset"],
              "fusion_output": trained.fusion_output, "date": time.strftime("%Y-%m-%d %H:%M"),
              "initialised": row_scales(fresh), "trained": row_scales(trained),
              "fusion_gate": {m: round(float(g), 4) for m, g in getattr(trained, "fusion_gate", {}).items()}}
    lines = [f"# Row scales entering the propagation: {config['model']} on {config['dataset']} ({report['date']})", "",
             f"Checkpoint `{args.checkpoint}` (fusion_output: {trained.fusion_output}); root mean square of the "
             "rows of each group, per view; `initialised` = a fresh model of the same config and seed.", "",
             "| state | view | " + " | ".join(GROUPS) + " |", "|---|---|" + "---|" * len(GROUPS)]
    for state in ("initialised", "trained"):
        for view, scales in report[state].items():
            lines.append(f"| {state} | {view} | " + " | ".join(
                "-" if scales[g] is None else f"{scales[g]:.4f}" for g in GROUPS) + " |")
    if report["fusion_gate"]:
        lines += ["", "Learned gates (`fusion_output: gated`): " + ", ".join(f"{m} {g}" for m, g in report["fusion_gate"].items())]
    base = os.path.join(args.out_dir, f"row_scale_{config['model']}_{config['dataset']}_{trained.fusion_output}")
    atomic_write_report(base, report, lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
