"""Top-K lists of finished runs, recovered from their checkpoints (for :mod:`recbole_mkg.breakdown`).

Runs of the side-by-side runner made before it saved ``runs/<key>.topk.npz`` (or whose list was lost) still
have their best-epoch checkpoint. :func:`recover_topk` finds it (the record's ``checkpoint`` field, else the
checkpoint in ``checkpoint_dir`` whose saved config is exactly the run's), rebuilds the model on the saved
split, evaluates the test split again through RecBole's trainer with the same :class:`TopKRecorder` as a
training run, and writes the list only when every recorded test metric comes out again (to RecBole's 4
decimals): the list is then the one the run's own test ranked, not an approximation.

    python run_recbole_mkg.py --breakdown --retest_missing --results_dir=results/ml-100k-kg
"""
import contextlib
import glob
import os

from recbole_mkg.breakdown import TopKRecorder, topk_path
from recbole_mkg.compat.safe_checkpoints import CorruptCheckpointError, UntrustedCheckpointError, load_checkpoint

__all__ = ["find_checkpoint", "evaluate_checkpoint", "retest_run", "recover_topk", "RetestMismatchError",
           "UNREADABLE_CHECKPOINT_ERRORS"]

# metrics are recorded rounded to RecBole's metric_decimal_place (4): a difference below this is rounding
TOLERANCE = 1.5e-4


class RetestMismatchError(RuntimeError):
    """The checkpoint does not reproduce the run's recorded test metrics."""


#: what a run's own checkpoint raises when it cannot be evaluated again: listed per run, the others go on
UNREADABLE_CHECKPOINT_ERRORS = (CorruptCheckpointError, UntrustedCheckpointError)


def _run_key(record):
    return f"{record['model']}__seed{record['seed']}"


def _settings(config):
    """A run's config less the keys that say only where it ran (folders, device): those may differ after a
    results folder moved or a run resumed elsewhere."""
    from recbole_mkg.run_progress import ENVIRONMENT_KEYS

    return {k: v for k, v in config.items() if k not in ENVIRONMENT_KEYS}


def find_checkpoint(results_dir, record):
    """The best-epoch checkpoint of ``record``'s run, or None.

    The record's ``checkpoint`` (runs since 2026-12-05; relative to ``results_dir`` or absolute), else the
    newest ``<model class>-*.pth`` in the run's ``checkpoint_dir`` or ``<results_dir>/checkpoints`` whose saved
    config equals the record's (seed included: one file per run; folders and device aside).
    """
    named = record.get("checkpoint")
    if named:
        for path in (os.path.join(results_dir, named), named):
            if os.path.isfile(path):
                return path
    folders = []
    for folder in (record.get("config", {}).get("checkpoint_dir"), os.path.join(results_dir, "checkpoints")):
        if folder and os.path.isdir(folder) and os.path.abspath(folder) not in map(os.path.abspath, folders):
            folders.append(folder)
    candidates = [p for folder in folders for p in glob.glob(os.path.join(folder, f"{record['model_class']}-*.pth"))]
    for path in sorted(candidates, key=os.path.getmtime, reverse=True):
        try:
            saved = load_checkpoint(path, mmap=True).get("config") or {}  # the config only: tensors mapped
        except UNREADABLE_CHECKPOINT_ERRORS:
            continue  # another run's damaged or RecBole-format file: not this run's
        if _settings(saved.get("final_config") or {}) == _settings(record.get("config") or {}):
            return path
    return None


def evaluate_checkpoint(results_dir, checkpoint, record_topk=False):
    """The test metrics of ``checkpoint`` on its run's saved split (moved folders: ``<results_dir>/split``),
    its weights loaded as the runner's ``trainer.evaluate(load_best_model=True)`` loads them. Returns
    ``(result, recorder)``: metric -> value, and the :class:`TopKRecorder` that saw the ranking (None unless
    ``record_topk``)."""
    from recbole_mkg.quick_start import restore

    state = load_checkpoint(checkpoint)
    saved_data = str(state["config"]["config_dict"].get("data_path", ""))
    split = os.path.join(results_dir, "split")
    overrides = {"show_progress": False, "state": "WARNING", "nproc": 1, "world_size": -1}
    if not os.path.isdir(saved_data) and os.path.isdir(split):
        overrides["data_path"] = split  # the results folder moved: its own saved split
    state["config"]["config_dict"].pop("local_rank", None)  # a DDP run's rank: evaluated again in one process
    config, dataset, (_, _, test_data), _, trainer = restore(state, overrides)
    recorder = TopKRecorder(trainer, dataset, max(config["topk"])) if record_topk else None
    with recorder or contextlib.nullcontext():
        result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {k: float(v) for k, v in dict(result).items()}, recorder


def retest_run(results_dir, record, checkpoint, log=print):
    """Evaluate ``checkpoint`` on the saved split's test part, check the metrics against ``record`` and
    write ``runs/<key>.topk.npz``. Returns the file's path.

    Raises:
        RetestMismatchError: a recorded test metric does not come out again (nothing is written).
    """
    key = _run_key(record)
    result, recorder = evaluate_checkpoint(results_dir, checkpoint, record_topk=True)
    recorded = record["test_result"]
    differing = [f"{m} {recorded[m]:.4f} recorded, {result.get(m, float('nan')):.4f} now" for m in sorted(recorded)
                 if not abs(result.get(m, float("nan")) - recorded[m]) <= TOLERANCE]
    if differing:
        raise RetestMismatchError(
            f"{key}: {checkpoint} does not reproduce the run's test metrics ({'; '.join(differing[:4])}): it is "
            f"not this run's best-epoch checkpoint, the data changed, the run trained on another device "
            f"(record: {record.get('device_name') or record.get('device')}; GPU kernels sum in another order), or "
            f"the evaluation changed since (KGIN and MCCLK runs before 2026-12-05: recbole_mkg.compat's "
            f"evaluation fixes; benchmarks/reevaluate.py shows both); no top-K file written. Run it again "
            f"(delete {os.path.join(results_dir, 'runs', key + '.json')})")
    path = recorder.save(topk_path(results_dir, key))
    log(f"[retest] {key}: test metrics reproduced from {checkpoint}; top-K lists written to {path}")
    return path


def recover_topk(results_dir, models=None, seeds=None, log=print):
    """Write the top-K file of every finished run that lacks one and has its checkpoint.

    Returns ``(recovered, missing)``: run keys written, and ``"<key>: <why>"`` for runs left without one
    (no checkpoint found, or one that does not reproduce the recorded metrics).
    """
    from recbole_mkg.results_report import load_records

    records, _, _ = load_records(results_dir, models, seeds)
    recovered, missing = [], []
    for record in records:
        key = _run_key(record)
        if os.path.isfile(topk_path(results_dir, key)):
            continue
        checkpoint = find_checkpoint(results_dir, record)
        if checkpoint is None:
            missing.append(f"{key}: no checkpoint with this run's config in {record.get('config', {}).get('checkpoint_dir')} "
                           f"or {os.path.join(results_dir, 'checkpoints')}")
            continue
        try:
            retest_run(results_dir, record, checkpoint, log=log)
            recovered.append(key)
        except RetestMismatchError as err:
            missing.append(str(err))
        except UNREADABLE_CHECKPOINT_ERRORS as err:  # the run's named file damaged: the other runs go on
            missing.append(f"{key}: {err}")
    for line in missing:
        log(f"[retest] left without a top-K file: {line}")
    return recovered, missing
