"""Shared fixtures: a tiny generated multimodal-KG dataset and configs that point at it."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(os.path.dirname(ROOT), "shared", "datasets")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import recbole_mkg  # noqa: E402,F401  (applies the compatibility fixes)
from recbole_mkg.data.demo import generate  # noqa: E402

TINY = dict(n_users=60, n_items=90, n_directors=12, n_years=4, n_countries=3, inter_per_user=(6, 14),
            visual_dim=12, text_dim=10)


def pytest_configure(config):
    """pytest records warnings with its own filters: add the plugin's filters of RecBole's and PyG's own
    warnings (recbole_mkg.compat.upstream_warnings; tested there in a subprocess) to keep the summary to
    what the project's code raises."""
    from recbole_mkg.compat.upstream_warnings import FILTERS

    for message, category, module in FILTERS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")


def tiny_config(data_root, **overrides):
    """Config dict for the tiny dataset: fast settings, no progress bars, everything under ``data_root``."""
    config = {
        "data_path": str(data_root),
        "checkpoint_dir": os.path.join(str(data_root), "saved"),
        "feature_cache_dir": os.path.join(str(data_root), "cache"),
        "epochs": 1,
        "train_batch_size": 256,
        "eval_batch_size": 512,
        "show_progress": False,
        "state": "ERROR",
        "metrics": ["Recall", "MRR", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "NDCG@20",
        "seed": 2020,
        "embedding_size": 16,
        "kg_embedding_size": 16,
        "layers": [16, 8],
        "n_heads": 2,
        "inner_size": 16,
        "neighbour_seq_len": 6,
        "n_transformer_layers": 1,
        "use_gpu": os.environ.get("MKG_TEST_GPU") == "1",  # MKG_TEST_GPU=1 runs the suite on CUDA
        "log_wandb": False,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """A folder holding ``mkg-tiny/`` (the demo generator at toy size)."""
    root = tmp_path_factory.mktemp("data")
    generate(os.path.join(str(root), "mkg-tiny"), name="mkg-tiny", **TINY)
    return root


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs) shared by a module's in-process sweep tests: ``run_tune`` and ``tune_and_compare`` join
    a running Ray instead of starting their own (a start costs 6-8 s on a 2-core machine). Starting and
    stopping Ray itself is covered by the sweep test that runs in its own process."""
    import ray

    from recbole_mkg.tune import start_ray

    started = start_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def fresh_tiny(tmp_path):
    """A private copy of the tiny dataset that a test may corrupt."""
    generate(os.path.join(str(tmp_path), "mkg-tiny"), name="mkg-tiny", **TINY)
    return tmp_path


def shared_dataset(name):
    path = os.path.join(SHARED_DATASETS, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} not present (real data lives in ../shared/datasets)")
    return path


def bpr_batch(model, n=8):
    """A fixed random BPR batch (user, positive item, negative item) for a RecBole model."""
    import torch
    from recbole.data.interaction import Interaction

    g = torch.Generator().manual_seed(0)
    return Interaction({
        model.USER_ID: torch.randint(1, model.n_users, (n,), generator=g),
        model.ITEM_ID: torch.randint(1, model.n_items, (n,), generator=g),
        model.NEG_ITEM_ID: torch.randint(1, model.n_items, (n,), generator=g),
    })


def assert_gradients_reach(model, loss, names):
    """Backpropagate ``loss`` from zeroed gradients; every named parameter must get a non-zero gradient."""
    model.zero_grad()
    loss.backward()
    params = dict(model.named_parameters())
    for name in names:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name


def assert_full_sort_matches_predict(model, users=(1, 5, 9)):
    """``full_sort_predict`` must give the per-pair ``predict`` scores of every item (eval mode)."""
    import torch
    from recbole.data.interaction import Interaction

    model.eval()
    users = torch.tensor(users)
    n = len(users)
    with torch.no_grad():
        full = model.full_sort_predict(Interaction({model.USER_ID: users})).view(n, model.n_items)
        pairs = Interaction({model.USER_ID: users.repeat_interleave(model.n_items),
                             model.ITEM_ID: torch.arange(model.n_items).repeat(n)})
        per_pair = model.predict(pairs).view(n, model.n_items)
    torch.testing.assert_close(full, per_pair, rtol=1e-5, atol=1e-5)
    model.invalidate_cache()


def build_model(root, model, **overrides):
    """Config, dataset, split and an initialised model on the tiny dataset, seeded as ``run_recbole_mkg``.

    Returns ``(model, config, (train, valid, test))``."""
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    from recbole_mkg.config import Config
    from recbole_mkg.data import create_dataset
    from recbole_mkg.utils import get_model

    config = Config(model=model, dataset="mkg-tiny", config_dict=tiny_config(root, **overrides))
    init_seed(config["seed"], config["reproducibility"])
    splits = data_preparation(config, create_dataset(config))
    init_seed(config["seed"], config["reproducibility"])
    return get_model(model)(config, splits[0]._dataset), config, splits
