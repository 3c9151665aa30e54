"""End-to-end: the CLI, RecBole baselines through the plugin, checkpoints and load_data_and_model."""
import os
import subprocess
import sys

import pytest

import run_recbole_mkg
from recbole_mkg.quick_start import load_data_and_model, run_recbole_mkg as run
from recbole_mkg.utils import UnknownModelError, get_trainer
from tests.conftest import ROOT, tiny_config


def _flags(root, **overrides):
    return [f"--{k}={v}" for k, v in tiny_config(root, **overrides).items()]


def test_cli_one_epoch_end_to_end(tiny_root):
    proc = subprocess.run(
        [sys.executable, "run_recbole_mkg.py", "--model=MultiKG4Rec", "--dataset=mkg-tiny"] + _flags(tiny_root),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test result (MultiKG4Rec on mkg-tiny)" in proc.stdout
    assert "ndcg@20" in proc.stdout
    assert "UnknownConfigKeyWarning" not in proc.stderr  # every flag of a normal run is a known setting


def test_cli_parses_recbole_style_flags(tiny_root):
    args, files, overrides = run_recbole_mkg.parse_args(
        ["--model=KGAT", "--dataset=x", "--config_files=a.yaml b.yaml", "--learning_rate=0.01"])
    assert (args.model, args.dataset, files, overrides) == ("KGAT", "x", ["a.yaml", "b.yaml"], {"learning_rate": "0.01"})
    with pytest.raises(SystemExit):
        run_recbole_mkg.parse_args(["--model=KGAT", "stray"])


def test_unknown_model_is_a_clear_error(tiny_root):
    with pytest.raises(UnknownModelError, match=r"unknown model 'MultiKG4Recc'.*MultiKG4Rec"):
        run("MultiKG4Recc", "mkg-tiny", config_dict=tiny_config(tiny_root))


def test_missing_dataset_and_config_file_are_clear_errors(tiny_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        run("BPR", "no-such-dataset", config_dict=tiny_config(tiny_root))
    with pytest.raises(FileNotFoundError, match="config file not found"):
        run("BPR", "mkg-tiny", config_file_list=[str(tmp_path / "missing.yaml")], config_dict=tiny_config(tiny_root))


def test_missing_atomic_files_are_named_with_what_to_do(fresh_tiny):
    folder = fresh_tiny / "mkg-tiny"
    os.remove(folder / "mkg-tiny.link")
    config = tiny_config(fresh_tiny)
    with pytest.raises(FileNotFoundError, match=r"missing mkg-tiny\.link; model KGAT is knowledge-aware.*dataset_tools"):
        run("KGAT", "mkg-tiny", config_dict=config)
    os.remove(folder / "mkg-tiny.inter")
    with pytest.raises(FileNotFoundError, match=r"missing mkg-tiny\.inter, mkg-tiny\.link"):
        run("MultiKG4Rec", "mkg-tiny", config_dict=config)
    with pytest.raises(FileNotFoundError, match=r"missing mkg-tiny\.inter;"):  # a general model needs no KG
        run("BPR", "mkg-tiny", config_dict=config)
    with pytest.raises(FileNotFoundError, match=r"mkg-tiny\.train\.inter.*saved split.*--split_only"):
        run("BPR", "mkg-tiny", config_dict=dict(config, benchmark_filename=["train", "valid", "test"]))


def test_invalid_config_value_is_a_clear_error(tiny_root):
    with pytest.raises(ValueError, match="config 'epochs'"):
        run("BPR", "mkg-tiny", config_dict=tiny_config(tiny_root, epochs="many"))
    with pytest.raises(ValueError, match="config 'learning_rate'"):
        run("BPR", "mkg-tiny", config_dict=tiny_config(tiny_root, learning_rate=-1))


def test_a_misspelt_config_key_is_named_with_the_nearest_known_ones(tiny_root):
    """RecBole ignores unknown keys silently; the plugin's Config warns, names the key and suggests the nearest
    declared ones, and still runs (custom models may read their own keys). Declared keys of RecBole, of the
    plugin's models and of RecBole's models raise nothing."""
    import warnings

    from recbole_mkg.config import Config, UnknownConfigKeyWarning

    with pytest.warns(UnknownConfigKeyWarning, match=r"'learning_rat'.*did you mean 'learning_rate'"):
        config = Config("BPR", "mkg-tiny", config_dict=tiny_config(tiny_root, learning_rat=0.01))
    assert config["learning_rat"] == 0.01 and config["learning_rate"] != 0.01
    with pytest.warns(UnknownConfigKeyWarning, match=r"'my_model_knob'.*your own model"):
        Config("BPR", "mkg-tiny", config_dict=tiny_config(tiny_root, my_model_knob=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownConfigKeyWarning)
        # a plugin model's key, another plugin model's key, a RecBole model's key, a dataset key
        Config("MultiKG4Rec", "mkg-tiny", config_dict=tiny_config(tiny_root, fusion_output="add", gat_heads=2,
                                                                 n_layers=2, val_interval=None))


def test_a_cpu_run_on_a_busy_machine_is_told_to_use_fewer_threads():
    from recbole_mkg.utils import busy_cpu_hint

    busy = busy_cpu_hint("cpu", environ={}, load_average=1.2, cpu_count=2, threads=2)
    assert "load average 1.2 on 2 CPUs, about 1 idle" in busy and "OMP_NUM_THREADS=1" in busy
    assert "none idle" in busy_cpu_hint("cpu", environ={}, load_average=2.5, cpu_count=2, threads=2)
    assert "OMP_NUM_THREADS=3" in busy_cpu_hint("cpu", environ={}, load_average=5.0, cpu_count=8, threads=8)
    assert busy_cpu_hint("cpu", environ={}, load_average=0.3, cpu_count=2, threads=2) is None  # idle
    assert busy_cpu_hint("cpu", environ={}, load_average=7.0, cpu_count=2, threads=1) is None  # one thread
    assert busy_cpu_hint("cpu", environ={"OMP_NUM_THREADS": "2"}, load_average=3.0, cpu_count=2, threads=2) is None
    assert busy_cpu_hint("cuda", environ={}, load_average=9.0, cpu_count=2, threads=2) is None


def test_alias_and_trainer_lookup():
    from recbole.utils import ModelType

    from recbole_mkg.trainer import MultiKG4RecTrainer

    assert get_trainer(ModelType.KNOWLEDGE, "MultiKG4Rec") is MultiKG4RecTrainer
    assert get_trainer(ModelType.KNOWLEDGE, "KGAT").__name__ == "KGATTrainer"
    assert get_trainer(ModelType.KNOWLEDGE, "Multi-KG4Rec") is MultiKG4RecTrainer


def test_plugin_kgat_replaces_recbole_kgat():
    from recbole_mkg.utils import get_model

    assert get_model("KGAT").__module__ == "recbole_mkg.model.knowledge_aware_recommender.kgat"
    assert get_model("BPR").__module__.startswith("recbole.model")


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "NGCF", "SpectralCF", "KGAT", "KGIN", "CKE", "KGCN"])
def test_baselines_run_through_the_plugin(tiny_root, model):
    result = run(model, "mkg-tiny", config_dict=tiny_config(tiny_root), saved=True)
    assert 0.0 <= result["test_result"]["ndcg@20"] <= 1.0
    assert os.path.isfile(result["checkpoint"])


def test_checkpoint_then_load_data_and_model_gives_same_metrics(tiny_root):
    result = run("MultiKG4Rec", "mkg-tiny", config_dict=tiny_config(tiny_root, epochs=2), saved=True)
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(result["checkpoint"])
    assert config["model"] == "MultiKG4Rec" and config["epochs"] == 2
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    again = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    assert dict(again) == dict(result["test_result"])


#: the persistent buffers each plugin model may save beside its parameters: learned state only
LEARNED_BUFFERS = {"MultiKG4Rec": {"attention_visual", "attention_text"}, "KGAT": {"attention"},
                   "MKGAT": set(), "CrossGMMI": set()}


@pytest.mark.parametrize("model_name", sorted(LEARNED_BUFFERS))
def test_checkpoints_carry_learned_state_only_and_old_ones_still_load(tiny_root, model_name):
    """What a model builds from its dataset (graph edges, features, sequences) is not saved; a checkpoint
    written when it was (before 2026-12-05) still loads strictly, into the same predictions."""
    import torch

    from tests.conftest import build_model

    model, _, (train, _, _) = build_model(tiny_root, model_name)
    state = model.state_dict()
    parameters = {name for name, _ in model.named_parameters()}
    assert set(state) - parameters == LEARNED_BUFFERS[model_name]
    derived = {name: b for name, b in model.named_buffers() if name not in state}
    assert derived  # every model has dataset-built tables, and none of them is saved
    old_format = {**state, **{name: b.clone() for name, b in derived.items()}}

    fresh, _, _ = build_model(tiny_root, model_name)  # the same data and split (the graph is the split's)
    with torch.no_grad():
        for p in fresh.parameters():  # other weights
            p.normal_()
    users = torch.arange(1, 5)
    fresh.eval()
    model.eval()
    with torch.no_grad():
        assert not torch.equal(fresh.full_sort_predict({fresh.USER_ID: users}),
                               model.full_sort_predict({model.USER_ID: users}))
    fresh.load_state_dict(old_format)  # strict: the old tables are recognised, not "unexpected"
    fresh.invalidate_cache()
    with torch.no_grad():
        torch.testing.assert_close(fresh.full_sort_predict({fresh.USER_ID: users}),
                                   model.full_sort_predict({model.USER_ID: users}))
    with pytest.raises(RuntimeError, match="not_a_model_key"):  # strictness itself is kept
        fresh.load_state_dict({**state, "not_a_model_key": torch.zeros(1)})
