"""A killed side-by-side run goes on after its last validated epoch and ends where an uninterrupted one ends."""
import os

import pytest

from recbole_mkg import run_progress
from recbole_mkg.compare import protocol_file, run_one
from recbole_mkg.results_report import summarise
from recbole_mkg.run_progress import ProgressFileError, ProgressMismatchError
from tests.conftest import tiny_config


class Killed(Exception):
    """Stands for the process being killed right after an epoch's progress was written."""


def _config(root, out, **overrides):
    return tiny_config(root, checkpoint_dir=str(out / "checkpoints"), epochs=4, stopping_step=10,
                       learning_rate=0.01, pretrain_epochs=2, **overrides)


def _kill_after(monkeypatch, epoch):
    save = run_progress.RunProgress.save

    def save_then_die(self, epoch_idx):
        save(self, epoch_idx)
        if epoch_idx == epoch:
            raise Killed(epoch_idx)

    monkeypatch.setattr(run_progress.RunProgress, "save", save_then_die)


@pytest.mark.parametrize("model", ["MultiKG4Rec", "LightGCN", "CrossGMMI"])
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(tiny_root, tmp_path, monkeypatch, model):
    """(CrossGMMI: pre-training, then fine-tuning, in one run; the resumed run goes on with the fine-tuning
    and does not pre-train again.)"""
    files = [protocol_file("paper")]
    whole = run_one(model, "mkg-tiny", 2020, files, _config(tiny_root, tmp_path / "whole"), out_dir=str(tmp_path / "whole"))
    assert not (tmp_path / "whole" / "progress").exists() or not os.listdir(tmp_path / "whole" / "progress")

    out = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        _kill_after(patch, epoch=1)
        with pytest.raises(Killed):
            run_one(model, "mkg-tiny", 2020, files, _config(tiny_root, out), out_dir=str(out))
    progress = out / "progress" / f"{model}__seed2020.pth"
    assert progress.is_file() and not (out / "runs" / f"{model}__seed2020.json").exists()
    (out / "runs").mkdir()  # (the runner makes it) the folder's table lists the run as in progress
    table = open(summarise(str(out), [model], [2020], log=lambda line: None)["markdown"]).read()
    assert f"- {model} seed 2020: 2 of 4 epochs, best valid ndcg@20 so far" in table

    pretrained = []
    if model == "CrossGMMI":
        from recbole_mkg.trainer_pretrain import CrossGMMITrainer

        monkeypatch.setattr(CrossGMMITrainer, "pretrain", lambda self, *a, **k: pretrained.append(1))
    resumed = run_one(model, "mkg-tiny", 2020, files, _config(tiny_root, out), out_dir=str(out))
    assert not pretrained
    assert not list((out / "progress").iterdir())  # removed once the result is written
    # a stale progress summary of a run that finished elsewhere (another machine's result merged in) is no
    # run in progress
    (out / "progress" / f"{model}__seed2020.json").write_text(
        '{"epochs_done": 1, "epochs_cap": 4, "best_valid_score": 0.1, "valid_metric": "ndcg@20", "saved_at": "x"}')
    assert "Runs in progress" not in open(summarise(str(out), [model], [2020], log=lambda line: None)["markdown"]).read()
    assert [s["first_epoch"] for s in resumed["sittings"]] == [0, 2]
    assert resumed["epochs_run"] == whole["epochs_run"] == 4
    # the same model state, optimizer state and random draws: the same curve and the same test metrics
    assert resumed["valid_curve"] == pytest.approx(whole["valid_curve"], abs=1e-6)
    assert resumed["test_result"] == pytest.approx(whole["test_result"], abs=1e-6)
    assert resumed["best_valid_score"] == pytest.approx(whole["best_valid_score"], abs=1e-6)


def test_a_progress_file_of_another_configuration_is_refused_by_name(tiny_root, tmp_path, monkeypatch):
    files = [protocol_file("paper")]
    with monkeypatch.context() as patch:
        _kill_after(patch, epoch=0)
        with pytest.raises(Killed):
            run_one("BPR", "mkg-tiny", 2020, files, _config(tiny_root, tmp_path), out_dir=str(tmp_path))
    changed = _config(tiny_root, tmp_path)
    changed["learning_rate"] = 0.02
    with pytest.raises(ProgressMismatchError, match=r"learning_rate: 0.01 -> 0.02.*delete the file"):
        run_one("BPR", "mkg-tiny", 2020, files, changed, out_dir=str(tmp_path))
    # a file written before the plugin had a setting (its fingerprint lacks the key): at the setting's
    # default it resumes; at another value it is refused, naming it
    import torch

    path = tmp_path / "progress" / "BPR__seed2020.pth"
    state = torch.load(path, weights_only=True)
    assert state["fingerprint"]["weight_decay"] == 0.0 and state["fingerprint"]["epochs"] == 4  # default, not
    del state["fingerprint"]["weight_decay"], state["fingerprint"]["epochs"]
    torch.save(state, path)
    with pytest.raises(ProgressMismatchError, match=r"\(epochs: None -> 4\)"):
        run_one("BPR", "mkg-tiny", 2020, files, _config(tiny_root, tmp_path), out_dir=str(tmp_path))
    state["fingerprint"]["epochs"] = 4
    torch.save(state, path)
    # where the run happens may change between sittings (another machine: other paths, another device)
    moved = _config(tiny_root, tmp_path, feature_cache_dir=str(tmp_path / "other-cache"), show_progress=True)
    record = run_one("BPR", "mkg-tiny", 2020, files, moved, out_dir=str(tmp_path))
    assert [s["first_epoch"] for s in record["sittings"]] == [0, 1]


def test_a_run_killed_after_its_last_epoch_is_tested_without_training_again(tiny_root, tmp_path, monkeypatch):
    files = [protocol_file("paper")]
    whole = run_one("BPR", "mkg-tiny", 2020, files, _config(tiny_root, tmp_path / "whole"), out_dir=str(tmp_path / "whole"))
    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        _kill_after(patch, epoch=3)  # the last of 4 epochs: killed before the test
        with pytest.raises(Killed):
            run_one("BPR", "mkg-tiny", 2020, files, _config(tiny_root, out), out_dir=str(out))
    monkeypatch.setattr(run_progress.RunProgress, "save", lambda self, epoch_idx: pytest.fail("trained again"))
    record = run_one("BPR", "mkg-tiny", 2020, files, _config(tiny_root, out), out_dir=str(out))
    assert record["epochs_run"] == 4 and record["valid_curve"] == pytest.approx(whole["valid_curve"], abs=1e-6)
    # the best epoch's checkpoint is what gets tested (not the last epoch's weights)
    assert record["test_result"] == pytest.approx(whole["test_result"], abs=1e-6)


def test_an_unreadable_progress_file_names_itself_and_what_to_do(tiny_root, tmp_path):
    (tmp_path / "progress").mkdir()
    (tmp_path / "progress" / "BPR__seed2020.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ProgressFileError, match=r"BPR__seed2020\.pth cannot be read \(CorruptCheckpointError.*delete it"):
        run_one("BPR", "mkg-tiny", 2020, [protocol_file("paper")], _config(tiny_root, tmp_path), out_dir=str(tmp_path))
