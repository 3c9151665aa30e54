"""Checkpoints that ``torch.load(..., weights_only=True)`` accepts, written atomically.

RecBole 1.2.1 saves ``{"config": <Config object>, ...}``. Since torch 2.6 ``torch.load`` defaults to
``weights_only=True`` and refuses the pickled ``Config`` (``evaluate(load_best_model=True)`` fails), and
unpickling arbitrary classes can run code. The fix replaces ``Trainer._save_checkpoint`` and
``Trainer.resume_checkpoint`` for every RecBole trainer:

* the config is stored as plain data (``{"model", "dataset", "config_dict", "final_config"}``), numpy
  scalars as Python numbers, so the file loads with ``weights_only=True`` on any torch >= 2.0;
* the file is written to a temporary name in the same folder and renamed, so a crash never leaves a
  half-written checkpoint;
* :func:`load_checkpoint` loads a RecBole-format (pickled-Config) checkpoint only when the caller opts in
  with ``trusted=True``.
"""
import enum
import os
import pickle
import pickletools
import zipfile

import numpy as np
import torch

from recbole_mkg.atomic_io import atomic_open

PLAIN_CONFIG_FORMAT = "recbole_mkg.plain_config.v1"


class UntrustedCheckpointError(RuntimeError):
    """Raised when a checkpoint needs full unpickling and the caller did not opt in."""


class CorruptCheckpointError(ValueError):
    """Raised when a file is not a readable PyTorch checkpoint (truncated, damaged or another format)."""


def _corrupt(path, detail):
    return CorruptCheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({os.path.getsize(path)} bytes; {detail}): the file is "
        f"truncated or damaged, or not a checkpoint at all. Point to another checkpoint, or train again to "
        f"write it anew (the plugin writes checkpoints atomically, so a crash does not leave half a file)."
    )


def _is_torch_file(path):
    """True for a torch zip archive or a legacy torch pickle (protocol 2-5 header)."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _pickled_classes(path):
    """The classes a torch zip archive's pickle names, read from its opcodes (nothing is executed; the
    zip's CRC is checked): a sorted list, False when the pickle does not parse, None for a legacy file."""
    if not zipfile.is_zipfile(path):
        return None
    names = set()
    try:
        with zipfile.ZipFile(path) as archive:
            member = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            for opcode, arg, _ in pickletools.genops(archive.read(member)):
                if opcode.name == "GLOBAL" and not str(arg).startswith(("torch", "collections OrderedDict")):
                    names.add(str(arg).replace(" ", "."))
    except (StopIteration, ValueError, zipfile.BadZipFile, EOFError, UnicodeDecodeError):
        return False
    return sorted(names)


def to_plain(value):
    """Recursively turn a config value into data that ``weights_only`` unpickling accepts."""
    if isinstance(value, np.generic):  # first: np.float64 is also a float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def plain_config(config):
    """A plain-data snapshot of a RecBole ``Config`` that is enough to rebuild it."""
    return {
        "format": PLAIN_CONFIG_FORMAT,
        "model": config["model"],
        "dataset": config["dataset"],
        "config_dict": to_plain(getattr(config, "external_config_dict", {})),
        "final_config": to_plain(getattr(config, "final_config_dict", {})),
    }


def atomic_torch_save(obj, path):
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place."""
    with atomic_open(path, "wb", suffix=".pth") as f:
        torch.save(obj, f)


def load_checkpoint(path, map_location="cpu", trusted=False, mmap=False):
    """Load a checkpoint; the config comes back as plain data (see :func:`plain_config`).

    Args:
        path (str): checkpoint file.
        map_location: as for ``torch.load``.
        trusted (bool): allow full unpickling, needed for RecBole-format checkpoints that pickle the
            ``Config`` class. Only for files you trust: unpickling can run arbitrary code.
        mmap (bool): map the tensors' storage instead of reading it (torch zip archives; legacy files are
            read whole): for a caller that reads only the config, e.g. when searching checkpoints.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if not _is_torch_file(path):
        raise _corrupt(path, "neither a torch zip archive nor a legacy torch pickle")
    load_kwargs = {"map_location": map_location, "mmap": bool(mmap) and zipfile.is_zipfile(path)}
    try:
        checkpoint = torch.load(path, weights_only=True, **load_kwargs)
    except pickle.UnpicklingError as err:
        classes = _pickled_classes(path)
        if classes is False:
            raise _corrupt(path, "its pickled data does not parse") from err
        if not trusted:
            named = f" ({', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''})" if classes else ""
            raise UntrustedCheckpointError(
                f"{path} is not a plain-data checkpoint: it pickles Python objects{named}, as RecBole's own "
                f"checkpoints do with their Config. Loading it can run code: if you trust the file, "
                f"pass trusted=True (CLI: --trust_checkpoint=True)."
            ) from err
        checkpoint = torch.load(path, weights_only=False, **load_kwargs)
    except (EOFError, zipfile.BadZipFile, UnicodeDecodeError, ValueError) as err:
        raise _corrupt(path, f"reading it failed: {type(err).__name__} {err}".rstrip()) from err
    except RuntimeError as err:
        if "PytorchStreamReader" not in str(err):
            raise  # e.g. a CUDA checkpoint on a machine without CUDA: torch's own message says what to do
        raise _corrupt(path, str(err).splitlines()[0].split(". ")[0]) from err
    config = checkpoint.get("config") if isinstance(checkpoint, dict) else None
    if config is not None and not (isinstance(config, dict) and config.get("format") == PLAIN_CONFIG_FORMAT):
        checkpoint["config"] = plain_config(config)
    return checkpoint


def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    saved_model_file = kwargs.pop("saved_model_file", self.saved_model_file)
    state = {
        "config": plain_config(self.config),
        "epoch": int(epoch),
        "cur_step": int(self.cur_step),
        "best_valid_score": float(self.best_valid_score),
        "state_dict": self.model.state_dict(),
        "other_parameter": self.model.other_parameter(),
        "optimizer": self.optimizer.state_dict(),
    }
    atomic_torch_save(state, saved_model_file)
    if verbose:
        from recbole.utils import set_color

        self.logger.info(set_color("Saving current", "blue") + f": {saved_model_file}")


def _resume_checkpoint(self, resume_file):
    resume_file = str(resume_file)
    self.saved_model_file = resume_file
    checkpoint = load_checkpoint(
        resume_file, map_location=self.device, trusted=bool(self.config["trust_checkpoint"])
    )
    self.start_epoch = checkpoint["epoch"] + 1
    self.cur_step = checkpoint["cur_step"]
    self.best_valid_score = checkpoint["best_valid_score"]
    if checkpoint["config"]["model"].lower() != self.config["model"].lower():
        self.logger.warning(
            "Architecture configuration given in config file is different from that of checkpoint. "
            "This may yield an exception while state_dict is being loaded."
        )
    self.model.load_state_dict(checkpoint["state_dict"])
    self.model.load_other_parameter(checkpoint.get("other_parameter"))
    self.optimizer.load_state_dict(checkpoint["optimizer"])
    self.logger.info(f"Checkpoint loaded. Resume training from epoch {self.start_epoch}")


def apply():
    from recbole.trainer.trainer import Trainer

    Trainer._save_checkpoint = _save_checkpoint
    Trainer.resume_checkpoint = _resume_checkpoint
