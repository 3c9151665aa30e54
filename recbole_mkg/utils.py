"""Model and trainer look-up: the plugin's classes first, then RecBole's (RecBole-GNN style); the name of
the device a run or benchmark ran on; a model entry's base model; a process's peak memory."""
import importlib
import os
import platform
import sys

import torch
from recbole.utils import get_model as recbole_get_model
from recbole.utils import get_trainer as recbole_get_trainer

#: sub-packages of ``recbole_mkg.model`` searched for a model file named ``<model_name.lower()>.py``
PLUGIN_MODEL_SUBMODULES = ["knowledge_aware_recommender"]

#: other accepted spellings of model names
MODEL_ALIASES = {"CrossGMMI-DUKGLR": "CrossGMMI", "Multi-KG4Rec": "MultiKG4Rec"}


class UnknownModelError(ValueError):
    """The model name is neither a plugin model nor a RecBole model."""


def canonical_model_name(model_name):
    return MODEL_ALIASES.get(model_name, model_name)


def plugin_model_names():
    """Names of the models the plugin provides (its own classes, not RecBole's)."""
    names = []
    for submodule in PLUGIN_MODEL_SUBMODULES:
        package = importlib.import_module(f"recbole_mkg.model.{submodule}")
        names.extend(getattr(package, "__all__", []))
    return sorted(names)


def get_model(model_name):
    """Return the model class named ``model_name``: plugin first, then RecBole.

    Raises:
        UnknownModelError: with the list of plugin models, when no model of that name exists.
    """
    model_name = canonical_model_name(model_name)
    for submodule in PLUGIN_MODEL_SUBMODULES:
        module_path = f"recbole_mkg.model.{submodule}.{model_name.lower()}"
        if importlib.util.find_spec(module_path) is not None:
            module = importlib.import_module(module_path)
            if hasattr(module, model_name):
                return getattr(module, model_name)
    try:
        return recbole_get_model(model_name)
    except (ValueError, AttributeError, ModuleNotFoundError) as err:
        # (an unknown name makes RecBole import its exlib package, which needs xgboost/lightgbm)
        raise UnknownModelError(
            f"unknown model {model_name!r}: it is neither a recbole-mkg model "
            f"({', '.join(plugin_model_names())}) nor a RecBole model "
            f"(see https://recbole.io/model_list.html; names are case-sensitive, e.g. 'LightGCN')."
        ) from err


def get_trainer(model_type, model_name):
    """Return ``<model_name>Trainer`` from ``recbole_mkg.trainer`` if it exists, else RecBole's choice."""
    model_name = canonical_model_name(model_name)
    plugin_trainers = importlib.import_module("recbole_mkg.trainer")
    trainer = getattr(plugin_trainers, model_name + "Trainer", None)
    if trainer is not None:
        return trainer
    return recbole_get_trainer(model_type, model_name)


def device_name(device):
    """What the run ran on, for result tables: the GPU's name (``torch.cuda.get_device_name``) on CUDA,
    else the processor and the logical CPU count, e.g. ``'x86_64, 2 logical CPUs'``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def busy_cpu_hint(device, environ=None, load_average=None, cpu_count=None, threads=None):
    """A warning for a CPU run whose torch threads outnumber the cores other jobs leave free, else None.

    Torch starts one thread per core; beside other busy processes its OpenMP threads wait on each other at
    every barrier (measured on 2 cores: a Multi-KG4Rec epoch on mkg-demo took 16-17 s with 2 threads beside
    a training job, 1.4-1.6 s with 1). Nothing to say on a GPU, when ``OMP_NUM_THREADS`` is set (the user,
    the side-by-side runner or Ray chose), or where the load average is unknown. The arguments other than
    ``device`` default to this machine's (``os.environ``, 1-minute load average, CPU count, torch threads)."""
    environ = os.environ if environ is None else environ
    if torch.device(device).type != "cpu" or "OMP_NUM_THREADS" in environ:
        return None
    if load_average is None:
        try:
            load_average = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            return None
    cpus = cpu_count or os.cpu_count() or 1
    threads = threads or torch.get_num_threads()
    idle = int(cpus - load_average + 0.5)
    free = max(1, idle)
    if threads <= free:
        return None
    left = f"about {idle} idle" if idle > 0 else "none idle"
    return (f"the machine is busy (load average {load_average:.1f} on {cpus} CPUs, {left}) and torch "
            f"uses {threads} threads: oversubscribed threads can make training 10x slower. Set "
            f"OMP_NUM_THREADS={free} before starting (or stop the other jobs).")


def model_of(entry):
    """``"MultiKG4Rec@text"`` -> ``"MultiKG4Rec"``: an entry ``Model@label`` is a named variant of a model
    (its own row, its own ``--model_configs`` file); a plain name is itself."""
    name, _, label = entry.partition("@")
    if not name or (entry.count("@") and not label):
        raise ValueError(f"model entry {entry!r}: write a model name, or Model@label for a variant")
    return name


def peak_rss_mb():
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
