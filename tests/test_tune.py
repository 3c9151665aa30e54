"""Ray Tune sweeps: RecBole's search-space syntax, a 2-trial sweep on CPU, failures, resume, best config."""
import json
import math
import os
import re

import pytest
import yaml

from recbole_mkg.tune import parse_search_space, run_tune
from tests.conftest import ROOT, tiny_config


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


def test_a_misspelt_parameter_of_a_space_is_named_once(tmp_path):
    """A search-space key RecBole and the plugin do not know is warned about when the file is read (the trials
    would each ignore it silently), with the nearest known key; known keys raise nothing."""
    import warnings

    from recbole_mkg.config import UnknownConfigKeyWarning

    path = tmp_path / "typo.test"
    path.write_text("learning_rate loguniform -8,0\nreg_wieght choice [0.1,0.01]\n")
    with pytest.warns(UnknownConfigKeyWarning, match=r"typo.test:.*'reg_wieght'.*did you mean 'reg_weight'"):
        assert set(parse_search_space(str(path))) == {"learning_rate", "reg_wieght"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownConfigKeyWarning)
        for shipped in ("MultiKG4Rec", "CrossGMMI", "MKGAT", "KGAT", "KGIN", "LightGCN", "BPR", "CKE"):
            parse_search_space(os.path.join(ROOT, "benchmarks", "spaces", f"{shipped}.test"))


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


def test_two_trial_sweep_on_cpu_records_failure_and_resumes(local_ray, tiny_root, tmp_path):
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
    assert out["chart"] == f"{out['path']}/trials.png" and os.path.getsize(out["chart"]) > 0
    assert open(f"{out['path']}/trials.csv").read().startswith("trial,status,best valid ndcg@20,epochs")
    # the best config is a config file that --config_files accepts
    best = yaml.safe_load(open(out["best_config"]))
    assert best["learning_rate"] == 0.01 and best["embedding_size"] == 8 and best["epochs"] == 2
    from recbole_mkg.config import Config

    assert Config("BPR", "mkg-tiny", config_file_list=[out["best_config"]])["embedding_size"] == 8
    assert json.load(open(f"{out['path']}/sweep.json"))["scheduler"] == {"name": "asha", "grace_period": 1,
                                                                          "reduction_factor": 2.0}
    with pytest.raises(ValueError, match=re.escape("--grace_period=2 (recorded: 1)")):  # resumed: its own
        run_tune("BPR", "mkg-tiny", str(space), config_dict=config, grace_period=2, tune_dir=str(tmp_path / "tune"),
                 num_cpus=2, log=logs.append)
    # running the same sweep again restores it: nothing is rerun
    again = run_tune("BPR", "mkg-tiny", str(space), config_dict=config, num_samples=1, max_concurrent=1,
                     tune_dir=str(tmp_path / "tune"), num_cpus=2, log=logs.append)
    assert any(line.startswith("[tune] resuming") for line in logs)
    # Ray's restored tuner exposes the generator the new limit goes to (not the "not applied" fallback)
    assert "[tune] resumed sweep: at most 1 trials at once" in logs
    assert sorted(t["trial"] for t in again["trials"]) == sorted(t["trial"] for t in out["trials"])
    assert again["best_params"] == out["best_params"]
    # --no_resume: a new sweep under the same name; the earlier trials' states move aside, so that a later
    # resume of the new sweep replays only its own trials into ASHA
    fresh = run_tune("BPR", "mkg-tiny", str(space), config_dict=config, num_samples=1, resume=False,
                     tune_dir=str(tmp_path / "tune"), num_cpus=2, log=logs.append)
    assert any("the earlier sweep's trial states moved to" in line for line in logs)
    states = {p.name for p in (tmp_path / "tune" / "BPR-mkg-tiny" / "trial_state").iterdir()}
    # (the trial that fails on its config fails before it has a state)
    assert states == {t["trial"] for t in fresh["trials"] if t["status"] != "ERROR"}
    assert not states & {t["trial"] for t in out["trials"]}


def test_equal_budget_comparison_tunes_every_model_on_the_split_then_runs_the_best(local_ray, tiny_root, tmp_path):
    from recbole_mkg.compare import tune_and_compare
    from tests.test_compare import _shared

    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "BPR.test").write_text("learning_rate choice [0.02,0.0001]\n")
    # a list-valued choice: the stratified sampler must hand it over whole (Ray reads list values of preset
    # trials as nested keys)
    (spaces / "KGAT.test").write_text("learning_rate choice [0.02,0.0001]\nmess_dropout choice [0.0,0.2]\n"
                                      "layers choice [[16],[16,8]]\n")
    variant = tmp_path / "no_dropout.yaml"
    variant.write_text("mess_dropout: 0.0\n")
    out, logs = tmp_path / "out", []
    result = tune_and_compare(["BPR", "KGAT", "KGAT@nodrop"], "mkg-tiny", str(spaces), seeds=[2020],
                              config_dict=_shared(tiny_root, epochs=2), results_dir=str(out), num_samples=2,
                              tune_options={"num_cpus": 2, "scheduler": "fifo"},
                              model_config_files={"KGAT@nodrop": [str(variant)]}, log=logs.append)
    budget = json.load(open(out / "tuning_budget.json"))
    assert budget["trials_per_model"] == 2 and budget["epochs_cap_per_trial"] == 2
    assert set(budget["models"]) == {"BPR", "KGAT"}  # the variant reuses its base model's sweep
    for model in ("BPR", "KGAT"):
        b = budget["models"][model]
        assert b["trials_run"] == 2 and 0 <= b["best_valid"] <= 1
        assert b["sampler"] == "stratified"  # the equal budget's default: each choice value once in 2 trials
        trials = open(out / "tune" / model / "trials.csv").read()
        assert trials.count(",0.02,") == 1 and trials.count(",0.0001,") == 1, trials
        # every trial trained on the saved split
        trial = yaml.safe_load(open(b["best_config"]))
        assert trial["data_path"] == str(out / "split") and trial["benchmark_filename"] == ["train", "valid", "test"]
    records = {r["model"]: r for r in result["records"]}
    assert set(records) == {"BPR", "KGAT", "KGAT@nodrop"}
    kgat_best = budget["models"]["KGAT"]["best_params"]
    assert records["KGAT"]["config"]["learning_rate"] == kgat_best["learning_rate"]
    assert records["KGAT"]["config"]["mess_dropout"] == kgat_best["mess_dropout"]
    assert records["KGAT@nodrop"]["config"]["learning_rate"] == kgat_best["learning_rate"]
    assert records["KGAT@nodrop"]["config"]["mess_dropout"] == 0.0  # the variant's own file wins
    assert records["BPR"]["config"]["learning_rate"] == budget["models"]["BPR"]["best_params"]["learning_rate"]
    table = open(out / "results.md").read()
    assert "Tuning budget (equal for every model): 2 trials x 2 epochs per trial" in table
    assert "| KGAT | 2 | 2 | stratified | FIFO (every trial to its cap) |" in table
    assert "2 epochs per trial, scheduler FIFO (every trial to its cap)," in table
    assert budget["scheduler"] == {"name": "fifo"} and budget["scheduler_equal"]
    kgat_trials = open(out / "tune" / "KGAT" / "trials.csv").read()
    assert "[16]" in kgat_trials and "[16, 8]" in kgat_trials
    # a second sitting reuses the sweeps and the runs; a sweep folder without its best.json (made or edited
    # by hand) still counts, with its record shown as unknown
    (out / "tune" / "KGAT" / "best.json").unlink()
    logs.clear()
    tune_and_compare(["BPR", "KGAT", "KGAT@nodrop"], "mkg-tiny", str(spaces), seeds=[2020],
                     config_dict=_shared(tiny_root, epochs=2), results_dir=str(out), num_samples=2,
                     tune_options={"num_cpus": 2}, model_config_files={"KGAT@nodrop": [str(variant)]},
                     log=logs.append)
    assert sum("sweep done before" in line for line in logs) == 2
    assert sum("result exists, skipped" in line for line in logs) == 3
    assert any("best.json is missing" in line and "KGAT" in line for line in logs)
    budget = json.load(open(out / "tuning_budget.json"))
    assert budget["models"]["KGAT"]["best_valid"] is None and budget["models"]["BPR"]["best_valid"] is not None
    assert "| KGAT | 2 | 2 | stratified | FIFO (every trial to its cap) | - |" in open(out / "results.md").read()
    # a third sitting with one model keeps the other's record: the budget is the folder's, not the sitting's
    tune_and_compare(["BPR"], "mkg-tiny", str(spaces), seeds=[2020], config_dict=_shared(tiny_root, epochs=2),
                     results_dir=str(out), num_samples=2, tune_options={"num_cpus": 2}, log=logs.append)
    budget = json.load(open(out / "tuning_budget.json"))
    assert set(budget["models"]) == {"BPR", "KGAT"} and budget["trials_per_model"] == 2


def test_equal_budget_comparison_needs_a_space_for_every_model(tiny_root, tmp_path):
    from recbole_mkg.compare import tune_and_compare

    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "BPR.test").write_text("learning_rate choice [0.01]\n")
    with pytest.raises(FileNotFoundError, match=r"no search space for KGAT .*KGAT\.test"):
        tune_and_compare(["BPR", "KGAT"], "mkg-tiny", str(spaces), config_dict=tiny_config(tiny_root),
                         results_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # nothing was split or run


def _space(tmp_path, text, name="space.test"):
    path = tmp_path / name
    path.write_text(text)
    return parse_search_space(str(path))


def test_stratified_trials_cover_every_stratum_and_balance_choices(tmp_path):
    from recbole_mkg.tune_sampling import stratified_trials

    space = _space(tmp_path, "learning_rate loguniform -9.21,-4.61\nreg_weight choice [1e-5,1e-4,1e-3]\n"
                             "dropout quniform 0,0.5,0.1\nn_layers randint 1,4\nlayers grid [[8],[8,8]]\n")
    trials = stratified_trials(space, 4, seed=7)
    assert len(trials) == 8  # 2 grid points x 4
    for layers in ([8], [8, 8]):
        group = [t for t in trials if t["layers"] == layers]
        assert len(group) == 4
        # one learning rate in each quarter of [1e-4, 1e-2] in log space
        strata = sorted(int((math.log(t["learning_rate"]) + 9.21) / (9.21 - 4.61) * 4) for t in group)
        assert strata == [0, 1, 2, 3]
        counts = sorted(sum(t["reg_weight"] == v for t in group) for v in (1e-5, 1e-4, 1e-3))
        assert counts == [1, 1, 2]
        # rounded to the step; one per stratum of [0, 0.5]; randint's upper bound excluded
        assert all(abs(t["dropout"] * 10 - round(t["dropout"] * 10)) < 1e-9 for t in group)
        assert all(t["n_layers"] in (1, 2, 3) for t in group)
    assert [t["learning_rate"] for t in trials[:4]] == [t["learning_rate"] for t in trials[4:]]
    assert stratified_trials(space, 4, seed=7) == trials  # reproducible
    assert stratified_trials(space, 4, seed=8) != trials


def test_stratified_trials_give_models_sharing_a_line_the_same_values(tmp_path):
    from recbole_mkg.tune_sampling import stratified_trials

    lr = "learning_rate loguniform -9.21,-4.61\n"
    bpr = stratified_trials(_space(tmp_path, lr, "BPR.test"), 4)
    kgat = stratified_trials(_space(tmp_path, lr + "mess_dropout choice [0.0,0.1,0.3]\nreg_weight uniform 0,1\n",
                                    "KGAT.test"), 4)
    assert [t["learning_rate"] for t in bpr] == [t["learning_rate"] for t in kgat]
    assert len({t["learning_rate"] for t in bpr}) == 4


def test_stratified_sampler_rejects_what_it_cannot_stratify(tmp_path):
    from ray import tune

    from recbole_mkg.tune_sampling import stratified_trials

    with pytest.raises(ValueError, match="'x'.*Normal.*--sampler=random"):
        stratified_trials({"x": tune.randn(0, 1)}, 4)
    with pytest.raises(ValueError, match="at least 1"):
        stratified_trials(_space(tmp_path, "learning_rate uniform 0,1\n"), 0)
    with pytest.raises(ValueError, match="--sampler='latin'"):
        run_tune("BPR", "mkg-tiny", str(tmp_path / "space.test"), num_samples=2, sampler="latin",
                 tune_dir=str(tmp_path / "tune"))


def test_stratified_sweep_runs_its_trials_and_keeps_them_when_resumed(local_ray, tiny_root, tmp_path, capfd):
    from recbole_mkg.tune_sampling import stratified_trials

    space = tmp_path / "hyper.test"
    space.write_text("learning_rate loguniform -6,-3\nembedding_size choice [8,16]\n")
    config = tiny_config(tiny_root, epochs=1, show_progress=True)
    config.pop("checkpoint_dir")
    expected = stratified_trials(parse_search_space(str(space)), 2, seed=11)
    out = run_tune("BPR", "mkg-tiny", str(space), config_dict=config, num_samples=2, scheduler="fifo",
                   tune_dir=str(tmp_path / "tune"), num_cpus=2, sampler="stratified", tune_seed=11, log=lambda _: None)
    # the driver's progress bar: the budget of 2 trials x 1 epoch, run in full
    assert re.search(r"sweep: 100%\S* 2/2 .*trials done 2, running 0, failed 0, best valid ndcg@20", capfd.readouterr().err)
    key = lambda p: (p["embedding_size"], p["learning_rate"])  # noqa: E731
    assert sorted(map(key, (t["params"] for t in out["trials"]))) == sorted(map(key, expected))
    assert all(t["status"] == "finished" for t in out["trials"])
    record = json.load(open(f"{out['path']}/sweep.json"))
    assert record["sampler"] == "stratified" and record["seed"] == 11 and len(record["points"]) == 2
    assert record["scheduler"] == {"name": "fifo"}
    assert yaml.safe_load(open(out["best_config"]))["learning_rate"] in {p["learning_rate"] for p in expected}
    logs = []  # resumed without the flags: the sweep keeps its own sampler, seed and trials
    again = run_tune("BPR", "mkg-tiny", str(space), config_dict=config, tune_dir=str(tmp_path / "tune"),
                     num_cpus=2, log=logs.append)
    assert any(line.startswith("[tune] resuming") for line in logs)
    assert sorted(map(key, (t["params"] for t in again["trials"]))) == sorted(map(key, expected))
    # resumed with flags that contradict the record: an error that names them, never a silent switch
    for clash, shown in (({"sampler": "random"}, "--sampler=random (recorded: stratified)"),
                         ({"tune_seed": 1}, "--tune_seed=1 (recorded: 11)"),
                         ({"num_samples": 4}, "--num_samples=4 (recorded: 2)"),
                         ({"scheduler": "asha"}, "--scheduler=asha (recorded: fifo)")):
        with pytest.raises(ValueError, match=re.escape(shown) + r".*sweep.json|sweep.json.*" + re.escape(shown)):
            run_tune("BPR", "mkg-tiny", str(space), config_dict=config, tune_dir=str(tmp_path / "tune"),
                     num_cpus=2, log=lambda _: None, **clash)
    # the recorded values themselves are fine
    run_tune("BPR", "mkg-tiny", str(space), config_dict=config, num_samples=2, sampler="stratified", tune_seed=11,
             tune_dir=str(tmp_path / "tune"), num_cpus=2, log=lambda _: None)


def test_cli_hands_the_sampler_to_the_sweep_and_the_comparison(monkeypatch):
    import inspect

    import recbole_mkg.compare
    import recbole_mkg.tune
    import run_recbole_mkg

    calls = {}

    def recorder(name, real):  # the call must fit the real function's signature; defaults count
        def record(*a, **kw):
            bound = inspect.signature(real).bind(*a, **kw)
            bound.apply_defaults()
            calls.setdefault(name, bound.arguments)
        return record

    monkeypatch.setattr(recbole_mkg.tune, "run_tune", recorder("sweep", recbole_mkg.tune.run_tune))
    monkeypatch.setattr(recbole_mkg.compare, "tune_and_compare",
                        recorder("compare", recbole_mkg.compare.tune_and_compare))
    run_recbole_mkg.main(["--model=BPR", "--tune=space.test", "--num_samples=3"])
    # unset: None, which a new sweep reads as Ray's draws with seed 2020 and a resumed one as its record's
    assert calls["sweep"]["sampler"] is None and calls["sweep"]["tune_seed"] is None
    assert calls["sweep"]["num_samples"] == 3
    # the scheduler's settings too: a new sweep's defaults, a resumed sweep's record
    assert calls["sweep"]["scheduler"] is None and calls["sweep"]["grace_period"] is None
    run_recbole_mkg.main(["--model=BPR,KGAT", "--tune=spaces", "--sampler=stratified", "--tune_seed=5",
                          "--grace_period=3"])
    assert calls["compare"]["tune_options"]["grace_period"] == 3
    assert calls["compare"]["tune_options"]["sampler"] == "stratified"
    assert calls["compare"]["tune_options"]["tune_seed"] == 5
    assert calls["compare"]["num_samples"] is None  # unset: an interrupted sweep resumes with its record's


def test_the_comparison_hands_an_unset_number_of_trials_to_the_sweep(tiny_root, tmp_path, monkeypatch):
    """tune_and_compare without num_samples must not ask an interrupted sweep for a default it may not have
    been started with (that is an error in run_tune); the budget then shows the sweep's recorded number."""
    import recbole_mkg.tune
    from recbole_mkg.compare import _tuned_config

    seen = {}

    def sweep(model, dataset, space, num_samples=None, tune_dir=None, name=None, **kwargs):
        seen["num_samples"] = num_samples
        folder = tmp_path / "tune" / name
        folder.mkdir(parents=True)
        (folder / "best_config.yaml").write_text("learning_rate: 0.01\n")
        (folder / recbole_mkg.tune.SWEEP_RECORD).write_text(json.dumps({"sampler": "random", "seed": 1,
                                                                          "num_samples": 3}))
        return {"best_config": str(folder / "best_config.yaml")}

    monkeypatch.setattr(recbole_mkg.tune, "run_tune", sweep)
    budget, logs = {"models": {}}, []
    _tuned_config("BPR", "mkg-tiny", "BPR.test", None, str(tmp_path / "tune"), budget, [], tiny_config(tiny_root),
                  {}, logs.append)
    assert seen["num_samples"] is None
    assert budget["models"]["BPR"]["trials"] == 3 and budget["models"]["BPR"]["sampler"] == "random"


def test_a_malformed_sweep_record_names_the_file(tmp_path):
    from recbole_mkg.tune import read_sweep_record

    assert read_sweep_record(str(tmp_path)) == {}  # a sweep from before the record
    (tmp_path / "sweep.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"sweep.json is not valid JSON.*delete the sweep folder"):
        read_sweep_record(str(tmp_path))


def test_max_concurrent_limits_the_trials_the_generator_starts(local_ray, tiny_root, tmp_path, monkeypatch):
    """--max_concurrent reaches the search algorithm itself: Ray ignores TuneConfig.max_concurrent_trials (with
    a warning) when search_alg is a BasicVariantGenerator, which both samplers use."""
    from ray import tune

    class Captured(Exception):
        pass

    seen = {}

    class FakeTuner:
        @staticmethod
        def can_restore(path, *args, **kwargs):
            return False

        def __init__(self, trainable, param_space=None, tune_config=None, run_config=None):
            seen["config"] = tune_config
            raise Captured

    monkeypatch.setattr(tune, "Tuner", FakeTuner)
    space = tmp_path / "hyper.test"
    space.write_text("learning_rate loguniform -6,-3\n")
    config = tiny_config(tiny_root, epochs=1)
    for sampler in ("random", "stratified"):
        with pytest.raises(Captured):
            run_tune("BPR", "mkg-tiny", str(space), config_dict=config, num_samples=2, sampler=sampler,
                     max_concurrent=1, tune_dir=str(tmp_path / sampler), num_cpus=2, log=lambda _: None)
        assert seen["config"].search_alg.max_concurrent == 1, sampler
        assert not seen["config"].max_concurrent_trials  # would be ignored, with a warning


def test_max_concurrent_given_on_resume_replaces_the_sweeps_own_limit(local_ray, tiny_root, tmp_path, monkeypatch):
    """A restored generator takes back the limit saved with the sweep when fit() restores its state; a
    --max_concurrent given on resume must survive that."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    class Captured(Exception):
        pass

    saved = BasicVariantGenerator(max_concurrent=1)  # the generator as the sweep's folder holds it
    state = saved.get_state()

    class Restored:
        def __init__(self):
            self._local_tuner = type("Internal", (), {})()
            self._local_tuner._tune_config = tune.TuneConfig(search_alg=BasicVariantGenerator(max_concurrent=1))

        def fit(self):
            search_alg = self._local_tuner._tune_config.search_alg
            search_alg.set_state(state)  # what Ray does when the resumed run starts
            raise Captured(search_alg.max_concurrent)

    class FakeTuner:
        @staticmethod
        def can_restore(path, *args, **kwargs):
            return True

        @staticmethod
        def restore(path, **kwargs):
            return Restored()

    monkeypatch.setattr(tune, "Tuner", FakeTuner)
    space = tmp_path / "hyper.test"
    space.write_text("learning_rate loguniform -6,-3\n")
    logs = []
    with pytest.raises(Captured) as limit:
        run_tune("BPR", "mkg-tiny", str(space), config_dict=tiny_config(tiny_root, epochs=1), max_concurrent=3,
                 tune_dir=str(tmp_path), num_cpus=2, log=logs.append)
    assert limit.value.args == (3,)
    assert any("at most 3 trials at once" in line for line in logs)
    # without the flag, the sweep keeps its own limit
    with pytest.raises(Captured) as limit:
        run_tune("BPR", "mkg-tiny", str(space), config_dict=tiny_config(tiny_root, epochs=1),
                 tune_dir=str(tmp_path), num_cpus=2, log=logs.append)
    assert limit.value.args == (1,)


def test_trials_get_absolute_folders_also_from_config_files(tiny_root, tmp_path, monkeypatch):
    """Ray runs a trial in its own folder: relative folders of the flags and of config files would point
    elsewhere there."""
    import os

    from recbole_mkg.config import Config, absolute_paths

    monkeypatch.chdir(tiny_root)
    config_file = tmp_path / "paths.yaml"
    config_file.write_text("feature_dir: features\n")
    flags = dict(tiny_config(".", checkpoint_dir="ckpt", feature_cache_dir="cache"))
    resolved = Config(model="BPR", dataset="mkg-tiny", config_file_list=[str(config_file)], config_dict=flags)
    out = absolute_paths(flags, resolved)
    assert out["data_path"] == str(tiny_root)  # the dataset's parent folder, as the flag meant it
    assert out["feature_dir"] == os.path.join(str(tiny_root), "features")  # from the config file
    assert out["checkpoint_dir"] == os.path.join(str(tiny_root), "ckpt")
    assert out["feature_cache_dir"] == os.path.join(str(tiny_root), "cache")
    assert absolute_paths({"data_path": "d", "learning_rate": 0.1}) == {"data_path": os.path.abspath("d"),
                                                                       "learning_rate": 0.1}


def test_a_trial_whose_worker_dies_goes_on_from_its_last_epoch(tiny_root, tmp_path):
    """--trial_retries: the trial's worker process is killed mid-training; Ray restarts the trial, which goes
    on from its progress file (written after every validation), so its epochs continue instead of starting
    again, and it finishes its whole budget."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    space = tmp_path / "hyper.test"
    space.write_text("learning_rate choice [0.01]\n")
    # small batches and many epochs: long enough (tens of seconds) to be caught mid-training on a busy machine
    config = tiny_config(tiny_root, epochs=60, stopping_step=200, train_batch_size=16)
    config.pop("checkpoint_dir")
    tune_dir, out_file = tmp_path / "tune", tmp_path / "out.json"
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
        "from recbole_mkg.tune import run_tune\n"
        f"out = run_tune('BPR', 'mkg-tiny', {str(space)!r}, config_dict={config!r}, num_samples=1, scheduler='fifo',\n"
        f"               tune_dir={str(tune_dir)!r}, num_cpus=1, trial_retries=1, log=print)\n"
        f"json.dump(out, open({str(out_file)!r}, 'w'), default=str)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def trial_worker():
        for proc in psutil.Process(driver.pid).children(recursive=True):
            try:
                if any("ImplicitFunc" in part or "_trainable" in part for part in proc.cmdline()):
                    return proc
            except psutil.Error:
                continue
        return None

    def epochs_reported():  # from the trial's own files (Ray's result.json reaches the folder up to 10 s late)
        return sum(len(json.loads(path.read_text())) for path in tune_dir.glob("*/trial_state/*/reports.json"))

    killed, worker, deadline = None, None, time.time() + 300
    while killed is None and time.time() < deadline and driver.poll() is None:
        worker = worker or trial_worker()
        # a few validated epochs in, with the trial's progress file written
        if worker is not None and epochs_reported() >= 3:
            worker.send_signal(signal.SIGKILL)
            killed = worker.pid
        time.sleep(0.05)
    output = driver.communicate(timeout=300)[0]
    assert killed, "the trial's worker was not found running: " + output[-3000:]
    assert driver.returncode == 0, output[-3000:]
    out = json.load(open(out_file))
    assert [(t["status"], t["epochs"]) for t in out["trials"]] == [("finished", 60)]
    rows = [json.loads(line) for line in open(next(tune_dir.glob("*/*/result.json")))]
    restarts = [r["epoch"] for r in rows if r["iterations_since_restore"] == 1]
    assert len(restarts) == 2 and restarts[0] == 1, (restarts, killed, [(r["epoch"], r["iterations_since_restore"], r.get("pid")) for r in rows])  # the first start, and one restore
    assert restarts[1] > 2  # went on after the checkpointed epochs, not from epoch 1
    epochs = [r["epoch"] for r in rows]
    assert epochs[-1] == 60 and len(epochs) - len(set(epochs)) <= 2  # at most the epochs after the checkpoint again
    # the last epoch's report is the final one: it carries the test metrics, no second report follows it
    assert [r["epoch"] for r in rows if r.get("finished")] == [60] and "test_ndcg@20" in rows[-1]


def test_scheduler_settings_are_checked_and_recorded():
    from recbole_mkg.tune import describe_scheduler, scheduler_record

    assert scheduler_record() == {"name": "asha", "grace_period": 1, "reduction_factor": 2.0}
    assert scheduler_record("asha", 3, 3, max_epochs=20) == {"name": "asha", "grace_period": 3, "reduction_factor": 3.0}
    assert scheduler_record("fifo") == {"name": "fifo"}
    assert describe_scheduler(scheduler_record(grace_period=3)) == "ASHA (grace period 3 epochs, reduction factor 2)"
    assert describe_scheduler(None) == "not recorded"
    for bad, message in ((dict(scheduler="hyperband"), "--scheduler='hyperband': use one of asha, fifo"),
                         (dict(scheduler="fifo", grace_period=3),
                          "--grace_period=3: ASHA's settings, but --scheduler=fifo"),
                         (dict(grace_period=0), "--grace_period=0: a whole number of epochs, at least 1"),
                         (dict(grace_period=25, max_epochs=20),
                          "--grace_period=25 is more than the trials' epoch cap (20"),
                         (dict(reduction_factor=1), "--reduction_factor=1: must be above 1")):
        with pytest.raises(ValueError, match=re.escape(message)):
            scheduler_record(**bad)


def test_a_budget_whose_sweeps_had_other_scheduler_settings_is_not_equal(tmp_path):
    """Sweeps of one folder made in several sittings: a grace period changed between them makes the budget
    unequal, said in the log and under the table, not hidden behind equal trials x epochs."""
    from recbole_mkg.compare import summarise_budget
    from recbole_mkg.results_report import budget_lines

    def sweep(grace):
        return {"space": "x.test", "epochs_cap": 20, "trials": 4, "trials_run": 4, "sampler": "stratified",
                "scheduler": {"name": "asha", "grace_period": grace, "reduction_factor": 2.0}}

    logs = []
    budget = summarise_budget({"selection": "validation", "models": {"BPR": sweep(1), "KGAT": sweep(3)}}, logs.append)
    assert budget["epochs_cap_per_trial"] == 20 and budget["trials_per_model"] == 4
    assert budget["scheduler"] is None and budget["scheduler_equal"] is False
    assert len(logs) == 1 and "schedulers or their settings differ" in logs[0] and "'grace_period': 3" in logs[0]
    (tmp_path / "tuning_budget.json").write_text(json.dumps(budget))
    text = "\n".join(budget_lines(str(tmp_path), ["BPR", "KGAT"]))
    assert "Tuning budget (NOT EQUAL): 4 trials x 20 epochs per trial, scheduler UNEQUAL schedulers" in text
    assert "| KGAT | 4 | 20 | stratified | ASHA (grace period 3 epochs, reduction factor 2) |" in text
    same = summarise_budget({"selection": "validation", "models": {"BPR": sweep(3), "KGAT": sweep(3)}}, logs.append)
    assert same["scheduler"] == sweep(3)["scheduler"] and same["scheduler_equal"] and len(logs) == 1


def test_a_trial_the_last_rung_stops_after_its_last_epoch_counts_as_complete(tmp_path):
    """ASHA's last rung can stop a trial after its final epoch, before its test report: it ran its whole budget,
    so it is ``reached the cap`` and may be the sweep's best; a trial stopped at an earlier rung is not chosen
    over complete ones, whatever its score."""
    import pandas as pd

    from recbole_mkg.tune import BEST, EPOCH, SCORE, _write_outputs

    class Result:
        def __init__(self, name, best, epochs, finished=False):
            self.path = str(tmp_path / name)
            self.config = {"learning_rate": best}
            self.error = None
            self.metrics = {"trial_id": name, SCORE: best, BEST: best, EPOCH: epochs,
                            **({"finished": True, "test_ndcg@20": 0.5} if finished else {})}
            self.metrics_dataframe = pd.DataFrame({BEST: [best / 2, best]})

    class Probe(dict):
        final_config_dict = {}

    grid = [Result("done", 0.20, 20, finished=True), Result("capped", 0.25, 20), Result("cut", 0.30, 5)]
    out = _write_outputs(grid, str(tmp_path), {}, {"learning_rate": None}, "ndcg@20", "max",
                         Probe(model="BPR", dataset="x"), lambda _: None, max_epochs=20)
    assert {t["trial"]: t["status"] for t in out["trials"]} == {"done": "finished", "capped": "reached the cap",
                                                               "cut": "stopped early"}
    assert out["best_params"] == {"learning_rate": 0.25} and out["best_test"] == {}
    assert "| capped | reached the cap | 0.2500 | 20 |" in open(tmp_path / "trials.md").read()


def test_last_validation_is_the_cap_or_early_stopping():
    from types import SimpleNamespace

    from recbole_mkg.tune import _is_last_validation

    def trainer(cur_step=0):
        return SimpleNamespace(epochs=20, cur_step=cur_step, stopping_step=2)

    assert not _is_last_validation(trainer(), 18, eval_step=1) and _is_last_validation(trainer(), 19, eval_step=1)
    # eval_step 3: validations after epochs 3, 6, ..., 18; the one after 18 is the last
    assert not _is_last_validation(trainer(), 14, eval_step=3) and _is_last_validation(trainer(), 17, eval_step=3)
    assert _is_last_validation(trainer(cur_step=3), 4, eval_step=1)  # RecBole's early stopping ends it here
    assert not _is_last_validation(trainer(cur_step=2), 4, eval_step=1)


def test_a_trial_stopped_at_its_cap_has_reported_its_test_metrics(tiny_root, tmp_path, monkeypatch):
    """ASHA's last rung sits at the epoch cap and may stop a trial at that report: the report itself carries
    the best epoch's test metrics, so a sweep whose best trial was stopped there still has test figures."""
    from types import SimpleNamespace

    from ray import tune

    from recbole_mkg.tune import EPOCH, _trainable

    class Stopped(Exception):
        pass

    reports = []

    def report(metrics, checkpoint=None):
        reports.append(dict(metrics))
        if metrics[EPOCH] >= 3:  # the scheduler stops the trial at its last rung
            raise Stopped

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0"))
    config = tiny_config(tiny_root, epochs=3, stopping_step=10, my_models_own_key=1)
    config.pop("checkpoint_dir")
    setup = {"model": "BPR", "dataset": "mkg-tiny", "config_file_list": None, "config_dict": config,
             "gpus_per_trial": 0, "points": None, "sweep_path": str(tmp_path)}
    import warnings

    from recbole_mkg.config import UnknownConfigKeyWarning

    with pytest.raises(Stopped), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainable({"learning_rate": 0.01}, setup=setup)
    # the sweep's driver warns about an unknown key once; its trials do not repeat it
    assert not [w for w in caught if issubclass(w.category, UnknownConfigKeyWarning)]
    assert [r[EPOCH] for r in reports] == [1, 2, 3]
    assert not any(k.startswith("test_") for r in reports[:2] for k in r)
    assert reports[-1]["finished"] is True and 0 <= reports[-1]["test_ndcg@20"] <= 1
    assert {"test_recall@10", "test_mrr@20"} <= set(reports[-1])


def test_trial_curves_skip_the_separate_final_report_and_the_chart_is_drawn(tmp_path):
    import pandas as pd

    from recbole_mkg.tune_chart import _numeric_params, trial_curve, trials_chart

    history = pd.DataFrame({"epoch": [1, 2, 3, 3], "valid_score": [0.1, 0.3, 0.2, 0.3],
                            "valid_ndcg@20": [0.1, 0.3, 0.2, float("nan")]})  # the last: a final report
    assert trial_curve(history, "ndcg@20") == ([1, 2, 3], [0.1, 0.3, 0.2])
    assert trial_curve(None, "ndcg@20") == ([], []) and trial_curve(history, "recall@10") == ([], [])
    trials = [{"trial": "a", "status": "finished", "params": {"learning_rate": 1e-4, "embedding_size": 64,
                                                              "flag": True}, "best": 0.3, "curve": ([1, 2], [0.2, 0.3])},
              {"trial": "b", "status": "stopped early", "params": {"learning_rate": 1e-2, "embedding_size": 64,
                                                                   "flag": False}, "best": 0.1, "curve": ([1], [0.1])},
              {"trial": "c", "status": "ERROR", "params": {"learning_rate": 1e-3, "embedding_size": 64,
                                                           "flag": True}, "best": None, "curve": ([], [])}]
    # only numbers that vary are plotted against (not a constant, not a boolean)
    assert _numeric_params(trials[:2], ["embedding_size", "flag", "learning_rate"]) == ["learning_rate"]
    path = trials_chart(str(tmp_path / "trials.png"), trials, "ndcg@20", ["embedding_size", "flag", "learning_rate"],
                        best_trial="a")
    assert path == str(tmp_path / "trials.png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert trials_chart(str(tmp_path / "none.png"), trials[2:], "ndcg@20", ["learning_rate"]) is None
    assert not (tmp_path / "none.png").exists()


def test_a_resumed_asha_sweep_keeps_the_rungs_its_trials_recorded(local_ray, tiny_root, tmp_path, monkeypatch):
    """Ray restores a resumed sweep's ASHA scheduler with empty rungs; a trial going on from epoch k would then
    record its later scores in the earlier rungs, and later trials would be cut against them. The sweep is
    killed mid-trial (driver, Ray and worker), resumed, and the scheduler Ray uses holds the trial's scores
    *at* the milestones from before the kill, and its later milestones from after the resume."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    import recbole_mkg.tune as tune_module

    space = tmp_path / "hyper.test"
    space.write_text("learning_rate choice [0.01]\n")
    config = tiny_config(tiny_root, epochs=24, stopping_step=100, train_batch_size=16)
    config.pop("checkpoint_dir")
    tune_dir = tmp_path / "tune"
    args = dict(config_dict=config, num_samples=1, scheduler="asha", grace_period=1, reduction_factor=2,
                tune_dir=str(tune_dir))
    script = (
        "import sys\n"
        f"sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))!r})\n"
        "from recbole_mkg.tune import run_tune\n"
        f"run_tune('BPR', 'mkg-tiny', {str(space)!r}, num_cpus=1, log=print, **{args!r})\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    def reports():  # the trial's own record, written with its progress file
        files = list(tune_dir.glob("*/trial_state/*/reports.json"))
        return (files[0].parent.name, json.loads(files[0].read_text())) if files else (None, [])

    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and len(reports()[1]) < 3:
        time.sleep(0.05)
    assert driver.poll() is None, "the sweep ended before it could be interrupted: " + driver.communicate()[0][-3000:]
    family = psutil.Process(driver.pid).children(recursive=True)
    os.killpg(driver.pid, signal.SIGKILL)
    for proc in family:
        try:
            proc.kill()
        except psutil.Error:
            pass
    driver.communicate(timeout=60)
    trial, before = reports()
    assert 3 <= before[-1]["epoch"] < 24
    score_at = {r["epoch"]: r["valid_score"] for r in before}

    schedulers, replay = [], tune_module._replay_asha_rungs

    def capture(tuner, *a, **k):
        schedulers.append(tuner._local_tuner._tune_config.scheduler)
        return replay(tuner, *a, **k)

    monkeypatch.setattr(tune_module, "_replay_asha_rungs", capture)
    logs = []
    out = run_tune("BPR", "mkg-tiny", str(space), log=logs.append, **args)
    assert [t["epochs"] for t in out["trials"]] == [24]
    assert "[tune] resumed sweep: ASHA's rungs rebuilt from the reports of 1 trial(s)" in logs
    rungs = {milestone: dict(recorded) for milestone, recorded in schedulers[0]._brackets[0]._rungs}
    after = {r["epoch"]: r["valid_score"] for r in reports()[1]}
    for milestone in (1, 2):  # reported before the kill: the score of that epoch, not a later one
        assert rungs[milestone] == {trial: pytest.approx(score_at[milestone])}
    # recorded by the resumed run into the scheduler the replay filled: Ray used that very object
    assert rungs[16] == {trial: pytest.approx(after[16])}


def test_the_sweep_progress_bar_counts_epochs_and_shrinks_for_stopped_trials():
    import io
    from types import SimpleNamespace

    from recbole_mkg.tune import EPOCH, SCORE
    from recbole_mkg.tune_progress import SweepProgress

    out = io.StringIO()
    # a resumed sweep: trial b ran 4 epochs before, trial d finished before (it reports no more); the bar
    # starts at their epochs
    bar = SweepProgress(4, 10, "ndcg@20", "max", EPOCH, SCORE, recorded={"b": 4, "d": 10}, file=out)
    a, b, c = (SimpleNamespace(trial_id=i) for i in "abc")
    assert (bar.bar.n, bar.bar.total) == (14, 40)
    for epoch, score in ((1, 0.1), (2, 0.3)):
        bar.on_trial_result(0, [], a, {EPOCH: epoch, SCORE: score})
    bar.on_trial_result(0, [], b, {EPOCH: 5, SCORE: 0.2})  # b goes on from epoch 4: one epoch more
    assert bar.bar.n == 14 + 2 + 1
    bar.on_trial_complete(0, [], a)  # stopped by the scheduler after 2 of 10 epochs
    assert bar.bar.total == 40 - 8
    bar.on_trial_error(0, [], c)  # failed before any report
    assert bar.bar.total == 40 - 8 - 10
    bar.on_trial_result(0, [], a, {EPOCH: 3, SCORE: 0.9})  # a late report of an ended trial changes nothing
    assert bar.bar.n == 17 and bar.best == (0.3, "a")
    text = out.getvalue()
    assert "trials done 1, running 1, failed 1, best valid ndcg@20 0.3000 (a)" in text
    bar.on_experiment_end([])
    assert bar.bar.total == bar.bar.n == 17
    import pickle

    assert pickle.loads(pickle.dumps(bar)).epochs == {"a": 2, "b": 5, "d": 10}  # Ray may pickle its callbacks
