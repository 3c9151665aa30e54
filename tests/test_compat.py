"""Each compatibility fix, with a test that fails without it."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recbole_mkg.compat import numpy2_aliases, safe_checkpoints, scipy_dok_update
from recbole_mkg.compat.safe_checkpoints import CorruptCheckpointError, UntrustedCheckpointError, load_checkpoint
from recbole_mkg.config import Config
from recbole_mkg.quick_start import run_recbole_mkg
from tests.conftest import ROOT, tiny_config


def test_numpy2_aliases_let_config_build(tiny_root):
    # RecBole's Config.compatibility_settings reads np.float_ (removed in NumPy 2)
    from recbole.config.configurator import Config as RecBoleConfig

    assert RecBoleConfig.compatibility_settings is numpy2_aliases._compatibility_settings
    for name in ("float_", "float", "long", "unicode_", "complex_", "bool8"):
        assert hasattr(np, name), name
    config = Config(model="BPR", dataset="mkg-tiny", config_dict=tiny_config(tiny_root))
    assert config["model"] == "BPR"
    # RecBole's metrics use np.float as a dtype
    assert np.zeros(2, dtype=np.float).dtype == np.float64


def test_scipy_dok_update_restored_and_equivalent():
    assert hasattr(sp.dok_matrix, "_update")
    a = sp.dok_matrix((4, 4), dtype=np.float32)
    a._update({(0, 1): 1.0, (2, 3): 2.5, (3, 0): -1.0})
    dense = a.toarray()
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[0, 1], expected[2, 3], expected[3, 0] = 1.0, 2.5, -1.0
    np.testing.assert_array_equal(dense, expected)
    assert scipy_dok_update._update is sp.dok_matrix._update or "_update" in vars(sp.dok_matrix)


def test_lightgcn_builds_its_adjacency_with_dok_update(tiny_root):
    # LightGCN.get_norm_adj_mat calls dok_matrix._update, removed in SciPy >= 1.15
    result = run_recbole_mkg("LightGCN", "mkg-tiny", config_dict=tiny_config(tiny_root), saved=False)
    assert result["test_result"]["ndcg@20"] >= 0


def test_checkpoint_is_plain_data_and_loads_weights_only(tiny_root):
    result = run_recbole_mkg("BPR", "mkg-tiny", config_dict=tiny_config(tiny_root), saved=True)
    path = result["checkpoint"]
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # fails on a pickled Config
    assert checkpoint["config"]["model"] == "BPR"
    assert checkpoint["config"]["config_dict"]["embedding_size"] == 16
    assert isinstance(checkpoint["best_valid_score"], float)


def test_recbole_format_checkpoint_needs_explicit_trust(tiny_root, tmp_path):
    config = Config(model="BPR", dataset="mkg-tiny", config_dict=tiny_config(tiny_root))
    path = str(tmp_path / "recbole_format.pth")
    torch.save({"config": config, "state_dict": {}, "epoch": 0}, path)  # what RecBole 1.2.1 writes
    with pytest.raises(UntrustedCheckpointError, match=r"Python objects \(.*recbole_mkg\.config\.Config[,)].*trusted=True"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, trusted=True)
    assert loaded["config"]["model"] == "BPR"  # converted to plain data


def _damaged_copies(tmp_path):
    """A good checkpoint's bytes, and files that are not readable checkpoints, each by its damage."""
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(4)}, "epoch": 3}, good)
    data = good.read_bytes()
    pickle_at = data.index(b"data.pkl") + len(b"data.pkl") + 64  # inside the pickle stream (stored, not compressed)
    damaged_pickle = bytearray(data)
    damaged_pickle[pickle_at:pickle_at + 4] = b"\xff" * 4
    return data, {"empty": b"", "text": b"not a checkpoint\n", "truncated": data[: len(data) // 2],
                  "damaged pickle": bytes(damaged_pickle)}


@pytest.mark.parametrize("trusted,mmap", [(False, False), (True, False), (False, True)])
def test_a_damaged_checkpoint_is_named_as_such_not_as_untrusted(tmp_path, trusted, mmap):
    """Also when the tensors are mapped instead of read (``mmap=True``: how checkpoint searches read configs)."""
    data, damaged = _damaged_copies(tmp_path)
    good = load_checkpoint(str(tmp_path / "good.pth"), mmap=mmap)
    assert good["epoch"] == 3 and torch.equal(good["state_dict"]["w"], torch.ones(4))
    for what, content in damaged.items():
        path = tmp_path / f"{what.replace(' ', '_')}.pth"
        path.write_bytes(content)
        with pytest.raises(CorruptCheckpointError, match=rf"{path.name} is not a readable PyTorch checkpoint "
                                                         rf"\({len(content)} bytes.*truncated or damaged"):
            load_checkpoint(str(path), trusted=trusted, mmap=mmap)


def test_mapped_loading_reads_legacy_files_whole(tmp_path):
    legacy = tmp_path / "legacy.pth"
    torch.save({"epoch": 2, "w": torch.arange(3.0)}, legacy, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(str(legacy), mmap=True)  # torch.load(mmap=True) refuses these: read whole
    assert loaded["epoch"] == 2 and torch.equal(loaded["w"], torch.arange(3.0))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "model.pth")
    safe_checkpoints.atomic_torch_save({"a": torch.ones(2)}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        safe_checkpoints.atomic_torch_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))  # old file intact
    assert os.listdir(tmp_path) == ["model.pth"]  # no temporary left behind


def test_plugin_never_imports_recbole_quick_start_or_ray():
    code = (
        "import sys, recbole_mkg.quick_start, recbole_mkg.trainer, recbole_mkg.data; "
        "import run_recbole_mkg; "
        "bad = [m for m in ('recbole.quick_start', 'ray') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_ignores_sys_argv(tiny_root, monkeypatch):
    # RecBole's Config reads any --key=value in sys.argv (pytest's own flags included)
    monkeypatch.setattr(sys, "argv", ["pytest", "--learning_rate=0.5", "--epochs=oops"])
    config = Config(model="BPR", dataset="mkg-tiny", config_dict=tiny_config(tiny_root))
    assert config["learning_rate"] == 0.001
    assert config["epochs"] == 1


def test_item_features_with_missing_values_load(fresh_tiny):
    # guards the pandas<3 pin: on pandas 3 RecBole's chained fillna(inplace=True) is a no-op (NaN floats
    # stay), empty seq cells crash loading, and Series.agg(len) breaks token_seq remapping
    from recbole.data.dataset import Dataset

    folder = os.path.join(str(fresh_tiny), "mkg-tiny")
    items = [line.split("\t")[0] for line in open(os.path.join(folder, "mkg-tiny.link"), encoding="utf-8")][1:]
    with open(os.path.join(folder, "mkg-tiny.item"), "w", encoding="utf-8") as f:
        f.write("item_id:token\tprice:float\tgenres:token_seq\n")
        for k, item in enumerate(items):
            price = "" if k == 0 else f"{k % 7 + 1}.0"
            genres = "" if k == 1 else "a b"
            f.write(f"{item}\t{price}\t{genres}\n")
    config = Config(model="BPR", dataset="mkg-tiny", config_dict=tiny_config(
        fresh_tiny, load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "price", "genres"]}))
    dataset = Dataset(config)
    price = dataset.item_feat["price"]
    price = np.asarray(price, dtype=np.float64)
    assert not np.isnan(price).any()
    assert len(dataset.item_feat["genres"]) == len(price)


def test_torch_scatter_stand_in_matches_definitions():
    # KGIN/MCCLK import torch_scatter, which has no wheel for current torch
    import torch_scatter

    src = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    index = torch.tensor([0, 0, 2])
    mean = torch_scatter.scatter_mean(src=src, index=index, dim_size=4, dim=0)
    torch.testing.assert_close(mean, torch.tensor([[2.0, 3.0], [0.0, 0.0], [5.0, 6.0], [0.0, 0.0]]))
    soft = torch_scatter.scatter_softmax(torch.tensor([0.0, 0.0, 1.0]), index=torch.tensor([0, 0, 1]), dim=0)
    torch.testing.assert_close(soft, torch.tensor([0.5, 0.5, 1.0]))


def test_upstream_deprecation_warnings_are_silenced_only_where_upstream_raises_them(tiny_root):
    """Tiny training runs print none of RecBole's/PyG's warnings; the same messages raised from other code
    still show."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = (
        "import warnings, numpy, run_recbole_mkg\n"
        "for model in ('BPR', 'LightGCN', 'NGCF', 'SpectralCF', 'KGIN'):\n"
        f"    run_recbole_mkg.main(['--model=' + model, '--dataset=mkg-tiny', '--data_path={tiny_root}', '--epochs=1',\n"
        f"                          '--checkpoint_dir={tiny_root}/saved-warnings', '--show_progress=False'])\n"
        "warnings.warn('`torch.jit.script` is deprecated (from elsewhere)', FutureWarning)\n"
        "numpy.power(numpy.zeros(1), -0.5)  # divide by zero, from here\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chained assignment" not in proc.stderr
    assert "GradScaler" not in proc.stderr
    assert "`torch.jit.script` is deprecated (from elsewhere)" in proc.stderr  # others' warnings still show
    assert proc.stderr.count("torch.jit.script") == 1
    assert "SparseTensor" not in proc.stderr  # LightGCN's and NGCF's
    assert "list of numpy.ndarrays" not in proc.stderr  # SpectralCF's
    assert proc.stderr.count("divide by zero encountered in power") == 1  # ours, not KGIN's


def _kgin(tiny_root, tmp_path):
    from recbole.utils import init_seed

    from recbole_mkg.quick_start import build

    config = Config(model="KGIN", dataset="mkg-tiny", config_dict={**tiny_config(tiny_root),
                                                                   "checkpoint_dir": str(tmp_path)})
    init_seed(config["seed"], True)
    assert config["node_dropout_rate"] > 0  # RecBole's default 0.5: half of the KG edges per sample
    return build(config)


def test_kgin_ranks_with_the_whole_kg_in_evaluation(tiny_root, tmp_path):
    _, _, model, _ = _kgin(tiny_root, tmp_path)
    model.eval()
    with torch.no_grad():
        np.random.seed(1)
        first = model.forward()[0]
        np.random.seed(2)
        second = model.forward()[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # no random edges in evaluation
    model.train()
    with torch.no_grad():
        np.random.seed(1)
        trained = model.forward()[0]
        np.random.seed(2)
        assert not torch.equal(trained, model.forward()[0])  # training still samples edges


def test_loading_the_best_checkpoint_ranks_with_its_weights_not_the_last_validations(tiny_root, tmp_path):
    """KGIN keeps no caches in its checkpoints: after a later epoch's validation filled them, loading the
    best checkpoint must rank with the best weights (RecBole kept the later epoch's embeddings)."""
    _, (_, _, test_data), model, trainer = _kgin(tiny_root, tmp_path)
    best = str(tmp_path / "best.pth")
    trainer.saved_model_file = best
    trainer._save_checkpoint(0, verbose=False)  # the best epoch
    _, (_, _, fresh_test), _, fresh_trainer = _kgin(tiny_root, tmp_path)
    expected = fresh_trainer.evaluate(fresh_test, load_best_model=True, model_file=best, show_progress=False)
    with torch.no_grad():  # a later epoch: other weights, whose validation fills the caches
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    later = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    assert later != expected and model.restore_user_e is not None
    assert trainer.evaluate(test_data, load_best_model=True, model_file=best, show_progress=False) == expected
