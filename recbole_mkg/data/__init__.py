"""Data layer: feature files, the multimodal KG dataset, the embedded demo dataset."""
import importlib
import os

from recbole.data import create_dataset as recbole_create_dataset
from recbole.utils import ModelType

from recbole_mkg.data.dataset import KGDataset, KGFilteredDataset, MultimodalKGDataset, has_kg_files, kg_file_names
from recbole_mkg.data.demo import DEMO_NAME, ensure_demo

__all__ = ["create_dataset", "check_dataset_files", "KGDataset", "MultimodalKGDataset", "KGFilteredDataset"]


def check_dataset_files(config, needs_kg):
    """Fail before loading when an atomic file the run reads is missing, naming every missing file and
    how to make it (RecBole's own message names one file and no remedy).

    The run reads ``<dataset>.inter`` (or ``<dataset>.<part>.inter`` for each part of
    ``benchmark_filename``) and, for knowledge-aware models, ``<dataset>.kg`` and ``<dataset>.link``.
    """
    folder, name = config["data_path"], config["dataset"]
    parts = config["benchmark_filename"]
    inters = [f"{name}.{part}.inter" for part in parts] if parts else [f"{name}.inter"]
    wanted = inters + (kg_file_names(name) if needs_kg else [])
    missing = [f for f in wanted if not os.path.isfile(os.path.join(folder, f))]
    if not missing:
        return
    if parts:
        remedy = ("these are a saved split's files (benchmark_filename is set): make the split again with "
                  "`run_recbole_mkg.py --split_only --results_dir=<its results folder>`, or unset benchmark_filename")
    elif set(missing) & set(kg_file_names(name)):
        remedy = (f"model {config['model']} is knowledge-aware and needs the KG files: build the dataset with "
                  f"`python -m dataset_tools` (docs/dataset_tools.md), or pick a general model such as BPR")
    else:
        remedy = "build the dataset with `python -m dataset_tools` (docs/dataset_tools.md)"
    raise FileNotFoundError(f"dataset {name!r} in {folder}: missing {', '.join(missing)}; {remedy}.")


def create_dataset(config):
    """Build the dataset a model needs.

    * plugin models name their dataset class (``model_class.dataset_class``);
    * general (non-KG) models on a dataset with ``.kg``/``.link`` files get :class:`KGFilteredDataset`
      when ``kg_filter_interactions`` is on (default), so they see the KG models' interactions;
    * other knowledge-aware models (RecBole's too) get :class:`KGDataset` (``drop_relations``), unless
      RecBole has a dataset class named for the model;
    * everything else: RecBole's own ``create_dataset``.
    The demo dataset is generated first if missing.
    """
    if config["dataset"] == DEMO_NAME:
        ensure_demo(os.path.dirname(os.path.normpath(config["data_path"])))
    if not os.path.isdir(config["data_path"]):
        raise FileNotFoundError(
            f"dataset folder not found: {config['data_path']} (from data_path + dataset). "
            f"Pass --data_path=<folder that contains {config['dataset']}/> or build it with dataset_tools."
        )
    from recbole_mkg.utils import get_model

    model_class = get_model(config["model"])
    dataset_class = getattr(model_class, "dataset_class", None)
    check_dataset_files(config, needs_kg=dataset_class is not None or config["MODEL_TYPE"] == ModelType.KNOWLEDGE)
    if dataset_class is not None:
        return dataset_class(config)
    if config["MODEL_TYPE"] == ModelType.KNOWLEDGE and not hasattr(
        importlib.import_module("recbole.data.dataset"), config["model"] + "Dataset"
    ):
        return KGDataset(config)
    if (
        config["MODEL_TYPE"] == ModelType.GENERAL
        and config["kg_filter_interactions"]
        and has_kg_files(config)
    ):
        return KGFilteredDataset(config)
    return recbole_create_dataset(config)
