"""The plugin's ``Config``: finds plugin models, merges ``recbole_mkg/properties/*.yaml``.

Merging order (later wins), the way RecBole merges its own:
RecBole's properties (overall, model, dataset, quick-start type) -> the plugin's ``overall.yaml`` ->
the plugin's ``dataset/<dataset>.yaml`` -> the plugin's ``model/<Model>.yaml`` -> config files ->
``config_dict`` (the CLI passes its ``--key=value`` flags here).

Differences from RecBole's ``Config``:

* ``sys.argv`` is never read (RecBole reads any ``--key=value`` there, pytest's flags included): the CLI
  parses its flags and hands them over as ``config_dict``.
* distributed training may use the ``gloo`` backend on CPU (``ddp_backend``), where RecBole hard-codes
  NCCL and CUDA devices.
* a key that no properties file of RecBole or of the plugin declares (a typo: ``--learning_rat=0.01``,
  ``--epoch=5``) gives an :class:`UnknownConfigKeyWarning` naming the key and the nearest known ones, where
  RecBole would silently ignore it. A warning, not an error: RecBole lets custom models read their own keys.
"""
import difflib
import functools
import glob
import os
import warnings

import torch
import yaml
from recbole.config.configurator import Config as RecBoleConfig

from recbole_mkg.model.layers import PROPAGATION_GRAPHS
from recbole_mkg.utils import canonical_model_name, get_model

#: torch.compile modes that ``fusion_compile`` accepts
FUSION_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

PROPERTIES_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "properties")

#: keys RecBole sets or reads at run time that no properties file declares (distributed set-up, names it
#: fills in, keys a few RecBole models read with a default)
RUNTIME_KEYS = frozenset({
    "model", "dataset", "device", "config_files", "local_rank", "world_size", "nproc", "ip", "port", "offset",
    "single_spec", "MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "valid_neg_sample_args", "test_neg_sample_args",
    "cin", "contrast", "encoding", "eta", "feature_num", "has_residual", "norm", "sim", "tail_ratio",
    "token_num_threshold", "use_filter", "xgb_early_stopping_rounds",
})


class UnknownConfigKeyWarning(UserWarning):
    """A config key that neither RecBole nor recbole-mkg declares (``warnings.filterwarnings`` can silence it)."""


@functools.lru_cache(maxsize=1)
def known_config_keys():
    """Every key that a properties file of RecBole (overall, every model, dataset and quick-start type) or of
    the plugin declares, plus :data:`RUNTIME_KEYS`. Read once per process (about 150 small YAML files)."""
    import recbole

    folders = (os.path.join(os.path.dirname(recbole.__file__), "properties"), PROPERTIES_DIR)
    keys = set(RUNTIME_KEYS)
    for folder in folders:
        for path in glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True):
            try:
                with open(path, encoding="utf-8") as f:
                    content = yaml.safe_load(f)
            except (OSError, yaml.YAMLError):  # a file this check cannot read must not stop the run it checks
                continue
            if isinstance(content, dict):
                keys.update(content)
    return frozenset(keys)


def warn_unknown_keys(keys, source="config"):
    """An :class:`UnknownConfigKeyWarning` for each of ``keys`` that :func:`known_config_keys` lacks, with the
    nearest known keys. Returns the unknown keys."""
    known = known_config_keys()
    unknown = sorted(k for k in keys if k not in known)
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        warnings.warn(f"{source} key '{key}' is not a setting of RecBole or recbole-mkg, so no model, dataset or "
                      f"trainer of theirs reads it{hint} (a key for your own model: ignore this warning)",
                      UnknownConfigKeyWarning, stacklevel=3)
    return unknown

#: config settings that name folders; runs in other folders (worker processes, Ray trials) need them absolute
PATH_KEYS = ("data_path", "checkpoint_dir", "feature_cache_dir", "feature_dir")


def absolute_paths(config_dict, config=None):
    """A copy of ``config_dict`` whose folder settings (:data:`PATH_KEYS`) are absolute, for runs that work
    in other folders. With ``config`` (the resolved :class:`Config`), folders set in config files count
    too: ``data_path`` then becomes the dataset's parent folder (RecBole appends the dataset's name), and
    ``feature_cache_dir`` / ``feature_dir`` come from it; ``checkpoint_dir`` only from ``config_dict`` (a
    Ray trial keeps its own)."""
    out = dict(config_dict or {})
    for key in PATH_KEYS:
        if isinstance(out.get(key), str):
            out[key] = os.path.abspath(out[key])
    if config is not None:
        out["data_path"] = os.path.abspath(os.path.dirname(os.path.normpath(config["data_path"])))
        for key in ("feature_cache_dir", "feature_dir"):
            value = config[key] if key in config else None
            if isinstance(value, str) and value:
                out[key] = os.path.abspath(value)
    return out


class Config(RecBoleConfig):
    """RecBole's ``Config`` with the plugin's models, checked values and a warning for unknown keys
    (``check_keys=False`` skips that warning: a Ray trial's config, which the sweep's driver checked once)."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, check_keys=True):
        if isinstance(model, str):
            model = canonical_model_name(model)
        for path in config_file_list or []:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"config file not found: {path} (given in config_file_list / --config_files)")
        super().__init__(model, dataset, config_file_list, config_dict)
        self._validate()
        if check_keys:
            warn_unknown_keys(self.external_config_dict)

    #: key -> (types, predicate, what the value must be)
    CHECKS = {
        "epochs": (int, lambda v: v >= 1, "a positive integer"),
        "train_batch_size": (int, lambda v: v >= 1, "a positive integer"),
        "eval_batch_size": (int, lambda v: v >= 1, "a positive integer"),
        "eval_step": (int, lambda v: v >= 0, "a non-negative integer"),
        "stopping_step": (int, lambda v: v >= 1, "a positive integer"),
        "learning_rate": ((int, float), lambda v: v > 0, "a positive number"),
        "weight_decay": ((int, float), lambda v: v >= 0, "a non-negative number"),
        "reg_weight": ((int, float), lambda v: v >= 0, "a non-negative number"),
        "embedding_size": (int, lambda v: v >= 1, "a positive integer"),
        "mess_dropout": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "hidden_dropout": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "attn_dropout": ((int, float), lambda v: 0 <= v < 1, "a number in [0, 1)"),
        "layers": (list, lambda v: all(isinstance(x, int) and x >= 1 for x in v), "a list of positive integers"),
        "seed": (int, lambda v: True, "an integer"),
        "fusion_sample_ratio": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1] (1 = the paper's model)"),
        "fusion_compile": (str, lambda v: v in FUSION_COMPILE_MODES,
                           f"one of {', '.join(FUSION_COMPILE_MODES)} (torch.compile modes), or null (eager)"),
        "propagation_graph": (str, lambda v: v in PROPAGATION_GRAPHS,
                              "ckg (the papers: the collaborative KG) or interactions (user-item edges only)"),
    }

    def _validate(self):
        """Clear errors for the common keys whose bad values RecBole reports late or obscurely."""
        for key, (types, ok, what) in self.CHECKS.items():
            if key not in self.final_config_dict or self.final_config_dict[key] is None:
                continue
            value = self.final_config_dict[key]
            if isinstance(value, bool) or not isinstance(value, types) or not ok(value):
                raise ValueError(f"config '{key}' must be {what}, got {value!r}")

    def _load_cmd_line(self):
        """Never read ``sys.argv``; see the module docstring."""
        return dict()

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
            if model is None:
                raise KeyError("model must be given: as an argument, in a config file or in config_dict")
        if isinstance(model, str):
            final_model = canonical_model_name(model)
            final_model_class = get_model(final_model)
        else:
            final_model_class, final_model = model, model.__name__
        if dataset is None:
            dataset = self.external_config_dict.get("dataset")
            if dataset is None:
                raise KeyError("dataset must be given: as an argument, in a config file or in config_dict")
        return final_model, final_model_class, dataset

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        for path in (
            os.path.join(PROPERTIES_DIR, "overall.yaml"),
            os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"),
            os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"),
        ):
            if os.path.isfile(path):
                self._update_internal_config_dict(path)

    def _init_device(self):
        """RecBole's device set-up, plus CPU/gloo distributed training (``ddp_backend``)."""
        distributed = "local_rank" in self.final_config_dict
        backend = self.final_config_dict.get("ddp_backend") or "auto"
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() and self.final_config_dict["use_gpu"] else "gloo"
        if not distributed or backend == "nccl":
            return super()._init_device()
        cfg = self.final_config_dict
        cfg["gpu_id"] = str(cfg["gpu_id"]) if not isinstance(cfg["gpu_id"], tuple) else ",".join(map(str, cfg["gpu_id"]))
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend=backend,
                rank=cfg["local_rank"] + cfg["offset"],
                world_size=cfg["world_size"],
                init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
            )
        cfg["device"] = torch.device("cpu")
        cfg["single_spec"] = False
        if cfg["local_rank"] != 0:
            cfg["state"] = "error"
            cfg["show_progress"] = False
            cfg["verbose"] = False

