"""A results folder's tables and charts, written from the run records it holds (``runs/*.json``).

``results.md`` and ``results.csv``: mean +- std over seeds of the test metrics, train seconds per epoch,
evaluation seconds, peak RSS (and peak GPU memory on a GPU), #parameters, epochs to best, the epoch cap of
each model (and the device of each row when the folder was filled on several); the tuning budget under the
table when there was one; ``chart.png``: the headline metric with its std; ``curves.png``: every model's
validation metric after each evaluation.
"""
import json
import math
import os

from recbole_mkg.atomic_io import atomic_open, atomic_write_text
from recbole_mkg.tune import describe_scheduler
from recbole_mkg.utils import model_of

HEADLINE_METRICS = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "hit") for k in (10, 20)]


def budget_lines(results_dir, models):
    path = os.path.join(results_dir, "tuning_budget.json")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        budget = json.load(f)
    cap, trials = budget.get("epochs_cap_per_trial"), budget.get("trials_per_model")
    scheduler_equal = budget.get("scheduler_equal", True)
    equal = "equal for every model" if cap is not None and trials is not None and scheduler_equal else "NOT EQUAL"
    scheduler = budget.get("scheduler")
    if isinstance(scheduler, str):  # folders written before the per-sweep record: the sitting's flag
        scheduler = f"{scheduler.upper()} (settings not recorded)"
    else:
        scheduler = describe_scheduler(scheduler) if scheduler_equal else "UNEQUAL schedulers"
    lines = ["", f"Tuning budget ({equal}): {trials if trials is not None else 'UNEQUAL'} trials x "
                 f"{cap if cap is not None else 'UNEQUAL'} epochs per trial, scheduler {scheduler}, "
                 f"selection on the {budget['selection']}; each entry runs its base model's best config.", "",
             "| model | trials run | epoch cap | sampler | scheduler | best valid | best params | search space |",
             "|---|---|---|---|---|---|---|---|"]
    for base, b in budget["models"].items():
        if not any(model_of(m) == base for m in models):
            continue
        valid = b.get("best_valid")
        valid = f"{valid:.4f}" if isinstance(valid, (int, float)) else "-"
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted((b.get("best_params") or {}).items()))
        sampler = b.get("sampler") or "random (not recorded)"
        lines.append(f"| {base} | {b.get('trials_run')} | {b['epochs_cap']} | {sampler} | "
                     f"{describe_scheduler(b.get('scheduler'))} | {valid} | {params} | {os.path.basename(b['space'])} |")
    return lines


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _mean_std(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _device_label(record):
    """``cpu (x86_64, 2 logical CPUs)``, ``cuda (NVIDIA H200)``; runs recorded before the name: ``cuda``; a
    run resumed on another device than it started on: its sittings' devices joined with `` + ``."""
    def label(entry):
        name = entry.get("device_name")
        return str(entry.get("device")) + (f" ({name})" if name else "")

    labels = list(dict.fromkeys(label(s) for s in record.get("sittings") or []))
    return " + ".join(labels) if len(labels) > 1 else label(record)


def load_records(results_dir, models=None, seeds=None):
    """``(records, failures, models)`` of ``<results_dir>/runs/*.json``: finished runs, failed runs
    (``*.failed.json``), and the models (those given, else every model found, sorted), restricted to
    ``models`` and ``seeds`` when given."""
    runs_dir = os.path.join(results_dir, "runs")
    records, failures = [], []
    for name in sorted(os.listdir(runs_dir)):
        if name.startswith(".") or not name.endswith(".json"):
            continue
        with open(os.path.join(runs_dir, name), encoding="utf-8") as f:
            record = json.load(f)
        (failures if name.endswith(".failed.json") else records).append(record)
    if seeds is not None:
        records = [r for r in records if r["seed"] in seeds]
        failures = [r for r in failures if r["seed"] in seeds]
    if models is None:
        models = sorted({r["model"] for r in records} | {r["model"] for r in failures})
    records = [r for r in records if r["model"] in models]
    failures = [r for r in failures if r["model"] in models]
    return records, failures, list(models)


def summarise(results_dir, models=None, seeds=None, epoch_caps=None, log=print):
    """Read ``runs/*.json`` and write ``results.md``, ``results.csv``, ``chart.png`` (test headline metric)
    and ``curves.png`` (validation curves)."""
    records, failures, models = load_records(results_dir, models, seeds)
    headline = records[0]["valid_metric"] if records else "ndcg@20"
    metrics = [m for m in HEADLINE_METRICS if any(m in r["test_result"] for r in records)] or HEADLINE_METRICS
    extras = [("train s/epoch", "train_s_per_epoch", 2), ("eval s", "test_eval_s", 2),
              ("peak RSS MB", "peak_rss_mb", 0), ("peak GPU MB", "peak_gpu_mb", 0),
              ("#params", "n_params", 0), ("epochs to best", "epochs_to_best", 1)]
    rows = []
    for model in models:
        mine = [r for r in records if r["model"] == model]
        row = {"model": model, "seeds": ",".join(str(r["seed"]) for r in mine), "n": len(mine),
               "failed": len([r for r in failures if r["model"] == model]),
               "epochs cap": (mine[0]["epochs_cap"] if mine else (epoch_caps or {}).get(model))}
        for m in metrics:
            row[m], row[m + " std"] = _mean_std([r["test_result"].get(m) for r in mine])
        for label, key, _ in extras:
            row[label], row[label + " std"] = _mean_std([r.get(key) for r in mine])
        rows.append(row)

    # CSV: means and stds in their own columns
    import csv

    columns = ["model", "n", "seeds", "failed", "epochs cap"] + [c for m in metrics for c in (m, m + " std")]
    columns += [c for label, _, _ in extras for c in (label, label + " std")]
    csv_path = os.path.join(results_dir, "results.csv")
    with atomic_open(csv_path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})

    # Markdown: mean +- std
    def cell(mean, std, digits=4):
        if mean is None:
            return "-"
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"

    # a folder filled on several machines (e.g. a GPU sitting, then CPU runs): which rows' timings are whose
    devices = {model: sorted({_device_label(r) for r in records if r["model"] == model}) for model in models}
    # (runs recorded before device names existed count as their type's: "cpu" beside "cpu (<name>)" is one)
    several = (len({str(r.get("device")) for r in records}) > 1
               or len({r["device_name"] for r in records if r.get("device_name")}) > 1
               or any(" + " in _device_label(r) for r in records))
    head = ["model", "seeds", "epochs cap"] + (["device"] if several else []) + metrics
    head += [label for label, _, _ in extras]
    lines = [f"Test metrics, mean ± std over seeds (headline: {headline}); one saved split for every model.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = max((r[headline] for r in rows if r.get(headline) is not None), default=None)
    for row in rows:
        cells = [row["model"], f"{row['n']}" + (f" (+{row['failed']} failed)" if row["failed"] else ""),
                 "-" if row["epochs cap"] is None else str(row["epochs cap"])]
        if several:
            cells.append(", ".join(devices[row["model"]]) or "-")
        for m in metrics:
            text = cell(row[m], row[m + " std"])
            cells.append(f"**{text}**" if m == headline and row[m] is not None and row[m] == best else text)
        for label, _, digits in extras:
            cells.append(cell(row[label], row[label + " std"], digits))
        lines.append("| " + " | ".join(cells) + " |")
    splits = {json.dumps(r.get("split_sizes"), sort_keys=True) for r in records}
    if len(splits) > 1:
        lines += ["", f"WARNING: runs saw different splits: {sorted(splits)}"]
    elif records:
        lines += ["", f"Split (train/valid/test interactions): {records[0].get('split_sizes')}; "
                      f"device: {', '.join(sorted({_device_label(r) for r in records}))}."]
        if several:
            lines += ["", "The runs come from more than one device (column `device`): compare the timing and "
                          "memory columns only between rows of the same device."]
    lines += budget_lines(results_dir, models)
    lines += in_progress_lines(results_dir, models, seeds)
    if failures:
        lines += ["", "Failed runs (retried on the next invocation):", ""]
        lines += [f"- {r['model']} seed {r['seed']}: {r.get('error', '')}" for r in failures]
    md_path = os.path.join(results_dir, "results.md")
    atomic_write_text(md_path, "\n".join(lines) + "\n")

    chart = _chart(results_dir, rows, headline)
    curves = _curves_chart(results_dir, models, records, headline)
    log("\n".join(lines))
    log(f"[compare] wrote {md_path}, {csv_path}" + "".join(f", {p}" for p in (chart, curves) if p))
    return {"rows": rows, "records": records, "failures": failures, "markdown": md_path, "csv": csv_path,
            "chart": chart, "curves": curves}


def in_progress_lines(results_dir, models, seeds=None):
    """Markdown lines listing the runs that have a progress file (killed or still running): epochs done
    of the cap, best validation score so far."""
    folder = os.path.join(results_dir, "progress")
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not name.endswith(".json") or name.startswith("."):
            continue
        model, _, seed = name[:-len(".json")].rpartition("__seed")
        if model not in models or (seeds is not None and seed.isdigit() and int(seed) not in seeds):
            continue
        if os.path.isfile(os.path.join(results_dir, "runs", name)):  # finished elsewhere (e.g. a GPU sitting)
            continue
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            state = json.load(f)
        found.append(f"- {model} seed {seed}: {state['epochs_done']} of {state['epochs_cap']} epochs, best valid "
                     f"{state['valid_metric']} so far {state['best_valid_score']:.4f} ({state['saved_at']})")
    if not found:
        return []
    return ["", "Runs in progress (not in the table; the same command goes on from their last epoch):", ""] + found


def _chart(results_dir, rows, headline):
    done = [r for r in rows if r.get(headline) is not None]
    if not done:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(done) + 1.5), 3.4))
    ax.bar([r["model"] for r in done], [r[headline] for r in done],
           yerr=[r[headline + " std"] or 0.0 for r in done], capsize=4, color="#4c72b0")
    ax.set_ylabel(f"test {headline}")
    ax.set_title(f"test {headline}, mean ± std over seeds")
    ax.tick_params(axis="x", rotation=30)
    return _save_figure(fig, os.path.join(results_dir, "chart.png"))


def _save_figure(fig, path):
    """Write ``fig`` to ``path`` (PNG) atomically, close it, return ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_open(path, "wb", suffix=".png") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def validation_curves(models, records):
    """model -> ``(evaluation index [n], mean [n], min [n], max [n], number of runs)`` of the runs'
    ``valid_curve`` over seeds (a run stopped early counts for the evaluations it reached)."""
    import numpy as np

    out = {}
    for model in models:
        runs = [r["valid_curve"] for r in records if r["model"] == model and r.get("valid_curve")]
        if not runs:
            continue
        padded = np.full((len(runs), max(len(c) for c in runs)), np.nan)
        for i, curve in enumerate(runs):
            padded[i, :len(curve)] = curve
        out[model] = (np.arange(1, padded.shape[1] + 1), np.nanmean(padded, axis=0), np.nanmin(padded, axis=0),
                      np.nanmax(padded, axis=0), len(runs))
    return out


def _curves_chart(results_dir, models, records, headline):
    """``curves.png``: each model's validation metric after every evaluation (mean over seeds; the band
    spans the seeds' min..max): shows whether an epoch cap stopped a model that was still learning."""
    curves = validation_curves(models, records)
    if not curves:
        return None
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for model, (x, mean, low, high, n) in curves.items():
        line, = ax.plot(x, mean, "o-", ms=3, label=f"{model} ({n} seed{'s' if n > 1 else ''})")
        if n > 1:
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("evaluation (epoch x eval_step)")
    ax.set_ylabel(f"valid {headline}")
    ax.set_title(f"validation {headline} (mean over seeds; band: min..max)", fontsize=9)
    ax.legend(fontsize=7)
    return _save_figure(fig, os.path.join(results_dir, "curves.png"))

