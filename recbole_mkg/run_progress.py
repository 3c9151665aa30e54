"""Epoch-level progress of one side-by-side run, so that a killed run goes on where it stopped.

The side-by-side runner skips (model, seed) runs whose result exists; a run that was killed (a session's
end, a SIGTERM, a lost machine) used to start again from epoch 0, and on ml-1m-kg one faithful
Multi-KG4Rec epoch takes 16-27 minutes on two CPU cores. With a progress file the next invocation of the
same command resumes it after its last validated epoch.

After every validation (RecBole's ``callback_fn``) :class:`RunProgress` writes, atomically, to
``<results_dir>/progress/<model>__seed<seed>.pth``: the epoch, the early-stopping state (best score, steps
without improvement, best validation result), the model's ``state_dict`` and ``other_parameter``, the
optimizer's state, every random generator the training draws from (torch's, numpy's, Python's, CUDA's,
and each training dataloader's own ``torch.Generator``), the per-epoch timings and validation curve so
far, and the path of the best-epoch checkpoint. The weights are restored at the first training epoch of
the new process, after the trainer's own set-up (CrossGMMI's fine-tuning loads its pre-trained file and
builds a fresh optimizer there), so a resumed run continues from the same state: on CPU its final metrics
equal an uninterrupted run's (tested). The file, and a small JSON beside it (epochs done, best validation score so far: the runner's table lists
runs in progress from it), are removed once the run's result is written.

A progress file written with a different configuration is refused (the differing keys are named); keys
that only say where or on what the run happens (paths, device) may differ, so a run may move between
machines. CrossGMMI's ``pretrain_finetune`` goes on with its fine-tuning (phase 1 is not run again: the
progress file holds the fine-tuned weights); a run killed during phase 1 starts again. Not resumable:
multi-process (DDP) runs and ``train_stage: pretrain`` runs; those start again.
"""
import os
import random
import time

import numpy as np
import torch

from recbole_mkg.atomic_io import atomic_write_json
from recbole_mkg.compat.safe_checkpoints import atomic_torch_save, load_checkpoint, to_plain
from recbole_mkg.utils import device_name

#: config keys that only say where or on what a run happens; they may change between sittings
ENVIRONMENT_KEYS = frozenset({
    "checkpoint_dir", "data_path", "feature_dir", "feature_cache_dir", "device", "gpu_id", "use_gpu", "state",
    "show_progress", "log_wandb", "wandb_project", "worker", "nproc", "world_size", "offset", "ip", "port",
    "local_rank", "single_spec", "pretrained_path", "pretrain_save_path", "tensorboard_dir", "log_dir",
    "benchmark_filename",
})

FORMAT = "recbole_mkg.run_progress.v1"


class ProgressFileError(RuntimeError):
    """The progress file cannot be used: unreadable, or not a progress file."""


class ProgressMismatchError(ProgressFileError):
    """The progress file was written by a run with another configuration."""


def config_fingerprint(config):
    """The run-defining part of a RecBole ``Config``: its final dict as plain data, minus
    :data:`ENVIRONMENT_KEYS`."""
    final = to_plain(getattr(config, "final_config_dict", {}))
    return {k: v for k, v in final.items() if k not in ENVIRONMENT_KEYS}


def dataloader_generators(loader, _seen=None):
    """Every ``torch.Generator`` a (possibly nested, e.g. RecBole's knowledge-based) dataloader holds, in a
    fixed order: its own, then those of the dataloaders among its attributes."""
    seen = set() if _seen is None else _seen
    if id(loader) in seen:
        return []
    seen.add(id(loader))
    found = []
    for name in sorted(vars(loader)) if hasattr(loader, "__dict__") else []:
        value = getattr(loader, name)
        if isinstance(value, torch.Generator):
            found.append(value)
        elif isinstance(value, torch.utils.data.DataLoader):
            found.extend(dataloader_generators(value, seen))
    return found


def _numpy_state_to_plain(state):
    kind, keys, pos, has_gauss, cached = state
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _rng_state(train_data):
    state = {
        "torch": torch.get_rng_state(),
        # numpy's and Python's states as tensors and tuples of ints: the file loads with weights_only=True
        "numpy": _numpy_state_to_plain(np.random.get_state()),
        "python": random.getstate(),
        "loaders": [g.get_state() for g in dataloader_generators(train_data)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state, train_data):
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    generators = dataloader_generators(train_data)
    if len(generators) == len(state["loaders"]):
        for generator, saved in zip(generators, state["loaders"]):
            generator.set_state(saved)
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def is_resumable(config):
    """Single-process runs that fine-tune or train (CrossGMMI's ``pretrain_finetune`` resumes its fine-tuning;
    a ``pretrain``-only run does not)."""
    if not config["single_spec"]:
        return False
    return str(config["train_stage"] or "finetune") != "pretrain"


class RunProgress:
    """Saves a run's state after each validated epoch and restores it in a later process.

    Args:
        path (str): the progress file.
        config (Config): the run's config (its fingerprint guards the resume).
        trainer (Trainer): the run's RecBole trainer.
        train_data: its training dataloader (its generators are saved and restored).
        timings (dict): ``{"train": [...], "valid": [...], "valid_scores": [...]}``, filled by the caller
            per epoch; restored in place.
    """

    def __init__(self, path, config, trainer, train_data, timings):
        self.path = path
        self.config = config
        self.trainer = trainer
        self.train_data = train_data
        self.timings = timings
        self.fingerprint = config_fingerprint(config)
        self.resumed_from = None  # the first epoch run in this process, when resumed
        self.finished = False  # the saved run had already stopped (early stopping or its last epoch)
        self.sittings = []  # one entry per process that trained this run: its first epoch and device
        self._pending = None

    # ---- saving ------------------------------------------------------------------------------------
    def save(self, epoch_idx):
        """Write the state after epoch ``epoch_idx`` (called after its validation)."""
        trainer = self.trainer
        state = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": int(epoch_idx),
            "cur_step": int(trainer.cur_step),
            "best_valid_score": float(trainer.best_valid_score),
            "best_valid_result": to_plain(dict(trainer.best_valid_result or {})),
            "best_model_file": trainer.saved_model_file,
            "state_dict": trainer.model.state_dict(),
            "other_parameter": trainer.model.other_parameter(),
            "optimizer": trainer.optimizer.state_dict(),
            "rng": _rng_state(self.train_data),
            "timings": {k: list(v) for k, v in self.timings.items()},
            "sittings": list(self.sittings),
        }
        atomic_torch_save(state, self.path)
        atomic_write_json(self.summary_path, {
            "epochs_done": int(epoch_idx) + 1, "epochs_cap": int(trainer.epochs),
            "best_valid_score": float(trainer.best_valid_score), "valid_metric": str(self.config["valid_metric"]).lower(),
            "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"), "sittings": list(self.sittings)})

    @property
    def summary_path(self):
        """A small JSON beside the progress file (epochs done, best validation so far), for the tables."""
        return os.path.splitext(self.path)[0] + ".json"

    def remove(self):
        for path in (self.path, self.summary_path):
            if os.path.exists(path):
                os.remove(path)

    # ---- restoring ---------------------------------------------------------------------------------
    def restore(self, best_model_file=None):
        """Read the progress file, if any, and prepare the trainer to go on after its epoch: sets the
        trainer's start epoch, early-stopping state and best-checkpoint path, and the timings now; the
        weights, optimizer and random generators at the first training epoch (a hook on the trainer's
        ``_train_epoch``).
        ``best_model_file``: where the best-epoch checkpoint is now, when not where the file says (a Ray
        trial restored elsewhere).

        Returns:
            int or None: the epoch the run goes on from, or None when there is nothing to resume.

        Raises:
            ProgressFileError: the file cannot be read or is not a progress file.
            ProgressMismatchError: the file was written with another configuration.
            FileNotFoundError: the best-epoch checkpoint it names is gone.
        """
        if not os.path.isfile(self.path):
            self.sittings = [self._this_sitting(0)]
            return None
        try:  # on the CPU: random generator states must stay CPU tensors; the optimizer moves its own
            state = load_checkpoint(self.path)
        except Exception as err:  # unreadable: say which file and what to do
            raise ProgressFileError(f"{self.path} cannot be read ({type(err).__name__}: "
                                        f"{str(err).splitlines()[0] if str(err) else ''}); delete it to start the run afresh") from err
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ProgressFileError(f"{self.path} is not a recbole-mkg progress file; delete it to start the run afresh")
        saved = state["fingerprint"]
        # a key the file lacks, now at its default (its value before config files and overrides: RecBole's
        # and the plugin's property files), is a setting added to the plugin after the file was written
        # (e.g. a new model option): the run it describes had that default's behaviour
        defaults = to_plain(getattr(self.config, "internal_config_dict", {}))
        differing = sorted(k for k in set(saved) | set(self.fingerprint)
                           if saved.get(k) != self.fingerprint.get(k)
                           and not (k not in saved and k in defaults and defaults[k] == self.fingerprint.get(k)))
        if differing:
            shown = ", ".join(f"{k}: {state['fingerprint'].get(k)!r} -> {self.fingerprint.get(k)!r}" for k in differing[:8])
            raise ProgressMismatchError(
                f"{self.path} was written by this run with another configuration ({shown}"
                f"{', ...' if len(differing) > 8 else ''}). Rerun with the original configuration to resume it, "
                f"or delete the file to start the run afresh.")
        best_file = best_model_file or state["best_model_file"]
        if state["best_valid_result"] and not os.path.isfile(best_file):
            raise FileNotFoundError(
                f"{self.path} resumes a run whose best-epoch checkpoint {best_file} is gone (checkpoint_dir "
                f"moved?): put it back, or delete the progress file to start the run afresh.")
        trainer = self.trainer
        trainer.start_epoch = state["epoch"] + 1
        trainer.cur_step = state["cur_step"]
        trainer.best_valid_score = state["best_valid_score"]
        trainer.best_valid_result = state["best_valid_result"] or None
        trainer.saved_model_file = best_file
        for key, values in state["timings"].items():
            self.timings.setdefault(key, [])[:] = values
        self.resumed_from = trainer.start_epoch
        self.finished = (trainer.start_epoch >= trainer.epochs or trainer.cur_step > trainer.stopping_step)
        self.sittings = list(state.get("sittings") or []) + [self._this_sitting(trainer.start_epoch)]
        self._pending = state
        if self.finished:  # nothing left to train: the model as it was, for anything that reads it
            self._load_pending()
        else:  # the state goes in at the first training epoch, after the trainer's own set-up in fit
            train_epoch = trainer._train_epoch

            def restoring_train_epoch(*args, **kwargs):
                self._load_pending()
                return train_epoch(*args, **kwargs)

            trainer._train_epoch = restoring_train_epoch
        return trainer.start_epoch

    def _this_sitting(self, first_epoch):
        return {"first_epoch": int(first_epoch), "device": str(self.config["device"]),
                "device_name": device_name(self.config["device"])}

    def _load_pending(self):
        """Load the saved weights, optimizer state and random generators, once (the first training epoch
        of this process calls it through the hook :meth:`restore` installs)."""
        state, self._pending = self._pending, None
        if state is None:
            return
        model = self.trainer.model
        model.load_state_dict(state["state_dict"])
        model.load_other_parameter(state.get("other_parameter"))
        self.trainer.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], self.train_data)
