"""Side-by-side comparison of several models on one dataset, one saved split and several seeds.

    python run_recbole_mkg.py --model=BPR,LightGCN,KGAT,MultiKG4Rec --dataset=ml-100k-kg \
        --data_path=../shared/datasets --seeds=2020,2021,2022 --results_dir=results/ml-100k-kg \
        --config_files=recbole_mkg/properties/protocol/paper.yaml --epochs_cap=KGAT:20,MultiKG4Rec:20

What it guarantees:

* **One split.** The interactions are loaded once as a general (non-KG) model sees them on a KG dataset
  (KG-filtered, :class:`recbole_mkg.data.KGFilteredDataset`), split once with ``split_seed`` and written
  as RecBole benchmark files (``<dataset>.train/.valid/.test.inter``) into ``<results_dir>/split/``,
  beside links to the dataset's other files. Every run reads that folder (``benchmark_filename``), so
  every model, KG or not, trains, validates and tests on exactly the same interactions; the seeds vary
  initialisation and negative sampling, never the split.
* **One process per (model, seed)**, so its peak memory is its own; each writes
  ``runs/<model>__seed<seed>.json`` atomically (temporary file + rename) and the merged config to
  ``configs/<model>__seed<seed>.yaml``. Existing results are skipped: a comparison resumes where it
  stopped and can be filled up over several sittings. A failed run writes ``<key>.failed.json`` (with
  the traceback) and is retried next time. Each worker's output (RecBole's log, progress bars) goes to
  ``logs/<model>__seed<seed>.log`` as it runs. A SIGTERM of the runner stops its running workers and starts
  no more (finished results stay; the same command resumes).
* **Equal tuning budget** (:func:`tune_and_compare`, ``--tune=<folder of search spaces>`` with several
  models): every model is first swept with Ray Tune on the validation part of that same split, with the
  same number of trials and the same epoch cap per trial; the comparison then runs each model's best
  configuration (a variant ``Model@label`` runs its base model's best configuration plus its own files).
  The budget and each model's sweep are printed under the table.
* **Tables**: ``results.md`` and ``results.csv`` with mean +- std over seeds of the test metrics, train
  seconds per epoch, evaluation seconds, peak RSS (and peak GPU memory on a GPU), #parameters, epochs to
  best, the epoch cap of each model; ``chart.png`` of the headline metric (``valid_metric``).
"""
import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import yaml

from recbole_mkg.atomic_io import atomic_open, atomic_write_json, atomic_write_text

__all__ = ["compare", "child_environment", "tune_and_compare", "space_file_for", "run_one", "model_of", "prepare_split", "summarise",
           "parse_epoch_caps", "HEADLINE_METRICS"]

HEADLINE_METRICS = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "hit") for k in (10, 20)]
PROTOCOL_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties", "protocol")
SPLIT_PARTS = ("train", "valid", "test")


# ---- small helpers ------------------------------------------------------------------------------------

def run_key(model, seed):
    return f"{model}__seed{seed}"


def model_of(entry):
    """``"MultiKG4Rec@text"`` -> ``"MultiKG4Rec"``: an entry ``Model@label`` is a named variant of a model
    (its own row, its own ``--model_configs`` file); a plain name is itself."""
    name, _, label = entry.partition("@")
    if not name or (entry.count("@") and not label):
        raise ValueError(f"model entry {entry!r}: write a model name, or Model@label for a variant")
    return name


def protocol_file(name):
    """Path of a ready protocol config, e.g. ``protocol_file("paper")``."""
    path = os.path.join(PROTOCOL_DIR, f"{name}.yaml")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no protocol {name!r}: {path} missing")
    return path


def parse_epoch_caps(text, models=()):
    """``"KGAT:20,BPR:100"`` -> ``{"KGAT": 20, "BPR": 100}``; a bare ``"20"`` caps every model."""
    if text in (None, ""):
        return {}
    if isinstance(text, dict):
        return {k: int(v) for k, v in text.items()}
    text = str(text)
    if ":" not in text:
        return {m: int(text) for m in models}
    caps = {}
    for part in text.split(","):
        name, value = part.split(":")
        caps[name.strip()] = int(value)
    return caps


def _peak_rss_mb():
    """Peak resident memory of this process in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status`` (reset by ``exec``). ``ru_maxrss`` is not used there: it
    survives ``fork``/``exec``, so a child started by a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


# ---- the saved split ------------------------------------------------------------------------------------
def _absolute_paths(config_dict):
    """A copy of ``config_dict`` whose folder settings are absolute (the runs work in other folders)."""
    shared = dict(config_dict or {})
    for key in ("data_path", "checkpoint_dir", "feature_cache_dir", "feature_dir"):
        if isinstance(shared.get(key), str):
            shared[key] = os.path.abspath(shared[key])
    return shared


def prepare_split(dataset, config_file_list=None, config_dict=None, results_dir="results", split_seed=None,
                  default_seed=2020):
    """Split the KG-filtered interactions once and save them as RecBole benchmark files.

    ``split_seed``: the seed of the split; ``None`` reuses the saved split whatever its seed, or makes a new
    one with ``default_seed``. A saved split made with another seed than an explicit ``split_seed`` is an
    error (the runs of one results folder must share one split).

    The split's files (data: never published) live in ``<results_dir>/split/``; its description (seed,
    sizes, no data) also goes to ``<results_dir>/split.json``, which travels with the results. A folder
    whose ``split/`` is gone (e.g. results copied from the docs) is split again with the recorded seed and
    must come out the same size; a folder with earlier runs and no record at all is an error unless
    ``split_seed`` is given, since a new split under old runs would compare runs on different test sets.

    Returns:
        dict: ``{"data_path": <folder holding <dataset>/>, "benchmark_filename": [train, valid, test],
        "sizes": {...}, "split_seed": int}``; the overrides every run of the comparison uses.
    """
    import numpy as np
    from recbole.utils import FeatureType, init_seed

    from recbole_mkg.compat.safe_checkpoints import to_plain
    from recbole_mkg.config import Config
    from recbole_mkg.data import create_dataset

    split_root = os.path.abspath(os.path.join(results_dir, "split"))
    folder = os.path.join(split_root, dataset)
    marker = os.path.join(folder, "split.json")
    record_path = os.path.join(results_dir, "split.json")
    if os.path.isfile(marker):
        with open(marker, encoding="utf-8") as f:
            info = json.load(f)
        if not os.path.isfile(record_path):  # folders made before the record existed
            atomic_write_json(record_path, info)
        if split_seed is not None and int(split_seed) != int(info["split_seed"]):
            raise ValueError(f"{folder} holds the split made with seed {info['split_seed']}, not {split_seed}: "
                             f"omit --split_seed (or pass {info['split_seed']}) to add runs to this comparison, "
                             f"or use another --results_dir for a new split")
        return {"data_path": split_root, "benchmark_filename": list(SPLIT_PARTS), "sizes": info["sizes"],
                "split_seed": int(info["split_seed"])}

    recorded = None
    if os.path.isfile(record_path):
        with open(record_path, encoding="utf-8") as f:
            recorded = json.load(f)
        if recorded.get("dataset") == dataset:
            if split_seed is not None and int(split_seed) != int(recorded["split_seed"]):
                raise ValueError(f"{record_path}: the runs of this folder used the split made with seed "
                                 f"{recorded['split_seed']}, not {split_seed}: omit --split_seed (or pass "
                                 f"{recorded['split_seed']}), or use another --results_dir for a new split")
            split_seed = int(recorded["split_seed"])
        else:
            recorded = None
    elif split_seed is None and _earlier_runs(results_dir, dataset):
        raise ValueError(
            f"{results_dir} holds earlier runs on {dataset} but neither their split ({folder}) nor its record "
            f"({record_path}): pass --split_seed=<the seed their split was made with> (the first seed of the "
            f"command that made them, unless it gave --split_seed), so that new runs use the same split")
    split_seed = int(default_seed if split_seed is None else split_seed)
    overrides = dict(config_dict or {})
    overrides.update({"seed": split_seed, "benchmark_filename": None})
    config = Config(model="BPR", dataset=dataset, config_file_list=config_file_list, config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    parts = data.build()
    source = os.path.abspath(config["data_path"])

    os.makedirs(folder, exist_ok=True)
    link_name, kg_name = f"{dataset}.link", f"{dataset}.kg"
    for entry in os.listdir(source):  # links to every file of the dataset (features, .item, ...)
        target = os.path.join(folder, entry)
        if not os.path.lexists(target) and not entry.startswith(".") and entry not in (link_name, kg_name):
            os.symlink(os.path.join(source, entry), target)

    sizes = {}
    for name, part in zip(SPLIT_PARTS, parts):
        inter = part.inter_feat
        columns, header = {}, []
        for field in inter.columns:
            ftype = data.field2type[field]
            values = inter[field].numpy()
            if ftype == FeatureType.TOKEN:
                columns[field] = data.id2token(field, values)
                header.append(f"{field}:token")
            elif ftype == FeatureType.FLOAT:
                columns[field] = values
                header.append(f"{field}:float")
        rows = ["\t".join(header)]
        cols = [columns[h.split(":")[0]] for h in header]
        rows.extend("\t".join(map(str, r)) for r in zip(*cols))
        atomic_write_text(os.path.join(folder, f"{dataset}.{name}.inter"), "\n".join(rows) + "\n")
        sizes[name] = int(len(inter))
    if os.path.isfile(os.path.join(source, kg_name)):
        _write_filtered_kg_and_link(data, config, source, folder, dataset, parts)
    info = {"dataset": dataset, "source": source, "split_seed": split_seed,
            "eval_args": str(config["eval_args"]), "sizes": sizes,
            "drop_relations": to_plain(config["drop_relations"]),
            "users": int(data.user_num - 1), "items": int(data.item_num - 1),
            "interactions": int(np.sum(list(sizes.values())))}
    if recorded is not None and recorded.get("sizes") not in (None, sizes):
        raise ValueError(f"{record_path}: the split made again with seed {split_seed} has sizes {sizes}, the "
                         f"recorded one {recorded['sizes']}: the data or the protocol changed since the earlier "
                         f"runs ({folder} is left for inspection); use another --results_dir")
    atomic_write_json(marker, info)
    atomic_write_json(record_path, info)
    return {"data_path": split_root, "benchmark_filename": list(SPLIT_PARTS), "sizes": sizes,
            "split_seed": split_seed}


def _earlier_runs(results_dir, dataset):
    """Run records (``runs/*.json``) of ``dataset`` in ``results_dir``."""
    runs = os.path.join(results_dir, "runs")
    found = []
    for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        if name.endswith(".json") and not name.endswith(".failed.json"):
            try:
                with open(os.path.join(runs, name), encoding="utf-8") as f:
                    if json.load(f).get("dataset") == dataset:
                        found.append(name)
            except (OSError, ValueError):
                continue
    return found


def _write_filtered_kg_and_link(data, config, source, folder, dataset, parts):
    """The ``.kg`` and ``.link`` rows that the normal (filtering) load path would keep.

    RecBole skips all filtering when it reads benchmark files, so the split folder gets the KG without
    the triples of ``drop_relations`` and a ``.link`` restricted to interacted items whose entity is in
    that KG (RecBole's KG dataset fails on link rows of items without interactions).
    """
    import pandas as pd

    from recbole_mkg.data.dataset import relations_to_drop

    def read(path):
        return pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False, engine="c")

    drop = relations_to_drop(config)
    kg_path, link_path = os.path.join(source, f"{dataset}.kg"), os.path.join(source, f"{dataset}.link")
    if drop:
        kg = read(kg_path)
        kg = kg[~kg.iloc[:, 1].isin(drop)]
        atomic_write_text(os.path.join(folder, f"{dataset}.kg"), kg.to_csv(sep="\t", index=False, quoting=3))
    else:
        os.symlink(kg_path, os.path.join(folder, f"{dataset}.kg"))
        kg = read(kg_path)
    if not os.path.isfile(link_path):
        return
    link = read(link_path)
    item_col = next(c for c in link.columns if c.split(":")[0] == data.iid_field)
    entity_col = next(c for c in link.columns if c != item_col)
    items = set()
    for part in parts:
        items.update(data.id2token(data.iid_field, part.inter_feat[data.iid_field].numpy()).tolist())
    entities = set(kg.iloc[:, 0]) | set(kg.iloc[:, 2])
    keep = link[item_col].isin(items) & link[entity_col].isin(entities)
    atomic_write_text(os.path.join(folder, f"{dataset}.link"), link[keep].to_csv(sep="\t", index=False, quoting=3))


# ---- one run (in its own process) ------------------------------------------------------------------
def run_one(model, dataset, seed, config_file_list=None, config_dict=None, out_dir=None, saved=True, label=None):
    """Train and test one model with one seed; returns the result record (and writes it when ``out_dir``).
    ``label`` (default: the model's name) names the row, e.g. ``MultiKG4Rec@text`` for a variant.

    The record holds the test and best validation results, timings (train seconds per epoch, seconds per
    validation, test seconds), peak RSS of this process, peak GPU memory, #parameters, epochs run and
    epochs to best, and the exact merged config (also written as YAML).
    """
    import torch
    from recbole.utils import init_logger, init_seed

    from recbole_mkg.compat.safe_checkpoints import to_plain
    from recbole_mkg.config import Config
    from recbole_mkg.quick_start import build
    from recbole_mkg.utils import device_name

    overrides = dict(config_dict or {})
    overrides["seed"] = int(seed)
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset_obj, (train_data, valid_data, test_data), model_obj, trainer = build(config)

    timings = {"train": [], "valid": [], "valid_scores": []}
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed_train(*args, **kwargs):
        start = time.perf_counter()
        out = train_epoch(*args, **kwargs)
        timings["train"].append(time.perf_counter() - start)
        return out

    def timed_valid(*args, **kwargs):
        start = time.perf_counter()
        score, result = valid_epoch(*args, **kwargs)
        timings["valid"].append(time.perf_counter() - start)
        timings["valid_scores"].append(float(score))
        return score, result

    trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
    if config["device"].type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=saved, show_progress=False)
    start = time.perf_counter()
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=False)
    test_seconds = time.perf_counter() - start

    scores = timings["valid_scores"]
    if scores:
        pick = max if config["valid_metric_bigger"] else min
        best_index = scores.index(pick(scores))
        epochs_to_best = (best_index + 1) * max(1, int(config["eval_step"] or 1))
    else:
        epochs_to_best = len(timings["train"])
    final_config = to_plain(config.final_config_dict)
    record = {
        "status": "ok",
        "model": label or config["model"],
        "model_class": config["model"],
        "dataset": config["dataset"],
        "seed": int(seed),
        "test_result": {k: float(v) for k, v in dict(test_result).items()},
        "best_valid_result": {k: float(v) for k, v in dict(best_valid_result or {}).items()},
        "best_valid_score": float(best_valid_score),
        "valid_metric": str(config["valid_metric"]).lower(),
        "valid_curve": scores,
        "epochs_cap": int(config["epochs"]),
        "epochs_run": len(timings["train"]),
        "epochs_to_best": int(epochs_to_best),
        "train_s_per_epoch": sum(timings["train"]) / max(1, len(timings["train"])),
        "valid_s_per_eval": sum(timings["valid"]) / max(1, len(timings["valid"])),
        "test_eval_s": test_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20) if config["device"].type == "cuda" else None,
        "device": str(config["device"]),
        "device_name": device_name(config["device"]),
        "torch_threads": int(torch.get_num_threads()),
        "n_params": int(sum(p.numel() for p in model_obj.parameters())),
        "split_sizes": {n: int(len(d._dataset.inter_feat))
                        for n, d in zip(SPLIT_PARTS, (train_data, valid_data, test_data))},
        "config": final_config,
    }
    if out_dir is not None:
        key = run_key(label or config["model"], seed)
        atomic_write_text(os.path.join(out_dir, "configs", f"{key}.yaml"),
                          yaml.safe_dump(final_config, sort_keys=True, allow_unicode=True))
        atomic_write_json(os.path.join(out_dir, "runs", f"{key}.json"), record)
    return record


@contextlib.contextmanager
def _signal_handler(signum, handler):
    """Install ``handler`` for ``signum`` while the block runs (only the main thread may; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def child_environment(jobs, environ=None, cpu_count=None):
    """The environment of the run processes: with ``jobs`` > 1 runs at once and no ``OMP_NUM_THREADS`` of
    the user's, each run gets ``cpu_count // jobs`` (at least 1) torch threads instead of every run
    starting one thread per CPU: oversubscribed OpenMP threads wait on each other at every barrier
    (measured here: a CrossGMMI pre-training epoch took 99 s with 2 threads beside a 1-thread run on 2
    cores, 20 s with 1 thread)."""
    env = dict(os.environ if environ is None else environ)
    jobs = int(jobs)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, int(cpu_count or os.cpu_count() or 1) // jobs))
    return env


def _tail(path, chars=2000):
    """The last ``chars`` characters of a text file (a worker's log)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - chars))
        return f.read().decode("utf-8", errors="replace")


def _worker(spec_path):
    """Entry point of the child process: ``python -m recbole_mkg.compare --worker spec.json``."""
    import recbole_mkg  # noqa: F401  (compatibility fixes)

    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    key = run_key(spec["model"], spec["seed"])
    failed = os.path.join(spec["out_dir"], "runs", f"{key}.failed.json")
    try:
        run_one(model_of(spec["model"]), spec["dataset"], spec["seed"], spec.get("config_file_list"),
                spec.get("config_dict"), out_dir=spec["out_dir"], saved=spec.get("saved", True),
                label=spec["model"])
    except BaseException as err:  # recorded (and in the run's log), then the parent goes on with the next run
        traceback.print_exc()
        atomic_write_json(failed, {"status": "failed", "model": spec["model"], "seed": spec["seed"],
                                   "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})
        return 1
    if os.path.exists(failed):
        os.remove(failed)
    return 0


def make_split(dataset, config_file_list=None, config_dict=None, results_dir=None, split_seed=None, log=print):
    """Make (or check) ``results_dir``'s saved split and run nothing: what ``--split_only`` does, e.g. before
    the folder travels to another machine (``scripts/offline_gpu_bundle.sh``). Same arguments and return
    value as :func:`prepare_split`; relative folders in ``config_dict`` are resolved here."""
    results_dir = os.path.abspath(results_dir or os.path.join("results", dataset))
    os.makedirs(results_dir, exist_ok=True)
    config_file_list = [os.path.abspath(p) for p in (config_file_list or [])]
    split = prepare_split(dataset, config_file_list, _absolute_paths(config_dict), results_dir, split_seed)
    log(f"[split] {dataset} (seed {split['split_seed']}) train/valid/test = {split['sizes']} in {split['data_path']}")
    return split


# ---- the side-by-side runner -----------------------------------------------------------------------
def compare(models, dataset, seeds=(2020,), config_file_list=None, config_dict=None, results_dir=None,
            epoch_caps=None, model_config_files=None, split_seed=None, timeout=None, saved=True,
            python=sys.executable, jobs=1, log=print):
    """Run every (model, seed) in its own process on one saved split; write the tables and chart.

    Args:
        models (list of str): plugin and/or RecBole model names.
        dataset (str): dataset name (``data_path`` in ``config_dict`` / config files says where).
        seeds (list of int): seeds; each model runs once per seed.
        config_file_list (list of str): config files shared by every model (e.g. the paper protocol).
        config_dict (dict): overrides shared by every model.
        results_dir (str): output folder (default ``results/<dataset>``).
        epoch_caps (dict): model -> maximum epochs (its ``epochs``), printed in the table.
        model_config_files (dict): model -> list of extra config files (e.g. its tuned best config).
        split_seed (int): seed of the one random split (default: the saved split's, or the first seed for
            a new one).
        timeout (float): seconds per run; a run over it is recorded as failed.
        jobs (int): (model, seed) processes run at once (e.g. several small models sharing one GPU);
            each still measures its own peak memory, but timings then share the machine.

    Returns:
        dict: ``{"rows": [...], "records": [...], "markdown": path, "csv": path, "chart": path or None}``.
    """
    models = [m.strip() for m in models if m.strip()]
    seeds = [int(s) for s in seeds]
    results_dir = os.path.abspath(results_dir or os.path.join("results", dataset))
    epoch_caps = dict(epoch_caps or {})
    model_config_files = dict(model_config_files or {})
    config_file_list = [os.path.abspath(p) for p in (config_file_list or [])]
    shared = _absolute_paths(config_dict)
    shared.setdefault("checkpoint_dir", os.path.join(results_dir, "checkpoints"))

    for model in models:
        model_of(model)  # a malformed entry fails before the split or any run is made
    os.makedirs(os.path.join(results_dir, "runs"), exist_ok=True)
    split = prepare_split(dataset, config_file_list, shared, results_dir, split_seed, default_seed=seeds[0])
    split_seed = split["split_seed"]
    log(f"[compare] split (seed {split_seed}) train/valid/test = {split['sizes']} in {split['data_path']}")
    if epoch_caps:
        log("[compare] epoch caps: " + ", ".join(f"{m}: {epoch_caps.get(m, '-')}" for m in models))

    todo = []
    for model in models:
        for seed in seeds:
            key = run_key(model, seed)
            if os.path.isfile(os.path.join(results_dir, "runs", f"{key}.json")):
                log(f"[compare] {key}: result exists, skipped")
                continue
            run_dict = dict(shared)
            run_dict.update({"data_path": split["data_path"], "benchmark_filename": split["benchmark_filename"]})
            if model in epoch_caps:
                run_dict["epochs"] = int(epoch_caps[model])
            extra = model_config_files.get(model) or []
            extra = [extra] if isinstance(extra, str) else list(extra)
            todo.append({"model": model, "dataset": dataset, "seed": seed, "out_dir": results_dir, "saved": saved,
                         "config_file_list": config_file_list + [os.path.abspath(p) for p in extra],
                         "config_dict": run_dict})

    env = child_environment(jobs)
    if env.get("OMP_NUM_THREADS") != os.environ.get("OMP_NUM_THREADS"):
        log(f"[compare] {jobs} runs at once on {os.cpu_count()} CPUs: {env['OMP_NUM_THREADS']} torch thread(s) "
            f"per run (set OMP_NUM_THREADS to choose)")

    # the workers running now; a re-entrant lock: the SIGTERM handler may run in a thread that holds it
    live, lock, stopping = set(), threading.RLock(), threading.Event()

    def launch(spec):
        key = run_key(spec["model"], spec["seed"])
        if stopping.is_set():
            return
        out = os.path.join(results_dir, "runs", f"{key}.json")
        failed = os.path.join(results_dir, "runs", f"{key}.failed.json")
        spec_path = os.path.join(results_dir, "runs", f".{key}.spec.json")
        log_path = os.path.join(results_dir, "logs", f"{key}.log")
        atomic_write_json(spec_path, spec)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log(f"[compare] {key}: running (epochs cap {spec['config_dict'].get('epochs', 'config')}; "
            f"its progress: {os.path.relpath(log_path, results_dir)})")
        start = time.time()
        try:
            with open(log_path, "w", encoding="utf-8") as output, subprocess.Popen(
                    [python, "-m", "recbole_mkg.compare", "--worker", spec_path], env=env,
                    stdout=output, stderr=subprocess.STDOUT) as proc:
                with lock:
                    live.add(proc)
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code = -1
                    atomic_write_json(failed, {"status": "failed", "model": spec["model"], "seed": spec["seed"],
                                               "error": f"timed out after {timeout} s"})
                finally:
                    with lock:
                        live.discard(proc)
        finally:  # the worker's input only: the run's merged config is in configs/<key>.yaml
            if os.path.exists(spec_path):
                os.remove(spec_path)
        tail = _tail(log_path)
        if code == 0 and os.path.isfile(out):
            log(f"[compare] {key}: done in {time.time() - start:.1f} s")
        elif stopping.is_set():
            log(f"[compare] {key}: stopped (the runner was terminated); the same command reruns it")
        else:
            if not os.path.isfile(failed):
                atomic_write_json(failed, {"status": "failed", "model": spec["model"], "seed": spec["seed"],
                                           "error": f"exit code {code}", "traceback": tail})
            log(f"[compare] {key}: FAILED (exit {code}); see runs/{key}.failed.json\n{tail[-600:]}")

    def stop(signum, frame):
        """SIGTERM: stop the running workers, start no more, and leave (finished results stay)."""
        stopping.set()
        with lock:
            for proc in live:
                proc.terminate()
        log(f"[compare] terminated (signal {signum}): stopping {len(live)} running run(s); finished results are kept")
        raise SystemExit(128 + signum)

    with _signal_handler(signal.SIGTERM, stop):
        if int(jobs) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=int(jobs)) as pool:
                list(pool.map(launch, todo))
        else:
            for spec in todo:
                launch(spec)
    return summarise(results_dir, models, seeds, epoch_caps, log=log)


def space_file_for(spaces, model):
    """The search-space file of ``model``: ``spaces`` itself when it is a file, else ``<spaces>/<model>.test``
    (or ``.yaml`` / ``.yml`` / ``.json``) in that folder."""
    if os.path.isfile(spaces):
        return os.path.abspath(spaces)
    if not os.path.isdir(spaces):
        raise FileNotFoundError(f"--tune={spaces!r}: no such search-space file or folder")
    for ext in (".test", ".yaml", ".yml", ".json"):
        path = os.path.join(spaces, model + ext)
        if os.path.isfile(path):
            return os.path.abspath(path)
    raise FileNotFoundError(f"no search space for {model} in {spaces}: write {os.path.join(spaces, model + '.test')} "
                            f"(RecBole's hyper-parameter syntax, e.g. 'learning_rate loguniform -9.21,-4.61')")


def tune_and_compare(models, dataset, spaces, seeds=(2020,), config_file_list=None, config_dict=None,
                     results_dir=None, num_samples=None, tune_options=None, model_config_files=None, split_seed=None,
                     timeout=None, jobs=1, log=print):
    """The fair comparison: an equal tuning budget per model on one split, then :func:`compare`.

    1. The split is saved once (:func:`prepare_split`).
    2. Every base model (``Model`` of ``Model@label``) is swept with :func:`recbole_mkg.tune.run_tune` on that
       split's *validation* part: ``num_samples`` trials (``None``: a new sweep's default, an interrupted
       one's recorded number; :func:`recbole_mkg.tune.run_tune`), each capped at the config's ``epochs`` (the same
       cap for every model), ASHA unless ``tune_options`` says otherwise. A finished sweep
       (``<results_dir>/tune/<Model>/best_config.yaml``) is reused, an interrupted one resumed.
    3. :func:`compare` runs every entry with its base model's best config (then the entry's own files from
       ``model_config_files``) for every seed.

    The budget (trials x epoch cap, scheduler, spaces, trials each sweep really ran) goes to
    ``<results_dir>/tuning_budget.json`` and under the table. Returns :func:`compare`'s result.
    """
    from recbole_mkg.tune import start_ray

    models = [m.strip() for m in models if m.strip()]
    seeds = [int(s) for s in seeds]
    results_dir = os.path.abspath(results_dir or os.path.join("results", dataset))
    model_config_files = {k: ([v] if isinstance(v, str) else list(v)) for k, v in (model_config_files or {}).items()}
    # the equal budget's default sampler is the stratified one: no model's sweep left to the luck of its draws
    tune_options = dict(tune_options or {})
    tune_options.setdefault("sampler", "stratified")
    base_models = list(dict.fromkeys(model_of(m) for m in models))
    spaces_of = {b: space_file_for(spaces, b) for b in base_models}  # every space exists before any work
    config_file_list = [os.path.abspath(p) for p in (config_file_list or [])]
    shared = _absolute_paths(config_dict)
    os.makedirs(results_dir, exist_ok=True)
    split = prepare_split(dataset, config_file_list, shared, results_dir, split_seed, default_seed=seeds[0])
    split_seed = split["split_seed"]
    on_split = dict(shared, data_path=split["data_path"], benchmark_filename=split["benchmark_filename"],
                    seed=split_seed)
    on_split.setdefault("checkpoint_dir", os.path.join(results_dir, "tune", "checkpoints"))

    tune_root = os.path.join(results_dir, "tune")
    budget_path = os.path.join(results_dir, "tuning_budget.json")
    # earlier sittings' models stay in the record: a folder fills up over several invocations
    earlier = {}
    if os.path.isfile(budget_path):
        with open(budget_path, encoding="utf-8") as f:
            record = json.load(f)
        earlier = record.get("models", {})
        for b in earlier.values():  # records from before the per-model number of trials
            b.setdefault("trials", record.get("trials_per_model"))
    budget = {"trials_per_model": num_samples, "scheduler": tune_options.get("scheduler", "asha"),
              "selection": "validation split of the saved split",
              "models": {m: b for m, b in earlier.items() if m not in base_models}}
    tuned_files = {}
    todo = [b for b in base_models if not os.path.isfile(os.path.join(tune_root, b, "best_config.yaml"))]
    started = todo and start_ray(tune_options.get("ray_address"), tune_options.get("num_cpus"),
                                 tune_options.get("gpus_per_trial", 0))  # one Ray for every sweep
    try:
        for base in base_models:
            tuned_files[base] = _tuned_config(base, dataset, spaces_of[base], num_samples, tune_root, budget,
                                              config_file_list + [os.path.abspath(p) for p in
                                                                  model_config_files.get(base, [])],
                                              on_split, tune_options, log)
    finally:
        if started:
            import ray

            ray.shutdown()
    for field, top, what in (("epochs_cap", "epochs_cap_per_trial", "epoch caps"),
                             ("trials", "trials_per_model", "numbers of trials")):
        values = {b.get(field) for b in budget["models"].values()}
        budget[top] = values.pop() if len(values) == 1 else None
        if budget[top] is None:
            log(f"[tune+compare] WARNING: the models' {what} differ, so the tuning budget is not equal: "
                + ", ".join(f"{m}: {b.get(field)}" for m, b in budget["models"].items()))
    atomic_write_json(budget_path, budget)

    # a base model: its own files (already used by its sweep), then its tuned values; a variant: its base
    # model's tuned values, then the variant's files (e.g. modalities: [text]), which win
    per_entry = {m: model_config_files.get(m, []) + [tuned_files[m]] if m == model_of(m)
                 else [tuned_files[model_of(m)]] + model_config_files.get(m, []) for m in models}
    return compare(models, dataset, seeds=seeds, config_file_list=config_file_list, config_dict=shared,
                   results_dir=results_dir, model_config_files=per_entry, split_seed=split_seed, timeout=timeout,
                   jobs=jobs, log=log)


def _tuned_config(base, dataset, space, num_samples, tune_root, budget, files, on_split, tune_options, log):
    """Sweep ``base`` (or reuse its finished sweep); record it in ``budget``; return its best config path."""
    from recbole_mkg.config import Config
    from recbole_mkg.tune import read_sweep_record, run_tune

    cap = int(Config(model=base, dataset=dataset, config_file_list=files, config_dict=on_split)["epochs"])
    best = os.path.join(tune_root, base, "best_config.yaml")
    if os.path.isfile(best):
        log(f"[tune+compare] {base}: sweep done before, using {best}")
    else:
        trials = "the sweep's default number of" if num_samples is None else num_samples
        log(f"[tune+compare] {base}: {trials} trials x at most {cap} epochs ({space})")
        result = run_tune(base, dataset, space, config_file_list=files, config_dict=on_split,
                          num_samples=num_samples, tune_dir=tune_root, name=base, log=log, **tune_options)
        if not result.get("best_config"):
            raise RuntimeError(f"every trial of the {base} sweep failed: see {os.path.join(tune_root, base)}")
    info_path = os.path.join(tune_root, base, "best.json")
    best_info = {}
    if os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as f:
            best_info = json.load(f)
    else:  # a hand-made or hand-edited sweep folder: its config still counts, its record is unknown
        log(f"[tune+compare] WARNING: {info_path} is missing, so {base}'s best validation value and tuned "
            f"parameters are unknown (shown as '-'); {best} is used as it is. Delete {os.path.dirname(best)} "
            f"to sweep {base} again.")
    record = read_sweep_record(os.path.dirname(best))
    trials_run = _count_trials(os.path.dirname(best))
    budget["models"][base] = {"space": space, "epochs_cap": cap, "trials_run": trials_run,
                              "trials": record.get("num_samples", trials_run if num_samples is None else num_samples),
                              "sampler": record.get("sampler"),
                              "best_config": best, "best_valid": best_info.get("best_valid"),
                              "best_params": best_info.get("params")}
    return best


def _count_trials(sweep_dir):
    path = os.path.join(sweep_dir, "trials.csv")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


def _budget_lines(results_dir, models):
    path = os.path.join(results_dir, "tuning_budget.json")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        budget = json.load(f)
    cap, trials = budget.get("epochs_cap_per_trial"), budget.get("trials_per_model")
    equal = "equal for every model" if cap is not None and trials is not None else "NOT EQUAL"
    lines = ["", f"Tuning budget ({equal}): {trials if trials is not None else 'UNEQUAL'} trials x "
                 f"{cap if cap is not None else 'UNEQUAL'} epochs per trial, {budget['scheduler']} scheduler, "
                 f"selection on the {budget['selection']}; each entry runs its base model's best config.", "",
             "| model | trials run | epoch cap | sampler | best valid | best params | search space |",
             "|---|---|---|---|---|---|---|"]
    for base, b in budget["models"].items():
        if not any(model_of(m) == base for m in models):
            continue
        valid = b.get("best_valid")
        valid = f"{valid:.4f}" if isinstance(valid, (int, float)) else "-"
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted((b.get("best_params") or {}).items()))
        sampler = b.get("sampler") or "random (not recorded)"
        lines.append(f"| {base} | {b.get('trials_run')} | {b['epochs_cap']} | {sampler} | {valid} | {params} | "
                     f"{os.path.basename(b['space'])} |")
    return lines


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ---- tables and chart ------------------------------------------------------------------------------
def _mean_std(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def _device_label(record):
    """``cpu (x86_64, 2 logical CPUs)``, ``cuda (NVIDIA H200)``; runs recorded before the name: ``cuda``."""
    name = record.get("device_name")
    return str(record.get("device")) + (f" ({name})" if name else "")


def summarise(results_dir, models=None, seeds=None, epoch_caps=None, log=print):
    """Read ``runs/*.json`` and write ``results.md``, ``results.csv``, ``chart.png`` (test headline metric)
    and ``curves.png`` (validation curves)."""
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
    several = len({d for labels in devices.values() for d in labels}) > 1
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
    lines += _budget_lines(results_dir, models)
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="worker of recbole_mkg.compare (use run_recbole_mkg.py)")
    parser.add_argument("--worker", required=True, help="run spec (JSON) written by compare()")
    sys.exit(_worker(parser.parse_args().worker))
