"""Data layer: feature files, the multimodal KG dataset, the embedded demo dataset."""
import importlib
import os

from recbole.data import create_dataset as recbole_create_dataset
from recbole.utils import ModelType

from recbole_mkg.data.dataset import KGDataset, KGFilteredDataset, MultimodalKGDataset, has_kg_files
from recbole_mkg.data.demo import DEMO_NAME, ensure_demo

__all__ = ["create_dataset", "KGDataset", "MultimodalKGDataset", "KGFilteredDataset"]


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
