"""Ray Tune sweeps: RecBole's search-space syntax, a 2-trial sweep on CPU, failures, resume, best config."""
import json
import math

import pytest
import yaml

from recbole_mkg.tune import parse_search_space, run_tune
from tests.conftest import tiny_config


def test_recbole_params_file_syntax(tmp_path):
    path = tmp_path / "hyper.test"
    path.write_text("# comment\n"
                    "learning_rate loguniform -8,0\n"
                    "embedding_size choice [32,64,128]\n"
                    "aggregator_type choice [bi,gcn]\n"
                    "layers grid [[64,32],[64,32,16]]\n"
                    "reg_weight uniform 0,0.1\n"
                    "mess_dropout quniform 0,0.5,0.1\n"
                    "n_heads randint 1,9\n")
    space = parse_search_space(str(path))
    assert math.isclose(space["learning_rate"].lower, math.exp(-8)) and space["learning_rate"].upper == 1.0
    assert space["embedding_size"].categories == [32, 64, 128]
    assert space["aggregator_type"].categories == ["bi", "gcn"]
    assert space["layers"] == {"grid_search": [[64, 32], [64, 32, 16]]}
    assert (space["reg_weight"].lower, space["reg_weight"].upper) == (0.0, 0.1)
    assert (space["n_heads"].lower, space["n_heads"].upper) == (1, 9)
    bad = tmp_path / "bad.test"
    bad.write_text("learning_rate normal 0,1\n")
    with pytest.raises(ValueError, match=r"bad.test:1: .*unknown type 'normal'"):
        parse_search_space(str(bad))


def test_yaml_and_json_spaces(tmp_path):
    per_param = tmp_path / "space.yaml"
    per_param.write_text("learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\nembedding_size: [32, 64]\n"
                         "reg_weight: 1.0e-5\n")
    space = parse_search_space(str(per_param))
    assert math.isclose(space["learning_rate"].lower, 1e-4)  # values, not logs, in this form
    assert space["embedding_size"].categories == [32, 64] and space["reg_weight"] == 1e-5
    recbole_dict = tmp_path / "space.json"
    recbole_dict.write_text(json.dumps({"choice": {"embedding_size": [32]}, "loguniform": {"learning_rate": [-8, 0]}}))
    space = parse_search_space(str(recbole_dict))
    assert math.isclose(space["learning_rate"].lower, math.exp(-8))


def test_two_trial_sweep_on_cpu_records_failure_and_resumes(tiny_root, tmp_path):
    space = tmp_path / "hyper.test"
    space.write_text("learning_rate grid [0.01,-1]\nembedding_size choice [8]\n")  # trial 2 raises
    config = tiny_config(tiny_root, epochs=2)
    config.pop("checkpoint_dir")
    logs = []
    out = run_tune("BPR", "mkg-tiny", str(space), config_dict=config, num_samples=1, scheduler="asha",
                   cpus_per_trial=1, tune_dir=str(tmp_path / "tune"), num_cpus=2, log=logs.append)
    statuses = sorted((t["params"]["learning_rate"], t["status"]) for t in out["trials"])
    assert statuses == [(-1, "ERROR"), (0.01, "finished")]
    failed = next(t for t in out["trials"] if t["status"] == "ERROR")
    assert "learning_rate" in failed["error"]
    ok = next(t for t in out["trials"] if t["status"] == "finished")
    assert ok["epochs"] == 2 and 0 <= ok["best valid ndcg@20"] <= 1
    assert out["best_params"] == {"embedding_size": 8, "learning_rate": 0.01}
    assert set(out["best_test"]) >= {"recall@10", "ndcg@20"}
    table = open(f"{out['path']}/trials.md").read()
    assert "| ERROR |" in table and "| finished |" in table
    assert open(f"{out['path']}/trials.csv").read().startswith("trial,status,best valid ndcg@20,epochs")
    # the best config is a config file that --config_files accepts
    best = yaml.safe_load(open(out["best_config"]))
    assert best["learning_rate"] == 0.01 and best["embedding_size"] == 8 and best["epochs"] == 2
    from recbole_mkg.config import Config

    assert Config("BPR", "mkg-tiny", config_file_list=[out["best_config"]])["embedding_size"] == 8
    # running the same sweep again restores it: nothing is rerun
    again = run_tune("BPR", "mkg-tiny", str(space), config_dict=config, num_samples=1,
                     tune_dir=str(tmp_path / "tune"), num_cpus=2, log=logs.append)
    assert any(line.startswith("[tune] resuming") for line in logs)
    assert sorted(t["trial"] for t in again["trials"]) == sorted(t["trial"] for t in out["trials"])
    assert again["best_params"] == out["best_params"]
