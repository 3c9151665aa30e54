"""Ray Tune sweeps for plugin and RecBole models (Ray >= 2.40 API: ``Tuner``, ``tune.report``).

    python run_recbole_mkg.py --model=KGAT --dataset=ml-100k-kg --data_path=../shared/datasets \\
        --tune=hyper.test --num_samples=16 --scheduler=asha --cpus_per_trial=2 --gpus_per_trial=0.5

* **Search space**: RecBole's hyper-parameter file syntax, one parameter a line, so RecBole users reuse
  their files::

      learning_rate loguniform -8,0          # RecBole/hyperopt: exp(uniform(-8, 0)), natural-log bounds
      embedding_size choice [32,64,128]
      reg_weight uniform 0,0.1
      mess_dropout quniform 0,0.5,0.1
      n_heads randint 1,9                     # Ray extras: randint (upper bound excluded), qrandint,
      layers grid [[64,32],[64,32,16]]        #   qloguniform (log bounds), grid (every value, x num_samples)

  or a YAML / JSON file: RecBole's dict form (``{choice: {embedding_size: [32, 64]}, loguniform: ...}``,
  same semantics) or one entry per parameter, with *values* as bounds::

      learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
      embedding_size: [32, 64, 128]           # a list is a choice
      layers: {grid: [[64, 32], [64, 32, 16]]}
      reg_weight: 1.0e-5                      # a scalar is fixed

* **Sampler**: ``--sampler=random`` (Ray's independent draws, seeded by ``--tune_seed``) or ``stratified``
  (:mod:`recbole_mkg.tune_sampling`: one trial in each of ``num_samples`` strata of every continuous
  parameter, choices balanced; models sharing a parameter line get the same values of it). The
  equal-budget comparison uses ``stratified`` unless told otherwise. The sweep's sampler, seed and trials
  are kept in ``sweep.json``; a resumed sweep reads them back, and a ``--sampler``, ``--tune_seed`` or
  ``--num_samples`` that contradicts them is an error (never a silent switch).
* **Trials** run :func:`_trainable` (train with RecBole's trainer, ``tune.report`` of the validation metric
  after every validation, so ASHA stops bad trials early; then the test metrics of the best epoch).
  Resources per trial: ``cpus_per_trial``, fractional ``gpus_per_trial`` (the trial trains on the GPU Ray
  gives it). ``ray_address`` joins an existing cluster (its nodes need this package installed);
  otherwise a local Ray starts.
* **Failures**: a trial that raises is recorded (status ``ERROR``, its error in the table) and the sweep
  goes on. **Resume**: running the same sweep (same ``tune_dir`` and name) again restores it: finished
  trials are kept, unfinished ones go on after their last validated epoch (after every validation a trial
  writes :mod:`recbole_mkg.run_progress`'s file to its folder ``<sweep>/trial_state/<trial id>/``, beside its
  best-epoch checkpoint; not Ray checkpoints, which a killed sweep could name after Ray deleted them), and
  ASHA's rungs are rebuilt from the trials' recorded reports (Ray restores the scheduler empty). On a
  multi-node Ray cluster, ``tune_dir`` must be on storage every node sees (as Ray requires of it).
* **Output** in ``<tune_dir>/<name>/``: ``trials.csv`` and ``trials.md`` (config, best validation metric,
  epochs, status), ``trials.png`` (every trial's validation curve, and best validation metric against each
  numeric tuned parameter: :mod:`recbole_mkg.tune_chart`), ``best_config.yaml`` (usable with
  ``--config_files``) and ``best.json`` (its validation and test metrics).
"""
import ast
import glob
import json
import logging
import math
import os
import time

import yaml

__all__ = ["parse_search_space", "run_tune", "start_ray", "read_sweep_record", "SPACE_TYPES"]

#: parameter types of the search-space files
SPACE_TYPES = ("choice", "grid", "uniform", "quniform", "loguniform", "qloguniform", "randint", "qrandint")
#: keys of the trial's reports
SCORE, BEST, EPOCH = "valid_score", "best_valid_score", "epoch"


# ---- search space ----------------------------------------------------------------------------------
def _values(text):
    """``[a,b]`` as a Python list; unquoted words are read as YAML scalars (``[bi,gcn]`` -> strings)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = yaml.safe_load(text)
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list such as [0.01,0.005], got {text!r}")
    return list(value)


def _numbers(text, n):
    parts = [p for p in str(text).replace(" ", "").split(",") if p]
    if len(parts) != n:
        raise ValueError(f"expected {n} comma-separated numbers, got {text!r}")
    return [float(p) for p in parts]


def _domain(name, kind, args, log_bounds):
    """A Ray Tune domain. ``log_bounds``: loguniform/qloguniform bounds are natural logs (RecBole/hyperopt)."""
    from ray import tune

    if kind == "choice":
        return tune.choice(args if isinstance(args, list) else _values(args))
    if kind == "grid":
        return tune.grid_search(args if isinstance(args, list) else _values(args))
    nums = args if isinstance(args, list) else None
    if kind == "uniform":
        low, high = nums or _numbers(args, 2)
        return tune.uniform(float(low), float(high))
    if kind == "quniform":
        low, high, q = nums or _numbers(args, 3)
        return tune.quniform(float(low), float(high), float(q))
    if kind in ("loguniform", "qloguniform"):
        values = [float(v) for v in (nums or _numbers(args, 3 if kind == "qloguniform" else 2))]
        low, high = values[:2]
        if log_bounds:
            if 0 < low < high <= 1:
                logging.getLogger(__name__).warning(
                    f"{name}: RecBole's loguniform takes natural-log bounds, so {low},{high} samples "
                    f"{math.exp(low):.4g}..{math.exp(high):.4g}; for 1e-4..1e-2 write loguniform -9.21,-4.61")
            low, high = math.exp(low), math.exp(high)
        if kind == "qloguniform":
            return tune.qloguniform(low, high, values[2])
        return tune.loguniform(low, high)
    if kind == "randint":
        low, high = nums or _numbers(args, 2)
        return tune.randint(int(low), int(high))
    if kind == "qrandint":
        low, high, q = nums or _numbers(args, 3)
        return tune.qrandint(int(low), int(high), int(q))
    raise ValueError(f"parameter {name!r}: unknown type {kind!r}; use one of {', '.join(SPACE_TYPES)}")


def parse_search_space(path):
    """Read a search-space file (RecBole params syntax, YAML or JSON) into a Ray Tune ``param_space``; a
    parameter that RecBole and the plugin do not know (a typo) gets an ``UnknownConfigKeyWarning`` here, once,
    rather than silently in every trial."""
    from recbole_mkg.config import warn_unknown_keys

    space = _read_search_space(path)
    warn_unknown_keys(space, source=f"search-space file {path}:")
    return space


def _read_search_space(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"search-space file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    space = {}
    if path.endswith((".yaml", ".yml", ".json")):
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of parameters")
        if data and all(k in SPACE_TYPES for k in data):  # RecBole's dict form
            for kind, params in data.items():
                for name, args in params.items():
                    space[name] = _domain(name, kind, list(args), log_bounds=True)
            return space
        for name, spec in data.items():
            if isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SPACE_TYPES:
                kind, args = next(iter(spec.items()))
                space[name] = _domain(name, kind, list(args), log_bounds=False)
            elif isinstance(spec, list):
                space[name] = _domain(name, "choice", spec, log_bounds=False)
            else:
                space[name] = spec
        return space
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) < 3:
            raise ValueError(f"{path}:{number}: expected '<name> <type> <values>', got {line!r}")
        name, kind, args = parts[0], parts[1], "".join(parts[2:])
        try:
            space[name] = _domain(name, kind, args, log_bounds=True)
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from err
    if not space:
        raise ValueError(f"{path}: no parameters")
    return space


# ---- the trial -------------------------------------------------------------------------------------
#: the one tuned key of a stratified sweep: the trial's index in the sweep's list of trials
TRIAL_INDEX = "stratified_trial"


def _trial_params(config, points):
    """A trial's parameters: its config, or the stratified trial its index names (Ray would take a list
    value of a preset trial for nested keys, so a stratified sweep grid-searches the index instead)."""
    if TRIAL_INDEX not in config:
        return dict(config)
    rest = {k: v for k, v in config.items() if k != TRIAL_INDEX}
    return {**rest, **points[int(config[TRIAL_INDEX])]}


def _trainable(params, setup=None):
    """One trial: train, ``tune.report`` after every validation (the last one with the test metrics).

    The trial's state lives in its own folder of the sweep, :func:`trial_state_dir` (its
    :class:`~recbole_mkg.run_progress.RunProgress` file after every validation, and the best-epoch
    checkpoint), not in Ray checkpoints: Ray deletes a trial's older checkpoint when it registers a newer one,
    and the sweep's snapshot that names the older one may be the last written before a kill, so a resumed
    sweep could fail a trial with "checkpoint does not exist on storage anymore" (seen in a test). Ray
    restarts an unfinished trial of a resumed sweep (or a retried one) without a checkpoint, and the trial
    goes on after its last validated epoch from its folder."""
    import recbole_mkg  # noqa: F401  (compatibility fixes, in the Ray worker process)
    from ray import tune
    from recbole.utils import init_logger, init_seed

    from recbole_mkg.atomic_io import atomic_write_json
    from recbole_mkg.config import Config
    from recbole_mkg.quick_start import build
    from recbole_mkg.run_progress import RunProgress

    config_dict = dict(setup["config_dict"])
    config_dict.update(_trial_params(params, setup.get("points")))
    state_dir = trial_state_dir(setup["sweep_path"], tune.get_context().get_trial_id())
    config_dict.setdefault("checkpoint_dir", state_dir)
    config_dict.setdefault("show_progress", False)
    if setup["gpus_per_trial"] > 0:  # keep the GPU(s) Ray assigned (RecBole rewrites CUDA_VISIBLE_DEVICES)
        config_dict["use_gpu"] = True
        config_dict["gpu_id"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0")
    else:
        config_dict["use_gpu"] = False
    # the driver's probe config has warned about unknown keys once; the trials' logs need not repeat it
    config = Config(model=setup["model"], dataset=setup["dataset"], config_file_list=setup["config_file_list"],
                    config_dict=config_dict, check_keys=False)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    _, (train_data, valid_data, test_data), _, trainer = build(config)

    bigger = config["valid_metric_bigger"]
    eval_step = max(1, int(config["eval_step"] or 1))
    scores, last = [], {}
    os.makedirs(state_dir, exist_ok=True)
    progress = RunProgress(os.path.join(state_dir, "progress.pth"), config, trainer, train_data,
                           {"valid_scores": scores})
    progress.restore()
    valid_epoch = trainer._valid_epoch

    def recording_valid(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        scores.append(float(score))
        last["result"] = result
        return score, result

    def test_metrics():
        result = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
        return {f"test_{k}": float(v) for k, v in dict(result).items()}

    def report(epoch_idx, score):
        """After the validation and the early-stopping update: the trial's state to its folder, then the
        metrics. The trial's last validation (its epoch cap, or early stopping) also carries the best epoch's
        test metrics: a scheduler may stop the trial at that very report (ASHA's last rung sits at the
        cap), and the sweep's best then still has its test figures."""
        pick = max if bigger else min
        metrics = {SCORE: float(score), BEST: pick(scores), EPOCH: len(scores) * eval_step}
        metrics.update({f"valid_{k}": float(v) for k, v in dict(last["result"]).items()})
        progress.save(epoch_idx)
        atomic_write_json(os.path.join(state_dir, REPORTS_FILE),
                          [{EPOCH: (i + 1) * eval_step, SCORE: s} for i, s in enumerate(scores)])
        if _is_last_validation(trainer, epoch_idx, eval_step):
            metrics.update(test_metrics(), finished=True)
            last["tested"] = True
        tune.report(metrics)

    trainer._valid_epoch = recording_valid
    if progress.finished:  # restarted after its last validation (the sweep was killed before it recorded that)
        best_score = trainer.best_valid_score
    else:
        best_score, _ = trainer.fit(train_data, valid_data, verbose=False, saved=True, show_progress=False,
                                    callback_fn=report)
    if last.get("tested"):  # the last validation's report carried them
        return
    final = {SCORE: float(best_score), BEST: float(best_score), EPOCH: len(scores) * eval_step, "finished": True}
    final.update(test_metrics())
    tune.report(final)


#: a trial's validation reports so far (epoch, score), in its state folder: what a resumed ASHA replays
REPORTS_FILE = "reports.json"


def trial_state_dir(sweep_path, trial_id):
    """The folder of one trial's state (progress file, best-epoch checkpoint, :data:`REPORTS_FILE`):
    ``<sweep>/trial_state/<trial id>``."""
    return os.path.join(sweep_path, "trial_state", str(trial_id))


def _is_last_validation(trainer, epoch_idx, eval_step):
    """Whether the validation just done after epoch ``epoch_idx`` is the trial's last: the next one would be
    past the epoch cap, or RecBole's early stopping (``cur_step > stopping_step``, as
    :func:`recbole.utils.early_stopping` decides) ends the training after it."""
    return epoch_idx + 1 + eval_step > trainer.epochs or trainer.cur_step > trainer.stopping_step


# ---- the sweep -------------------------------------------------------------------------------------


def start_ray(ray_address=None, num_cpus=None, gpus_per_trial=0):
    """Join ``ray_address`` or start a local Ray, unless one is running; True when this call started it
    (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False}
    if ray_address:
        kwargs["address"] = ray_address
    else:
        # Ray runs its workers 15 nice levels below the driver; on a machine shared with other jobs the
        # trials (the whole work of a sweep) then starve. Trials run at the driver's priority unless the
        # user set RAY_worker_niceness.
        os.environ.setdefault("RAY_worker_niceness", "0")
        kwargs["num_cpus"] = num_cpus
        if gpus_per_trial == 0:
            kwargs["num_gpus"] = 0
    ray.init(**kwargs)
    return True


def run_tune(model, dataset, space_file, config_file_list=None, config_dict=None, num_samples=None,
             scheduler=None, grace_period=None, reduction_factor=None, cpus_per_trial=1, gpus_per_trial=0,
             max_concurrent=None, ray_address=None, tune_dir=None, name=None, resume=True, num_cpus=None,
             sampler=None, tune_seed=None, trial_retries=0, log=print):
    """Run (or resume) a sweep; write the trial table, the best config and its test metrics.

    Args:
        model, dataset: as for :func:`recbole_mkg.quick_start.run_recbole_mkg`.
        space_file (str): search-space file (see the module docstring).
        config_file_list, config_dict: fixed settings of every trial.
        num_samples (int): trials to sample (each grid point ``num_samples`` times; default 10).
        sampler (str): ``random`` (Ray's independent draws; the default) or ``stratified`` (one trial per
            stratum of every continuous parameter, choices balanced: :mod:`recbole_mkg.tune_sampling`).
        tune_seed (int): seed of the draws (default 2020; a sweep is reproducible; with ``stratified``,
            models sharing a parameter line get the same values of it).
            A resumed sweep keeps the ``num_samples``, ``sampler`` and ``tune_seed`` of its ``sweep.json``;
            one of them given with another value raises a ``ValueError`` instead of being ignored.
        scheduler (str): ``asha`` (default: stops trials whose validation metric lags, checked after
            every epoch) or ``fifo`` (every trial runs to its end).
        grace_period (int), reduction_factor (float): ASHA's (default 1 epoch and 2): a trial runs at least
            ``grace_period`` epochs; at each rung (grace_period x reduction_factor^k epochs) only the best
            1/reduction_factor of the trials that reached it go on. Recorded in ``sweep.json`` with the
            scheduler; a resumed sweep keeps them, and one given with another value raises ``ValueError``.
        cpus_per_trial, gpus_per_trial (float): resources per trial; GPUs may be fractional (0.5: two
            trials share a GPU).
        max_concurrent (int): trials running at once (default: as many as the resources allow).
        ray_address (str): join this Ray cluster instead of starting a local one.
        tune_dir (str): parent folder of the sweep (default ``results/tune``); name: its folder name.
        resume (bool): restore an existing sweep of the same name instead of starting afresh.
        num_cpus (int): CPUs of a locally started Ray (default: all).
        trial_retries (int): times a failed trial (an exception, a lost worker or node) is started again
            from its latest checkpoint before it counts as failed (default 0: failed at once; a config that
            raises fails the same way every time).

    Returns:
        dict: ``trials`` (rows of the table), ``best_params``, ``best_config`` (path), ``best_valid``,
        ``best_test``, ``path`` (sweep folder).
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from recbole_mkg.atomic_io import atomic_write_json
    from recbole_mkg.config import Config, absolute_paths

    config_file_list = [os.path.abspath(p) for p in (config_file_list or [])]
    base = dict(config_dict or {})
    space = parse_search_space(space_file)
    probe = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=base)
    base = absolute_paths(base, probe)
    metric_name = str(probe["valid_metric"]).lower()
    mode = "max" if probe["valid_metric_bigger"] else "min"
    max_epochs = int(probe["epochs"])
    name = name or f"{probe['model']}-{dataset}"
    storage = os.path.abspath(tune_dir or os.path.join("results", "tune"))
    path = os.path.join(storage, name)
    os.makedirs(storage, exist_ok=True)

    restoring = resume and tune.Tuner.can_restore(path)
    if restoring:  # a resumed sweep keeps its own sampler, trials and scheduler; asking for others is an error
        record = read_sweep_record(path) or {"sampler": "random"}  # no record: from before it, Ray's draws
        _check_resumed(record, path, num_samples=num_samples, sampler=sampler, tune_seed=tune_seed,
                       scheduler=scheduler, grace_period=grace_period, reduction_factor=reduction_factor)
    else:
        record = _new_sweep_record(space, num_samples, sampler, tune_seed)
        record["scheduler"] = scheduler_record(scheduler, grace_period, reduction_factor, max_epochs)
    points = record.get("points")
    started = start_ray(ray_address, num_cpus, gpus_per_trial)
    try:
        setup = {"model": model, "dataset": dataset, "config_file_list": config_file_list, "config_dict": base,
                 "gpus_per_trial": float(gpus_per_trial), "points": points, "sweep_path": path}
        trainable = tune.with_resources(tune.with_parameters(_trainable, setup=setup),
                                        {"cpu": float(cpus_per_trial), "gpu": float(gpus_per_trial)})
        # each trial's reports so far (a new sweep has none: an earlier sweep's trial states move aside below)
        recorded = _recorded_reports(path, log) if restoring else {}
        if restoring:
            log(f"[tune] resuming {path}")
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
            if max_concurrent is not None:
                _limit_restored_sweep(tuner, max_concurrent, log)
            _replay_asha_rungs(tuner, recorded, mode, log)
        else:
            old_state = os.path.join(path, "trial_state")
            if os.path.isdir(old_state):  # an earlier sweep of this name (--no_resume): its trials are not this one's
                kept = f"{old_state}-before-{time.strftime('%Y%m%d-%H%M%S')}"
                os.replace(old_state, kept)
                log(f"[tune] new sweep in {path}: the earlier sweep's trial states moved to {kept}")
            chosen = record["scheduler"]
            if chosen["name"] == "asha":
                # time_attr "epoch": the trial's final (test) report keeps the last epoch, max_t beyond it
                sched = ASHAScheduler(time_attr=EPOCH, max_t=max_epochs + 1, grace_period=chosen["grace_period"],
                                      reduction_factor=chosen["reduction_factor"])
            else:
                sched = FIFOScheduler()
            if points is None:
                param_space, trials = space, record["num_samples"]
            else:  # the fixed values, and the index of the stratified trial
                param_space = {k: v for k, v in space.items() if not _is_tuned(v)}
                param_space[TRIAL_INDEX] = tune.grid_search(list(range(len(points))))
                trials = 1
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                # the limit goes to the generator itself: Ray ignores max_concurrent_trials (with a warning)
                # when search_alg is a BasicVariantGenerator
                tune_config=tune.TuneConfig(metric=SCORE, mode=mode, scheduler=sched, num_samples=trials,
                                            search_alg=BasicVariantGenerator(random_state=record["seed"],
                                                                             max_concurrent=max_concurrent or 0)),
                run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=int(trial_retries), fail_fast=False)),
            )
            atomic_write_json(os.path.join(path, SWEEP_RECORD), record)
        _show_progress(tuner, record, space, points, max_epochs, metric_name, mode, recorded,
                       disable=not probe["show_progress"])
        start = time.time()
        grid = tuner.fit()
        log(f"[tune] sweep finished in {time.time() - start:.1f} s")
        return _write_outputs(grid, path, base, space, metric_name, mode, probe, log, points, max_epochs)
    finally:
        if started:
            ray.shutdown()


def _limit_restored_sweep(tuner, max_concurrent, log):
    """Apply ``--max_concurrent`` to a resumed sweep. Its generator comes back from the sweep's folder with the
    limit it was created with (Ray restores the whole generator state, ``max_concurrent`` included, when
    ``fit`` starts), so the new limit is set now and again after that restore."""
    from ray.tune.search import BasicVariantGenerator

    search_alg = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None), "search_alg", None)
    if not isinstance(search_alg, BasicVariantGenerator):  # e.g. a Ray client tuner: nothing to reach
        log(f"[tune] --max_concurrent={max_concurrent} not applied: this resumed sweep keeps the limit it was "
            f"created with (start a new sweep with --no_resume to change it)")
        return
    limit = int(max_concurrent)
    restore_state = search_alg.set_state

    def set_state(state):
        restore_state(state)
        search_alg.max_concurrent = limit

    search_alg.set_state = set_state
    search_alg.max_concurrent = limit
    log(f"[tune] resumed sweep: at most {limit} trials at once")


def _show_progress(tuner, record, space, points, max_epochs, metric_name, mode, recorded, disable=False):
    """Add a :class:`~recbole_mkg.tune_progress.SweepProgress` bar to the tuner's callbacks (new or
    restored sweep); its budget is the sweep's trials x ``max_epochs``, less the epochs its trials recorded
    (``recorded``: :func:`_recorded_reports`)."""
    from recbole_mkg.tune_progress import SweepProgress

    run_config = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", lambda: None)()
    if run_config is None:  # e.g. a Ray client tuner: Ray's own output only
        return None
    if points is not None:
        n_trials = len(points)
    else:
        grids = [len(v["grid_search"]) for v in space.values() if isinstance(v, dict) and "grid_search" in v]
        n_trials = int(record["num_samples"]) * math.prod(grids)
    epochs_run = {trial: reports[-1][EPOCH] for trial, reports in recorded.items() if reports}
    progress = SweepProgress(n_trials, max_epochs, metric_name, mode, EPOCH, SCORE, recorded=epochs_run, disable=disable)
    run_config.callbacks = list(run_config.callbacks or []) + [progress]
    return progress


def _recorded_reports(path, log):
    """trial id -> its validation reports so far (``[{epoch, valid_score}]``), from the sweep's trial states."""
    out = {}
    for reports_file in sorted(glob.glob(os.path.join(path, "trial_state", "*", REPORTS_FILE))):
        try:
            with open(reports_file, encoding="utf-8") as f:
                out[os.path.basename(os.path.dirname(reports_file))] = json.load(f)
        except (OSError, ValueError) as err:
            log(f"[tune] {reports_file} unreadable ({err}); its trial's reports are left out")
    return out


def _replay_asha_rungs(tuner, recorded, mode, log):
    """Give a resumed sweep's ASHA scheduler the rung records its trials made before the interruption.

    Ray restores the scheduler of a resumed sweep as it was created, with empty rungs. A trial that goes on
    from epoch 17 would then record its epoch-18 score in the rungs at epochs 5 and 10 (ASHA records a
    trial's first report at or past each milestone), and every later trial would be compared there with a
    score from a later epoch (seen on 2026-12-06: a resumed Multi-KG4Rec sweep stopped two trials that were
    ahead of the best trial at the same epoch). So every trial's reports, from its :data:`REPORTS_FILE`
    (written with its progress file, so it holds every epoch the trial goes on after; Ray's own
    ``result.json`` reaches the sweep's folder up to 10 s late), are replayed into the scheduler's bracket
    before ``fit``: each rung then holds the score at its milestone, as in an uninterrupted sweep.
    ``recorded``: :func:`_recorded_reports`. Returns the number of trials replayed (0 for a FIFO sweep)."""
    from types import SimpleNamespace

    from ray.tune.schedulers import AsyncHyperBandScheduler

    scheduler = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None), "scheduler", None)
    if not isinstance(scheduler, AsyncHyperBandScheduler):
        return 0
    if len(scheduler._brackets) != 1:  # the plugin's sweeps use one bracket; which bracket held a trial is not recorded
        log("[tune] resumed sweep: ASHA's rung records not rebuilt (more than one bracket)")
        return 0
    bracket, sign = scheduler._brackets[0], 1.0 if mode == "max" else -1.0
    replayed = 0
    for trial_id, reports in recorded.items():
        for report in reports:
            bracket.on_result(SimpleNamespace(trial_id=trial_id), report[EPOCH], sign * float(report[SCORE]))
        replayed += bool(reports)
    if replayed:
        log(f"[tune] resumed sweep: ASHA's rungs rebuilt from the reports of {replayed} trial(s)")
    return replayed


#: the sweep's sampler, seed, (stratified) trials and scheduler, in its folder: a resumed sweep reads them back
SWEEP_RECORD = "sweep.json"


def _is_tuned(value):
    from ray.tune.search import sample

    return isinstance(value, sample.Domain) or (isinstance(value, dict) and "grid_search" in value)


def read_sweep_record(sweep_dir):
    """The sweep's ``sweep.json`` (sampler, seed, num_samples, stratified trials, scheduler: the scheduler
    only for sweeps since 2026-12-05); ``{}`` when it has none
    (a sweep from before the record, or none yet)."""
    path = os.path.join(sweep_dir, SWEEP_RECORD)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): delete the sweep folder {sweep_dir} to sweep "
                         f"again") from err


SCHEDULERS = ("asha", "fifo")


def scheduler_record(scheduler=None, grace_period=None, reduction_factor=None, max_epochs=None):
    """A new sweep's scheduler and its settings, checked: ``{"name": "asha", "grace_period": int,
    "reduction_factor": float}`` (defaults 1 and 2) or ``{"name": "fifo"}``. ``max_epochs``: the trials'
    epoch cap, which a grace period may not exceed."""
    name = scheduler or "asha"
    if name not in SCHEDULERS:
        raise ValueError(f"--scheduler={name!r}: use one of {', '.join(SCHEDULERS)}")
    if name == "fifo":
        given = [f"--{k}={v}" for k, v in (("grace_period", grace_period), ("reduction_factor", reduction_factor))
                 if v is not None]
        if given:
            raise ValueError(f"{' and '.join(given)}: ASHA's settings, but --scheduler=fifo runs every trial to "
                             f"its end; drop them or use --scheduler=asha")
        return {"name": "fifo"}
    grace = 1 if grace_period is None else grace_period
    factor = 2.0 if reduction_factor is None else float(reduction_factor)
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 1:
        raise ValueError(f"--grace_period={grace!r}: a whole number of epochs, at least 1")
    if max_epochs is not None and grace > max_epochs:
        raise ValueError(f"--grace_period={grace} is more than the trials' epoch cap ({max_epochs}, config "
                         f"'epochs'): ASHA could never stop a trial; lower it, or use --scheduler=fifo")
    if not factor > 1:
        raise ValueError(f"--reduction_factor={reduction_factor!r}: must be above 1 (2 keeps half of the trials "
                         f"at each rung)")
    return {"name": "asha", "grace_period": grace, "reduction_factor": factor}


def describe_scheduler(record):
    """``sweep.json``'s scheduler in words, for tables ("not recorded" for sweeps made before the record)."""
    if not record:
        return "not recorded"
    if record["name"] == "fifo":
        return "FIFO (every trial to its cap)"
    return f"ASHA (grace period {record['grace_period']} epochs, reduction factor {record['reduction_factor']:g})"


def _check_resumed(record, path, **asked):
    """Raise when a flag given for a resumed sweep (not None) differs from what its record says."""
    scheduler = record.get("scheduler") or {}
    recorded = {"num_samples": record.get("num_samples"), "sampler": record.get("sampler"),
                "tune_seed": record.get("seed"), "scheduler": scheduler.get("name"),
                "grace_period": scheduler.get("grace_period"), "reduction_factor": scheduler.get("reduction_factor")}
    clashes = [f"--{flag}={value} (recorded: {recorded[flag]})" for flag, value in asked.items()
               if value is not None and recorded[flag] is not None and value != recorded[flag]]
    if clashes:
        raise ValueError(
            f"the sweep in {path} is resumed with its own settings ({os.path.join(path, SWEEP_RECORD)}), but "
            f"{', '.join(clashes)} asks for others: drop those flags (or give the recorded values) to resume it, "
            f"or use another --tune_name / --tune_dir (or --no_resume) to start a new sweep")


def _new_sweep_record(space, num_samples, sampler, seed):
    """A new sweep's record; None takes the default (10 trials, Ray's random draws, seed 2020)."""
    from recbole_mkg.tune_sampling import SAMPLERS, stratified_trials

    num_samples = 10 if num_samples is None else num_samples
    sampler = sampler or "random"
    if sampler not in SAMPLERS:
        raise ValueError(f"--sampler={sampler!r}: use one of {', '.join(SAMPLERS)}")
    seed = 2020 if seed is None else int(seed)
    record = {"sampler": sampler, "seed": seed, "num_samples": int(num_samples)}
    if sampler == "stratified":
        record["points"] = stratified_trials(space, num_samples, seed)
    return record


def _saved_params(trial_path):
    """A trial's sampled parameters from its ``params.json`` (restored errored trials lack ``config``)."""
    try:
        with open(os.path.join(str(trial_path), "params.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError, TypeError):
        return {}


#: trial statuses whose trial ran its whole budget, the ones the sweep's best is chosen from
COMPLETE = ("finished", "reached the cap")


def _write_outputs(grid, path, base, space, metric_name, mode, probe, log, points=None, max_epochs=None):
    """The sweep's tables (``trials.csv``/``.md``), best config and ``best.json``. A trial is ``finished`` (its
    final report, test metrics included, arrived), ``reached the cap`` (ASHA's last rung stopped it after its
    last epoch: the whole budget ran, no test report; trials record their test metrics with their last
    validation since 2026-12-06, so only older sweeps have these), ``stopped early`` or ``ERROR``; the best is the complete
    trial with the best validation score (a trial stopped early only when none completed)."""
    from recbole_mkg.atomic_io import atomic_write_json, atomic_write_text
    from recbole_mkg.config import PATH_KEYS
    from recbole_mkg.tune_chart import trial_curve, trials_chart

    tuned = sorted(space)
    rows, curves = [], {}
    for result in grid:
        metrics = result.metrics or {}
        trial_config = _trial_params(result.config or _saved_params(result.path), points)
        params = {k: trial_config.get(k) for k in tuned}
        history = result.metrics_dataframe
        best = None
        if history is not None and BEST in history:
            values = history[BEST].dropna()
            if len(values):
                best = float(values.max() if mode == "max" else values.min())
        if result.error is not None:
            status = "ERROR"
        elif metrics.get("finished"):
            status = "finished"
        elif max_epochs is not None and (metrics.get(EPOCH) or 0) >= max_epochs:
            status = "reached the cap"
        else:
            status = "stopped early"
        trial_id = metrics.get("trial_id") or os.path.basename(str(result.path))
        curves[trial_id] = trial_curve(history, metric_name, EPOCH)
        rows.append({"trial": trial_id, "status": status,
                     f"best valid {metric_name}": best, "epochs": metrics.get(EPOCH),
                     **{f"test {k[5:]}": v for k, v in metrics.items() if k.startswith("test_")},
                     "params": params,
                     "error": (str(result.error).strip().splitlines() or [""])[-1][:300] if result.error else ""})
    key = f"best valid {metric_name}"
    done = [r for r in rows if r[key] is not None and r["status"] != "ERROR"]
    reverse = mode == "max"
    done.sort(key=lambda r: r[key], reverse=reverse)
    best_row = next((r for r in done if r["status"] in COMPLETE), done[0] if done else None)

    import csv
    import io

    columns = ["trial", "status", key, "epochs"] + [f"param {p}" for p in tuned]
    test_cols = sorted({c for r in rows for c in r if c.startswith("test ")})
    columns += test_cols + ["error"]
    flat = [{**{c: r.get(c) for c in columns}, **{f"param {p}": r["params"].get(p) for p in tuned}} for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_text(os.path.join(path, "trials.csv"), buf.getvalue())

    md_cols = ["trial", "status", key, "epochs"] + [f"param {p}" for p in tuned] + ["error"]
    lines = [f"Ray Tune sweep of {probe['model']} on {probe['dataset']}: {len(rows)} trials, "
             f"{sum(r['status'] == 'ERROR' for r in rows)} failed; selection on validation {metric_name} ({mode}).",
             "", "| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    for r in sorted(rows, key=lambda r: (r[key] is None, -(r[key] or 0) if reverse else (r[key] or 0))):
        cells = [str(r["trial"]), r["status"], "-" if r[key] is None else f"{r[key]:.4f}", str(r["epochs"] or "-")]
        cells += [str(r["params"].get(p)) for p in tuned] + [r["error"].replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")

    out = {"trials": rows, "path": path, "best_params": None, "best_config": None, "best_valid": None,
           "best_test": None}
    if best_row is not None:
        final = probe.final_config_dict  # typed values (the CLI hands over strings)
        best_config = {k: (v if k in PATH_KEYS else final.get(k, v)) for k, v in base.items()}
        best_config.update(best_row["params"])
        best_config = {k: (v.item() if hasattr(v, "item") else v) for k, v in best_config.items()}
        best_path = os.path.join(path, "best_config.yaml")
        header = (f"# best of a Ray Tune sweep of {probe['model']} on {probe['dataset']} (trial {best_row['trial']}):"
                  f" valid {metric_name} = {best_row[key]:.4f}\n"
                  f"# use: run_recbole_mkg.py --model={probe['model']} --dataset={probe['dataset']}"
                  f" --config_files={best_path}\n")
        atomic_write_text(best_path, header + yaml.safe_dump(best_config, sort_keys=True))
        best_test = {k[5:]: v for k, v in best_row.items() if k.startswith("test ")}
        atomic_write_json(os.path.join(path, "best.json"), {"trial": best_row["trial"], "params": best_row["params"],
                                                            "valid_metric": metric_name, "best_valid": best_row[key],
                                                            "test_result": best_test})
        out.update(best_params=best_row["params"], best_config=best_path, best_valid=best_row[key],
                   best_test=best_test)
        lines += ["", f"Best: trial {best_row['trial']}, valid {metric_name} {best_row[key]:.4f}, params "
                      f"{best_row['params']}; test: {best_test}", f"Config: {best_path}"]
    atomic_write_text(os.path.join(path, "trials.md"), "\n".join(lines) + "\n")
    out["chart"] = trials_chart(
        os.path.join(path, "trials.png"),
        [{"trial": r["trial"], "status": r["status"], "params": r["params"], "best": r[key],
          "curve": curves[r["trial"]]} for r in rows],
        metric_name, tuned, best_trial=best_row["trial"] if best_row else None,
        title=f"Ray Tune sweep of {probe['model']} on {probe['dataset']}")
    if out["chart"]:
        lines.append(f"Chart: {out['chart']}")
    log("\n".join(lines))
    return out
