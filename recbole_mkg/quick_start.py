"""Run a model end to end, build a Ray Tune objective, and restore a trained model.

Mirrors ``recbole.quick_start`` (which is never imported: it imports ``ray.tune`` at import time and
RecBole's pinned Ray does not install on today's stack), with the plugin's Config/model/trainer look-up.
"""
import logging
import os
from logging import getLogger

import torch.distributed as dist
from recbole.data import data_preparation
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_mkg.compat.safe_checkpoints import load_checkpoint
from recbole_mkg.config import Config
from recbole_mkg.data import create_dataset
from recbole_mkg.utils import busy_cpu_hint, get_model, get_trainer

__all__ = ["run", "run_recbole_mkg", "objective_function", "load_data_and_model", "build"]


def run(model, dataset, config_file_list=None, config_dict=None, saved=True, nproc=1, world_size=-1,
        ip="localhost", port="5678", group_offset=0):
    """RecBole's ``run``: one process, or ``nproc`` processes of distributed (DDP) training.

    As in ``recbole.quick_start.run``: ``world_size`` (default ``nproc``) processes in all, this node
    starting at rank ``group_offset``, rendezvous at ``tcp://ip:port``. The backend is NCCL on CUDA and
    gloo on CPU (config ``ddp_backend``). Returns the result of rank 0 (``None`` on other nodes).
    """
    if nproc == 1 and world_size <= 0:
        return run_recbole_mkg(model=model, dataset=dataset, config_file_list=config_file_list,
                               config_dict=config_dict, saved=saved)
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    mp.spawn(_run_rank, args=(model, dataset, config_file_list, config_dict, saved, queue), nprocs=nproc, join=True)
    return None if queue.empty() else queue.get()


def _run_rank(rank, model, dataset, config_file_list, config_dict, saved, queue):
    import recbole_mkg  # noqa: F401  (compatibility fixes in the spawned process)

    config_dict = dict(config_dict, local_rank=rank)
    run_recbole_mkg(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict,
                    saved=saved, queue=queue)


def build(config):
    """Dataset, split data, model and trainer for a ready ``Config``."""
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    # RecBole names checkpoints <model>-<time to the second>.pth: runs started in the same second would
    # overwrite each other's file; the process id keeps them apart (DDP ranks must share one name).
    if config["single_spec"]:
        root, ext = os.path.splitext(trainer.saved_model_file)
        trainer.saved_model_file = f"{root}-{os.getpid()}{ext}"
    return dataset, (train_data, valid_data, test_data), model, trainer


def run_recbole_mkg(model=None, dataset=None, config_file_list=None, config_dict=None, saved=True, queue=None):
    """Train and test one model on one dataset; returns the validation and test results.

    Args:
        model (str): a plugin model (e.g. ``MultiKG4Rec``) or any RecBole model (e.g. ``BPR``).
        dataset (str): dataset name; ``mkg-demo`` is generated on first use.
        config_file_list (list of str): YAML config files.
        config_dict (dict): parameter overrides (the CLI passes its ``--key=value`` flags here).
        saved (bool): save the best checkpoint and test with it.
    """
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    hint = busy_cpu_hint(config["device"])
    if hint:
        logger.warning(hint)

    dataset_obj, (train_data, valid_data, test_data), model_obj, trainer = build(config)
    logger.info(dataset_obj)
    logger.info(model_obj)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    if not config["single_spec"]:
        dist.barrier()  # rank 0 has written the best checkpoint before any rank loads it
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])

    logger.info("The running environment of this training is as follows:\n" + get_environment(config).draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")

    result = {
        "model": config["model"],
        "dataset": config["dataset"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "checkpoint": trainer.saved_model_file if saved else None,
    }
    if not config["single_spec"]:
        dist.destroy_process_group()
    if config["local_rank"] == 0 and queue is not None:
        queue.put(result)
    return result


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """Objective for hyper-parameter search: train, then return validation and test results.

    Unlike RecBole's, it does not call ``tune.report`` itself; :mod:`recbole_mkg.tune` reports.
    """
    config = Config(config_dict=config_dict, config_file_list=config_file_list)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
    init_logger(config)
    logging.basicConfig(level=logging.ERROR)
    _, (train_data, valid_data, test_data), _, trainer = build(config)
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, verbose=False, saved=saved)
    test_result = trainer.evaluate(test_data, load_best_model=saved)
    return {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
    }


def load_data_and_model(model_file, trusted=False, config_dict=None):
    """Restore a trained model with its dataset and split.

    Args:
        model_file (str): a checkpoint written by a plugin run (loads with ``weights_only=True``).
        trusted (bool): also accept RecBole-format checkpoints, which pickle the Config class; unpickling
            can run code, so only for files you trust.
        config_dict (dict): overrides on top of the saved config (e.g. ``{"data_path": ...}`` when the
            dataset moved).

    Returns:
        tuple: ``(config, model, dataset, train_data, valid_data, test_data)``.
    """
    checkpoint = load_checkpoint(model_file, map_location="cpu", trusted=trusted)
    config, dataset, (train_data, valid_data, test_data), model, _ = restore(checkpoint, config_dict)
    return config, model, dataset, train_data, valid_data, test_data


def restore(checkpoint, config_dict=None):
    """Config, dataset, split, model (the checkpoint's weights and caches loaded) and trainer of a loaded
    checkpoint (:func:`recbole_mkg.compat.safe_checkpoints.load_checkpoint`); ``config_dict`` overrides the
    saved config. Returns ``(config, dataset, (train, valid, test), model, trainer)``."""
    saved = checkpoint["config"]
    overrides = dict(saved["config_dict"])
    overrides.update(config_dict or {})
    config = Config(model=saved["model"], dataset=saved["dataset"], config_dict=overrides)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    getLogger().info(config)
    dataset, splits, model, trainer = build(config)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return config, dataset, splits, model, trainer
