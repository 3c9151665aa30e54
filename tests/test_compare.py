"""Side-by-side runner: one saved split, one process per (model, seed), atomic results, resume, tables."""
import csv
import json
import os
import pytest
import yaml

import run_recbole_mkg
from recbole_mkg.compare import compare, parse_epoch_caps, protocol_file
from recbole_mkg.results_report import summarise
from recbole_mkg.saved_split import prepare_split
from recbole_mkg.utils import device_name
from tests.conftest import tiny_config


def _shared(root, **overrides):
    config = tiny_config(root, **overrides)
    config.pop("checkpoint_dir")
    return config


@pytest.fixture(scope="module")
def comparison(tiny_root, tmp_path_factory):
    """BPR and KGAT with seed 2020, then (a second sitting) BPR with seeds 2020 and 2021: 3 runs."""
    out = tmp_path_factory.mktemp("compare")
    logs = []
    shared = _shared(tiny_root, epochs=1, metrics=["Recall", "MRR", "NDCG", "Hit"])
    compare(["BPR", "KGAT"], "mkg-tiny", seeds=[2020], config_file_list=[protocol_file("paper")],
            config_dict=shared, results_dir=str(out), epoch_caps={"BPR": 2}, log=logs.append)
    mtime = os.path.getmtime(out / "runs" / "BPR__seed2020.json")
    logs.append("--- second sitting ---")
    compare(["BPR"], "mkg-tiny", seeds=[2020, 2021], config_file_list=[protocol_file("paper")],
            config_dict=shared, results_dir=str(out), epoch_caps={"BPR": 2}, log=logs.append)
    result = summarise(str(out), ["BPR", "KGAT"], [2020, 2021], log=logs.append)
    assert os.path.getmtime(out / "runs" / "BPR__seed2020.json") == mtime
    return out, result, logs


def test_every_model_and_seed_ran_on_one_split(comparison):
    out, result, logs = comparison
    records = result["records"]
    assert sorted((r["model"], r["seed"]) for r in records) == [("BPR", 2020), ("BPR", 2021), ("KGAT", 2020)]
    second = logs[logs.index("--- second sitting ---"):]
    assert any("split (seed 2020)" in line for line in second)
    assert any("BPR__seed2020: result exists, skipped" in line for line in second)
    assert any("BPR__seed2021: done" in line for line in second)
    split = json.load(open(out / "split" / "mkg-tiny" / "split.json"))
    for r in records:  # KG model and non-KG model: the same train/valid/test interactions
        assert r["split_sizes"] == split["sizes"]
        assert r["config"]["benchmark_filename"] == ["train", "valid", "test"]
        assert r["n_params"] > 0 and r["peak_rss_mb"] > 0 and r["train_s_per_epoch"] > 0
        assert 1 <= r["epochs_to_best"] <= r["epochs_run"]
    assert {r["epochs_cap"] for r in records if r["model"] == "BPR"} == {2}
    assert {r["epochs_cap"] for r in records if r["model"] == "KGAT"} == {1}
    assert any("epoch caps" in line and "BPR: 2" in line for line in logs)
    # the exact merged config of every run, loadable YAML
    cfg = yaml.safe_load(open(out / "configs" / "BPR__seed2021.yaml"))
    assert cfg["seed"] == 2021 and cfg["model"] == "BPR" and cfg["valid_metric"] == "NDCG@20"
    # each run's record and its test users' top-K lists (recbole_mkg.breakdown)
    assert sorted(os.listdir(out / "runs")) == sorted(f"{key}{ext}" for key in ("BPR__seed2020", "BPR__seed2021", "KGAT__seed2020")
                                                      for ext in (".json", ".topk.npz"))


def test_summarise_rewrites_the_tables_from_the_runs_without_training(comparison, tmp_path):
    import shutil

    import run_recbole_mkg

    out, _, _ = comparison
    copy = tmp_path / "copy"
    shutil.copytree(out / "runs", copy / "runs")
    everything = run_recbole_mkg.main(["--summarise", f"--results_dir={copy}"])
    assert [(r["model"], r["n"]) for r in everything["rows"]] == [("BPR", 2), ("KGAT", 1)]
    chosen = run_recbole_mkg.main(["--summarise", f"--results_dir={copy}", "--model=KGAT,BPR", "--seeds=2020"])
    assert [(r["model"], r["n"]) for r in chosen["rows"]] == [("KGAT", 1), ("BPR", 1)]
    assert "| KGAT | 1 |" in open(copy / "results.md").read() and (copy / "results.csv").is_file()
    assert sorted(os.listdir(copy / "runs")) == sorted(os.listdir(out / "runs"))  # nothing ran
    with pytest.raises(SystemExit, match="--summarise needs --results_dir"):
        run_recbole_mkg.main(["--summarise", f"--results_dir={tmp_path / 'nothing'}"])


def test_a_folder_filled_on_two_devices_says_which_rows_ran_where(comparison, tmp_path):
    """KGAT's run as if it came from a GPU sitting (recorded before runs had device names): the table gets a
    device column and says the timing columns compare only within a device; one device, no column."""
    import shutil

    out, _, _ = comparison
    copy = tmp_path / "copy"
    shutil.copytree(out / "runs", copy / "runs")
    kgat = json.load(open(copy / "runs" / "KGAT__seed2020.json"))
    kgat["device"] = "cuda"
    del kgat["device_name"]
    json.dump(kgat, open(copy / "runs" / "KGAT__seed2020.json", "w"))
    summarise(str(copy), ["BPR", "KGAT"], log=lambda line: None)
    table = open(copy / "results.md").read()
    assert "| model | seeds | epochs cap | device | recall@10 |" in table
    assert f"| BPR | 2 | 2 | cpu ({device_name('cpu')}) |" in table and "| KGAT | 1 | 1 | cuda |" in table
    assert "compare the timing and memory columns only between rows of the same device" in table
    summarise(str(copy), ["BPR"], log=lambda line: None)
    assert "| device |" not in open(copy / "results.md").read()
    # a CPU run recorded before device names existed is not another device
    kgat.update(device="cpu")
    json.dump(kgat, open(copy / "runs" / "KGAT__seed2020.json", "w"))
    summarise(str(copy), ["BPR", "KGAT"], log=lambda line: None)
    assert "| device |" not in open(copy / "results.md").read()
    # a run resumed on a GPU after a CPU sitting: both devices, and the column
    kgat.update(device="cuda", device_name="NVIDIA H200", sittings=[
        {"first_epoch": 0, "device": "cpu", "device_name": device_name("cpu")},
        {"first_epoch": 3, "device": "cuda", "device_name": "NVIDIA H200"}])
    json.dump(kgat, open(copy / "runs" / "KGAT__seed2020.json", "w"))
    summarise(str(copy), ["BPR", "KGAT"], log=lambda line: None)
    assert f"| KGAT | 1 | 1 | cpu ({device_name('cpu')}) + cuda (NVIDIA H200) |" in open(copy / "results.md").read()


def test_saved_split_is_the_kg_filtered_interactions(comparison, tiny_root):
    out, _, _ = comparison
    folder = out / "split" / "mkg-tiny"
    rows = sum(len(open(folder / f"mkg-tiny.{p}.inter").readlines()) - 1 for p in ("train", "valid", "test"))
    assert rows == json.load(open(folder / "split.json"))["interactions"]
    assert os.path.islink(folder / "mkg-tiny.kg") and not os.path.islink(folder / "mkg-tiny.link")
    # a second preparation reuses the saved split (made with the first seed, 2020), whatever seeds come next
    again = prepare_split("mkg-tiny", [protocol_file("paper")], _shared(tiny_root), str(out), default_seed=2021)
    assert again["sizes"] == json.load(open(folder / "split.json"))["sizes"] and again["split_seed"] == 2020
    # but an explicit other split seed is refused: the runs of one folder share one split
    with pytest.raises(ValueError, match="made with seed 2020, not 1.*--results_dir"):
        prepare_split("mkg-tiny", [protocol_file("paper")], _shared(tiny_root), str(out), split_seed=1)


def test_split_only_makes_the_comparisons_split_and_trains_nothing(comparison, tiny_root, tmp_path, monkeypatch):
    """``--split_only`` (the bundle script's public way to make a folder's split before it travels): with the
    comparison's protocol and seed, the same files; no run, and a resumed comparison would reuse it."""
    out, _, _ = comparison
    monkeypatch.chdir(tmp_path)  # relative --data_path / --results_dir are resolved where the command runs
    os.symlink(tiny_root, tmp_path / "data")
    split = run_recbole_mkg.main(["--split_only", "--dataset=mkg-tiny", "--data_path=data", "--protocol=paper",
                                  "--results_dir=made", "--split_seed=2020", "--state=ERROR"])
    made = tmp_path / "made"
    assert split["split_seed"] == 2020 and split["data_path"] == str(made / "split")
    for part in ("train", "valid", "test"):
        name = f"mkg-tiny.{part}.inter"
        assert open(made / "split" / "mkg-tiny" / name).read() == open(out / "split" / "mkg-tiny" / name).read()
    assert json.load(open(made / "split.json"))["sizes"] == split["sizes"]
    assert not (made / "runs").exists() and not (made / "results.md").exists()
    # a second call checks the saved split instead of making another; another seed is refused
    assert run_recbole_mkg.main(["--split_only", "--dataset=mkg-tiny", "--data_path=data", "--protocol=paper",
                                 "--results_dir=made"])["sizes"] == split["sizes"]
    with pytest.raises(ValueError, match="seed 2020, not 3"):
        run_recbole_mkg.main(["--split_only", "--dataset=mkg-tiny", "--data_path=data", "--protocol=paper",
                              "--results_dir=made", "--split_seed=3"])


def test_a_folder_whose_split_is_gone_is_split_again_with_the_recorded_seed(comparison, tiny_root, tmp_path):
    """Results copied without split/ (the data is never published): the folder's split.json record gives
    the seed, so new runs get the same split; with no record, earlier runs make a missing seed an error."""
    import shutil

    out, _, _ = comparison
    record = json.load(open(out / "split.json"))
    assert record["split_seed"] == 2020 and record["sizes"] == json.load(open(out / "split" / "mkg-tiny" / "split.json"))["sizes"]
    original = {p: open(out / "split" / "mkg-tiny" / f"mkg-tiny.{p}.inter").read() for p in ("train", "valid", "test")}
    copy = tmp_path / "copied"
    shutil.copytree(out / "runs", copy / "runs")
    shutil.copy(out / "split.json", copy / "split.json")
    # the first seed of the new command (2021) does not pick the split: the record does
    again = prepare_split("mkg-tiny", [protocol_file("paper")], _shared(tiny_root), str(copy), default_seed=2021)
    assert again["split_seed"] == 2020 and again["sizes"] == record["sizes"]
    for part, text in original.items():
        assert open(copy / "split" / "mkg-tiny" / f"mkg-tiny.{part}.inter").read() == text
    with pytest.raises(ValueError, match="seed 2020, not 7"):
        prepare_split("mkg-tiny", [protocol_file("paper")], _shared(tiny_root), str(copy), split_seed=7)
    # no record and earlier runs: the seed must be given
    bare = tmp_path / "bare"
    shutil.copytree(out / "runs", bare / "runs")
    with pytest.raises(ValueError, match="pass --split_seed"):
        prepare_split("mkg-tiny", [protocol_file("paper")], _shared(tiny_root), str(bare), default_seed=2021)
    given = prepare_split("mkg-tiny", [protocol_file("paper")], _shared(tiny_root), str(bare), split_seed=2020)
    assert given["split_seed"] == 2020 and json.load(open(bare / "split.json"))["split_seed"] == 2020
    # a record whose sizes the data no longer gives is refused
    changed = tmp_path / "changed"
    os.makedirs(changed)
    json.dump(dict(record, sizes={"train": 1, "valid": 1, "test": 1}), open(changed / "split.json", "w"))
    with pytest.raises(ValueError, match="the data or the protocol changed"):
        prepare_split("mkg-tiny", [protocol_file("paper")], _shared(tiny_root), str(changed))


def test_tables_and_chart(comparison):
    out, result, _ = comparison
    md = open(result["markdown"]).read()
    assert "| BPR | 2 | 2 |" in md and "| KGAT | 1 | 1 |" in md and " ± " in md
    for column in ("recall@10", "ndcg@20", "hit@20", "train s/epoch", "eval s", "peak RSS MB", "#params",
                   "epochs to best"):
        assert column in md
    rows = list(csv.DictReader(open(result["csv"])))
    assert [r["model"] for r in rows] == ["BPR", "KGAT"]
    assert float(rows[0]["ndcg@20"]) >= 0 and rows[0]["ndcg@20 std"] != ""
    assert open(result["chart"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_validation_curves_average_the_seeds(comparison):
    import numpy as np

    from recbole_mkg.results_report import validation_curves

    out, result, _ = comparison
    assert open(result["curves"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    bpr = [json.load(open(out / "runs" / f"BPR__seed{s}.json"))["valid_curve"] for s in (2020, 2021)]
    curves = validation_curves(["BPR", "KGAT"], result["records"])
    x, mean, low, high, n = curves["BPR"]
    assert n == 2 and x.tolist() == [1, 2] and len(bpr[0]) == len(bpr[1]) == 2
    np.testing.assert_allclose(mean, np.mean(bpr, axis=0))
    np.testing.assert_allclose(low, np.min(bpr, axis=0))
    np.testing.assert_allclose(high, np.max(bpr, axis=0))
    # a run stopped early counts for the evaluations it reached
    records = [{"model": "M", "valid_curve": [0.1, 0.2, 0.3]}, {"model": "M", "valid_curve": [0.3]}]
    x, mean, _, _, n = validation_curves(["M", "absent"], records)["M"]
    assert x.tolist() == [1, 2, 3] and np.allclose(mean, [0.2, 0.2, 0.3]) and n == 2


def test_failed_run_is_recorded_and_the_others_go_on(comparison, tiny_root):
    out, _, _ = comparison
    result = compare(["NoSuchModel", "BPR"], "mkg-tiny", seeds=[2020], config_file_list=[protocol_file("paper")],
                     config_dict=_shared(tiny_root, epochs=1), results_dir=str(out), log=lambda line: None)
    failed = json.load(open(out / "runs" / "NoSuchModel__seed2020.failed.json"))
    assert "unknown model" in failed["error"]
    # every worker's output is in its log file, written as it runs: the failure's traceback, BPR's training
    assert "unknown model" in open(out / "logs" / "NoSuchModel__seed2020.log").read()
    assert (out / "logs" / "BPR__seed2020.log").is_file()
    assert [(r["model"], r["n"], r["failed"]) for r in result["rows"]] == [("NoSuchModel", 0, 1), ("BPR", 1, 0)]
    assert "Failed runs" in open(result["markdown"]).read()


def test_a_run_over_its_timeout_is_killed_and_recorded(tiny_root, tmp_path):
    result = compare(["BPR"], "mkg-tiny", seeds=[2020], config_file_list=[protocol_file("paper")],
                     config_dict=_shared(tiny_root, epochs=1), results_dir=str(tmp_path), timeout=0.5,
                     log=lambda line: None)
    failed = json.load(open(tmp_path / "runs" / "BPR__seed2020.failed.json"))
    assert failed["error"] == "timed out after 0.5 s"
    assert not (tmp_path / "runs" / "BPR__seed2020.json").exists() and result["rows"][0]["failed"] == 1


def test_parallel_runs_split_the_cpus_between_them():
    from recbole_mkg.compare import child_environment

    assert child_environment(2, {}, cpu_count=8)["OMP_NUM_THREADS"] == "4"
    assert child_environment(3, {}, cpu_count=2)["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in child_environment(1, {}, cpu_count=8)  # one run: torch's default
    assert child_environment(4, {"OMP_NUM_THREADS": "3"}, cpu_count=8)["OMP_NUM_THREADS"] == "3"  # the user's


def test_epoch_caps_parsing():
    assert parse_epoch_caps("KGAT:20,BPR:100") == {"KGAT": 20, "BPR": 100}
    assert parse_epoch_caps("5", ["A", "B"]) == {"A": 5, "B": 5}
    assert parse_epoch_caps(None) == {}


def test_cli_model_list_goes_side_by_side(tiny_root, tmp_path, monkeypatch):
    calls = {}
    import recbole_mkg.compare as module

    monkeypatch.setattr(module, "compare", lambda *a, **k: calls.update(args=a, kwargs=k) or {"rows": []})
    run_recbole_mkg.main(["--model=BPR,KGAT", "--dataset=mkg-tiny", "--seeds=1,2", "--protocol=paper",
                          "--epochs_cap=KGAT:4", f"--results_dir={tmp_path}", "--learning_rate=0.01"])
    assert calls["args"][:2] == (["BPR", "KGAT"], "mkg-tiny")
    kwargs = calls["kwargs"]
    assert kwargs["seeds"] == [1, 2] and kwargs["epoch_caps"] == {"KGAT": 4}
    assert kwargs["config_file_list"] == [protocol_file("paper")]
    assert kwargs["config_dict"] == {"learning_rate": "0.01"}


def test_cli_flags_are_never_abbreviated():
    # --seed is RecBole's config key; it must not be taken for --seeds (nor --port for --port_xxx, ...)
    args, _, overrides = run_recbole_mkg.parse_args(["--model=BPR", "--seed=7", "--epoch=3"])
    assert args.seeds is None and overrides == {"seed": "7", "epoch": "3"}


def test_named_variants_run_in_parallel_with_their_own_configs(tiny_root, tmp_path):
    text_only = tmp_path / "text_only.yaml"
    text_only.write_text("modalities: [text]\n")
    result = compare(["MultiKG4Rec", "MultiKG4Rec@text"], "mkg-tiny", seeds=[2020],
                     config_file_list=[protocol_file("paper")], config_dict=_shared(tiny_root, epochs=1),
                     results_dir=str(tmp_path / "out"), model_config_files={"MultiKG4Rec@text": [str(text_only)]},
                     jobs=2, log=lambda line: None)
    by_label = {r["model"]: r for r in result["records"]}
    assert set(by_label) == {"MultiKG4Rec", "MultiKG4Rec@text"}
    # two runs at once share the CPUs instead of each taking one thread per CPU (unless the user chose)
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // 2))
    assert {r["torch_threads"] for r in result["records"]} == {threads}
    assert {r["device_name"] for r in result["records"]} == {device_name("cpu")}
    assert f"device: cpu ({device_name('cpu')})" in open(result["markdown"]).read()
    assert by_label["MultiKG4Rec@text"]["model_class"] == "MultiKG4Rec"
    assert by_label["MultiKG4Rec@text"]["config"]["modalities"] == ["text"]
    assert by_label["MultiKG4Rec"]["config"]["modalities"] == ["visual", "text"]
    assert by_label["MultiKG4Rec@text"]["n_params"] < by_label["MultiKG4Rec"]["n_params"]
    assert [r["model"] for r in result["rows"]] == ["MultiKG4Rec", "MultiKG4Rec@text"]
    with pytest.raises(ValueError, match="Model@label"):
        compare(["MultiKG4Rec@"], "mkg-tiny", config_dict=_shared(tiny_root), results_dir=str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()  # nothing was prepared for a malformed entry


def test_kg_permutation_control_applies_to_the_saved_split(comparison, tiny_root):
    """RecBole skips _data_filtering for benchmark files; the control must still permute the KG there."""
    import numpy as np

    from recbole_mkg.config import Config
    from recbole_mkg.data import create_dataset

    out, _, _ = comparison

    def kg_pairs(**overrides):
        config = Config(model="KGAT", dataset="mkg-tiny", config_dict=_shared(
            tiny_root, data_path=str(out / "split"), benchmark_filename=["train", "valid", "test"], **overrides))
        ds = create_dataset(config)
        tokens = ds.field2id_token
        return list(zip(tokens[ds.head_entity_field][np.asarray(ds.kg_feat[ds.head_entity_field])],
                        tokens[ds.tail_entity_field][np.asarray(ds.kg_feat[ds.tail_entity_field])]))

    original, permuted = kg_pairs(), kg_pairs(kg_permute_tails=True)
    assert len(original) == len(permuted)
    assert sorted(h for h, _ in original) == sorted(h for h, _ in permuted)
    assert len(set(original) & set(permuted)) < 0.5 * len(original)


def test_a_relation_absent_from_the_saved_split_is_not_reported_as_a_warning(comparison, tiny_root, caplog):
    """The runner writes the split's .kg without the dropped relations, so every run on it finds them absent:
    that is expected there (info), while a relation absent from an original dataset is a warning."""
    import logging

    from recbole_mkg.config import Config
    from recbole_mkg.data import create_dataset

    out, _, _ = comparison
    on_split = {"data_path": str(out / "split"), "benchmark_filename": ["train", "valid", "test"]}
    for overrides, level in ((on_split, logging.INFO), ({}, logging.WARNING)):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            create_dataset(Config(model="KGAT", dataset="mkg-tiny", config_dict=_shared(
                tiny_root, drop_relations=["no.such.relation"], **overrides)))
        records = [r for r in caplog.records if "no.such.relation" in r.getMessage() and "dropped" not in r.getMessage()]
        assert [r.levelno for r in records] == [level], [r.getMessage() for r in records]


@pytest.mark.parametrize("script", ["run_comparison_ml100k.sh", "run_comparison_ml1m.sh"])
def test_comparison_scripts_pass_the_budget_flags(tmp_path, script):
    """The scripts' command lines (PYTHON=echo prints them): one configuration per model passes the shared
    learning rate; the tuned budget must not (a --key=value beats the tuned best_config.yaml files)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    echo_args = tmp_path / "echo_args"  # prints one argument per line (a variant may list files with spaces)
    echo_args.write_text("#!/bin/bash\nprintf '%s\\n' \"$@\"\n")
    echo_args.chmod(0o755)

    def flags(**env):
        env = {**os.environ, "PYTHON": str(echo_args), "DATA_PATH": str(tmp_path), "RESULTS_DIR": str(tmp_path / "r"),
               **env}
        out = subprocess.run(["bash", os.path.join(root, "benchmarks", script)], env=env, check=True,
                             capture_output=True, text=True).stdout.splitlines()
        assert out[0] == "run_recbole_mkg.py"
        return dict(f[2:].split("=", 1) for f in out[1:])

    fixed = flags(EPOCHS="7", MODELS="BPR,MultiKG4Rec@text", EXTRA="--eval_step=2")
    assert fixed["learning_rate"] == "0.005" and fixed["epochs"] == "7" and fixed["eval_step"] == "2"
    assert "tune" not in fixed and fixed["protocol"] == "paper" and fixed["model"] == "BPR,MultiKG4Rec@text"
    variants = run_recbole_mkg._model_configs(fixed["model_configs"])  # as the CLI reads them
    for label in ("MultiKG4Rec@text", "MultiKG4Rec@visual", "MultiKG4Rec@oneway", "KGAT@kg-permuted",
                  "MultiKG4Rec@text-ui-light"):
        assert label in variants, label
    for label, files in variants.items():
        for f in files:
            assert os.path.isfile(f if os.path.isabs(f) else os.path.join(root, f)), (label, f)
    assert len(variants["MultiKG4Rec@text-ui-light"]) == 2
    tuned = flags(TUNE="benchmarks/spaces", NUM_SAMPLES="3", EPOCHS="20", RAY_ADDRESS="auto")
    assert "learning_rate" not in tuned
    assert (tuned["tune"], tuned["num_samples"], tuned["epochs"], tuned["ray_address"]) == (
        "benchmarks/spaces", "3", "20", "auto")
    # a shared CrossGMMI phase 1: the base model fine-tunes from it, in its sweep and its seeds
    pretrained = tmp_path / "phase1.pth"
    pretrained.write_bytes(b"")
    shared = run_recbole_mkg._model_configs(flags(TUNE="benchmarks/spaces", CROSSGMMI_PRETRAINED=str(pretrained))["model_configs"])
    (finetune,) = shared["CrossGMMI"]
    with open(finetune, encoding="utf-8") as f:
        assert yaml.safe_load(f) == {"train_stage": "finetune", "pretrained_path": str(pretrained)}
    for label, files in shared.items():  # a variant that pre-trains otherwise says so in its own file
        if label.startswith("CrossGMMI@"):
            with open(files[-1], encoding="utf-8") as f:
                assert yaml.safe_load(f)["train_stage"] == "pretrain_finetune", label
    missing = subprocess.run(["bash", os.path.join(root, "benchmarks", script)], capture_output=True, text=True,
                             env={**os.environ, "PYTHON": str(echo_args), "DATA_PATH": str(tmp_path),
                                  "RESULTS_DIR": str(tmp_path / "r"), "CROSSGMMI_PRETRAINED": str(tmp_path / "none")})
    assert missing.returncode != 0 and "CROSSGMMI_PRETRAINED: no file" in missing.stderr and not missing.stdout


def test_every_comparison_variant_file_is_a_valid_config_of_its_model(tiny_root):
    """Each Model@label of benchmarks/comparison_common.sh: its files exist, every key in them is a key its
    model knows (RecBole would silently ignore a misspelt one) and the merged config validates."""
    import re

    from recbole_mkg.config import Config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "benchmarks", "comparison_common.sh"), encoding="utf-8") as f:
        text = f.read()
    parts = ",".join(re.findall(r'^VARIANT_CONFIGS="([^"]*)"', text, flags=re.M))
    variants = run_recbole_mkg._model_configs(",".join(p for p in parts.split(",") if "=" in p))
    assert {"KGAT@ui-light", "MultiKG4Rec@text-ui-light", "MultiKG4Rec@none"} <= set(variants)
    defaults = {}
    for label, files in variants.items():
        model = label.split("@")[0]
        files = [os.path.join(root, f.replace("$C", "benchmarks/configs")) for f in files]
        if model not in defaults:
            defaults[model] = Config(model=model, dataset="mkg-tiny", config_dict=tiny_config(tiny_root))
        keys = {}
        for path in files:
            with open(path, encoding="utf-8") as f:
                keys.update(yaml.safe_load(f) or {})
        unknown = set(keys) - set(defaults[model].final_config_dict)
        assert not unknown, f"{label}: {unknown} are not {model} config keys"
        fast = tiny_config(tiny_root)  # its keys (layers, ...) override the files'
        config = Config(model=model, dataset="mkg-tiny", config_file_list=files, config_dict=fast)
        for key, value in keys.items():
            assert key in fast or config[key] == value, (label, key)


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_terminated_runner_stops_its_workers_and_leaves_no_spec_files(tiny_root, tmp_path, jobs):
    """SIGTERM to the runner (not its process group): the running workers stop, no queued run starts, no
    worker spec file is left behind, and the exit status says it was terminated."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "out"
    config = _shared(tiny_root, epochs=500, stopping_step=500, eval_step=50)
    flags = [f"--{k}={v}" for k, v in config.items() if k in ("data_path", "feature_cache_dir", "epochs",
                                                                 "stopping_step", "eval_step", "state")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runner = subprocess.Popen([sys.executable, os.path.join(root, "run_recbole_mkg.py"), "--model=BPR,LightGCN,KGAT",
                               "--dataset=mkg-tiny", "--protocol=paper", f"--jobs={jobs}", f"--results_dir={out}",
                               "--show_progress=False", *flags], cwd=root, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    runs = out / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(runs.glob(".*.spec.json")) if runs.exists() else []) < jobs:
        assert runner.poll() is None, runner.communicate()[0][-3000:]
        time.sleep(0.5)
    assert len(list(runs.glob(".*.spec.json"))) == jobs, f"{jobs} worker(s) should be running"
    workers = psutil.Process(runner.pid).children(recursive=True)
    assert workers
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=120)[0]
    assert runner.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert f"stopping {jobs} running run(s)" in output
    # with --jobs > 1 each worker thread says so (with one job the exit goes straight through the launch)
    assert ("stopped (the runner was terminated)" in output) == (jobs > 1)
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    assert not list(runs.glob(".*.spec.json"))
    assert not list(runs.glob("*.json"))  # nothing finished, nothing recorded as failed, KGAT never started
    assert "KGAT__seed2020: running" not in output
    assert ("LightGCN__seed2020: running" in output) == (jobs == 2)


def test_a_runs_log_shows_its_progress_bars(tiny_root, tmp_path):
    """With show_progress (RecBole's default) each run's log holds RecBole's batch progress bars, so a long
    epoch can be followed in logs/<key>.log."""
    compare(["BPR"], "mkg-tiny", seeds=[2020], config_file_list=[protocol_file("paper")],
            config_dict=_shared(tiny_root, epochs=1, show_progress=True), results_dir=str(tmp_path),
            log=lambda line: None)
    log = open(tmp_path / "logs" / "BPR__seed2020.log", encoding="utf-8").read()
    assert "Train     0" in log and "100%" in log and "Evaluate" in log
