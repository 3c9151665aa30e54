"""Side-by-side comparison of several models on one dataset, one saved split and several seeds.

    python run_recbole_mkg.py --model=BPR,LightGCN,KGAT,MultiKG4Rec --dataset=ml-100k-kg \
        --data_path=../shared/datasets --seeds=2020,2021,2022 --results_dir=results/ml-100k-kg \
        --config_files=recbole_mkg/properties/protocol/paper.yaml --epochs_cap=KGAT:20,MultiKG4Rec:20

What it guarantees:

* **One split** (:mod:`recbole_mkg.saved_split`): the KG-filtered interactions split once with
  ``split_seed`` and saved as RecBole benchmark files in ``<results_dir>/split/``; every run reads them, so
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
* **Tables** (:mod:`recbole_mkg.results_report`): ``results.md`` / ``results.csv`` (mean +- std over
  seeds), ``chart.png``, ``curves.png``; ``--summarise`` rewrites them from the runs a folder holds.
"""
import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

import yaml

from recbole_mkg.atomic_io import atomic_write_json, atomic_write_text
from recbole_mkg.results_report import summarise
from recbole_mkg.config import absolute_paths
from recbole_mkg.saved_split import SPLIT_PARTS, prepare_split
from recbole_mkg.utils import model_of, peak_rss_mb

__all__ = ["compare", "tune_and_compare", "child_environment", "space_file_for", "run_one", "run_key",
           "parse_epoch_caps", "protocol_file", "model_of", "prepare_split", "summarise"]

PROTOCOL_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties", "protocol")


# ---- small helpers ------------------------------------------------------------------------------------

def run_key(model, seed):
    return f"{model}__seed{seed}"


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


# ---- one run (in its own process) ------------------------------------------------------------------
def run_one(model, dataset, seed, config_file_list=None, config_dict=None, out_dir=None, saved=True, label=None):
    """Train and test one model with one seed; returns the result record (and writes it when ``out_dir``).
    ``label`` (default: the model's name) names the row, e.g. ``MultiKG4Rec@text`` for a variant.
    With ``out_dir`` (and ``saved``) the run keeps ``<out_dir>/progress/<key>.pth`` after each validated
    epoch and, when that file exists, goes on from it (:mod:`recbole_mkg.run_progress`).

    The record holds the test and best validation results, timings (train seconds per epoch, seconds per
    validation, test seconds), peak RSS of this process, peak GPU memory, #parameters, epochs run and
    epochs to best, and the exact merged config (also written as YAML). With ``out_dir`` a full-ranking run
    also saves its test users' top-K lists, ``runs/<key>.topk.npz`` (:mod:`recbole_mkg.breakdown`).
    """
    import torch
    from recbole.data.dataloader import FullSortEvalDataLoader
    from recbole.utils import init_logger, init_seed

    from recbole_mkg.breakdown import TopKRecorder, topk_path
    from recbole_mkg.compat.safe_checkpoints import to_plain
    from recbole_mkg.config import Config
    from recbole_mkg.quick_start import build
    from recbole_mkg.run_progress import RunProgress, is_resumable
    from recbole_mkg.utils import device_name

    overrides = dict(config_dict or {})
    overrides["seed"] = int(seed)
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset_obj, (train_data, valid_data, test_data), model_obj, trainer = build(config)

    key = run_key(label or config["model"], seed)
    timings = {"train": [], "valid": [], "valid_scores": []}
    progress = None
    if out_dir is not None and saved and is_resumable(config):
        progress = RunProgress(os.path.join(out_dir, "progress", f"{key}.pth"), config, trainer, train_data, timings)
        if progress.restore() is not None:
            print(f"[run] {key}: resumed after epoch {progress.resumed_from - 1} from {progress.path}"
                  + (" (its training had ended: testing)" if progress.finished else ""), flush=True)
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
    # RecBole's progress bars go to the run's log (the runner's logs/<key>.log): a long epoch shows its batches
    show_progress = bool(config["show_progress"])
    if progress is not None and progress.finished:
        best_valid_score, best_valid_result = trainer.best_valid_score, trainer.best_valid_result
    else:
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=saved, show_progress=show_progress,
            callback_fn=None if progress is None else (lambda epoch_idx, score: progress.save(epoch_idx)))
    # the test users' top-K lists as this evaluation ranks them (recbole_mkg.breakdown: metrics per item group)
    recorder = None
    if out_dir is not None and isinstance(test_data, FullSortEvalDataLoader) and config["single_spec"]:
        recorder = TopKRecorder(trainer, dataset_obj, max(config["topk"]))
    start = time.perf_counter()
    with recorder or contextlib.nullcontext():
        test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=show_progress)
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
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20) if config["device"].type == "cuda" else None,
        "device": str(config["device"]),
        "device_name": device_name(config["device"]),
        "torch_threads": int(torch.get_num_threads()),
        "n_params": int(sum(p.numel() for p in model_obj.parameters())),
        "split_sizes": {n: int(len(d._dataset.inter_feat))
                        for n, d in zip(SPLIT_PARTS, (train_data, valid_data, test_data))},
        "config": final_config,
    }
    if progress is not None:
        record["sittings"] = progress.sittings  # several when the run was resumed (first epoch, device)
    if out_dir is not None and saved and os.path.isfile(trainer.saved_model_file):
        # the best epoch's weights (recbole_mkg.retest evaluates them again), relative when in the folder
        inside = os.path.abspath(trainer.saved_model_file).startswith(os.path.abspath(out_dir) + os.sep)
        record["checkpoint"] = (os.path.relpath(trainer.saved_model_file, out_dir) if inside
                                else os.path.abspath(trainer.saved_model_file))
    if out_dir is not None:
        if recorder is not None:  # before the record, which marks the run as done
            recorder.save(topk_path(out_dir, key))
        atomic_write_text(os.path.join(out_dir, "configs", f"{key}.yaml"),
                          yaml.safe_dump(final_config, sort_keys=True, allow_unicode=True))
        atomic_write_json(os.path.join(out_dir, "runs", f"{key}.json"), record)
    if progress is not None:
        progress.remove()
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
    shared = absolute_paths(config_dict)
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
        start, error = time.time(), None
        try:
            with open(log_path, "a", encoding="utf-8") as output:  # a resumed run's earlier sittings stay
                output.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {key} starts ====\n")
            with open(log_path, "a", encoding="utf-8") as output, subprocess.Popen(
                    [python, "-m", "recbole_mkg.compare", "--worker", spec_path], env=env,
                    stdout=output, stderr=subprocess.STDOUT) as proc:
                with lock:
                    live.add(proc)
                try:
                    code = proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code, error = -1, f"timed out after {timeout} s"
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
            if error or not os.path.isfile(failed):  # else the worker recorded its own exception
                atomic_write_json(failed, {"status": "failed", "model": spec["model"], "seed": spec["seed"],
                                           "error": error or f"exit code {code}", "traceback": tail})
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

    The budget (trials x epoch cap, scheduler and its settings, spaces, trials each sweep really ran) goes to
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
    shared = absolute_paths(config_dict)
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
    budget = {"trials_per_model": num_samples, "selection": "validation split of the saved split",
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
    atomic_write_json(budget_path, summarise_budget(budget, log))

    # a base model: its own files (already used by its sweep), then its tuned values; a variant: its base
    # model's tuned values, then the variant's files (e.g. modalities: [text]), which win
    per_entry = {m: model_config_files.get(m, []) + [tuned_files[m]] if m == model_of(m)
                 else [tuned_files[model_of(m)]] + model_config_files.get(m, []) for m in models}
    return compare(models, dataset, seeds=seeds, config_file_list=config_file_list, config_dict=shared,
                   results_dir=results_dir, model_config_files=per_entry, split_seed=split_seed, timeout=timeout,
                   jobs=jobs, log=log)


def summarise_budget(budget, log=print):
    """Fill ``budget``'s totals from its per-model sweeps and return it: ``epochs_cap_per_trial``,
    ``trials_per_model`` (None when the models' differ) and ``scheduler`` with ``scheduler_equal`` (the
    scheduler is None also when no sweep recorded it). Each difference is logged as a warning: the budget is
    then not equal."""
    for field, top, what in (("epochs_cap", "epochs_cap_per_trial", "epoch caps"),
                             ("trials", "trials_per_model", "numbers of trials"),
                             ("scheduler", "scheduler", "schedulers or their settings")):
        values = {json.dumps(b.get(field), sort_keys=True) for b in budget["models"].values()}
        equal = len(values) == 1
        budget[top] = json.loads(values.pop()) if equal else None
        if field == "scheduler":
            budget["scheduler_equal"] = equal
        if not equal:
            log(f"[tune+compare] WARNING: the models' {what} differ, so the tuning budget is not equal: "
                + ", ".join(f"{m}: {b.get(field)}" for m, b in budget["models"].items()))
    return budget


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
                              "scheduler": record.get("scheduler"),  # None: a sweep from before the record
                              "best_config": best, "best_valid": best_info.get("best_valid"),
                              "best_params": best_info.get("params")}
    return best


def _count_trials(sweep_dir):
    path = os.path.join(sweep_dir, "trials.csv")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return max(0, sum(1 for line in f if line.strip()) - 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="worker of recbole_mkg.compare (use run_recbole_mkg.py)")
    parser.add_argument("--worker", required=True, help="run spec (JSON) written by compare()")
    sys.exit(_worker(parser.parse_args().worker))
