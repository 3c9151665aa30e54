"""Benchmark scripts run end to end at toy sizes (their figures are not asserted: they are benchmarks)."""
import json
import os

import pytest

from benchmarks import bench_fusion


def test_fusion_benchmark_writes_every_variant_and_its_difference_from_eager(tmp_path):
    record = bench_fusion.main(["--items=12", "--seq_len=5", "--embedding_size=16", "--heads=2", "--inner_size=8",
                                "--variants=eager,bf16", "--steps=1", "--rounds=2", f"--out_dir={tmp_path}"])
    saved = json.load(open(tmp_path / "fusion_cpu.json"))
    assert saved["median"].keys() == {"eager", "bf16"} and len(saved["seconds_per_step"]["bf16"]) == 2
    assert saved["max_abs_diff_vs_eager"]["eager"] == 0.0
    assert 0.0 < saved["max_abs_diff_vs_eager"]["bf16"] < 0.5  # lower precision, the same function
    table = open(tmp_path / "fusion_cpu.md").read()
    assert "| bf16 |" in table and "12 sequences x 5" in table
    assert record["shapes"]["items"] == 12


def test_fusion_benchmark_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(SystemExit, match="cudagraphs needs --device=cuda"):
        bench_fusion.main(["--variants=eager,cudagraphs", f"--out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="unknown 'fast'"):
        bench_fusion.main(["--items=4", "--variants=eager,fast", f"--out_dir={tmp_path}"])


def test_row_scale_reads_a_checkpoints_rows_and_a_fresh_models(tiny_root, tmp_path):
    """The paper's fusion puts post-LayerNorm item rows (RMS 1 per element) among xavier-initialised ones."""
    from benchmarks import row_scale
    from recbole_mkg.quick_start import run_recbole_mkg
    from tests.conftest import tiny_config

    result = run_recbole_mkg("MultiKG4Rec", "mkg-tiny", config_dict=tiny_config(tiny_root), saved=True)
    assert row_scale.main([f"--checkpoint={result['checkpoint']}", f"--out_dir={tmp_path}"]) == 0
    report = json.loads((tmp_path / "row_scale_MultiKG4Rec_mkg-tiny_replace.json").read_text())
    assert set(report["initialised"]) == set(report["trained"]) == {"visual", "text"}
    for view, scales in report["initialised"].items():
        assert scales["items after fusion"] == pytest.approx(1.0, abs=1e-3)  # LayerNorm, weight 1, bias 0
        assert scales["transformer output"] == scales["items after fusion"]  # replace: the output itself
        assert scales["users"] < 0.5 and scales["items before fusion"] < 0.5
    assert report["trained"] != report["initialised"]  # the checkpoint's weights, not a fresh model's
    assert "| trained | text |" in (tmp_path / "row_scale_MultiKG4Rec_mkg-tiny_replace.md").read_text()


def test_benchmark_config_overrides_are_typed_as_recbole_reads_them():
    from benchmarks.cli import config_overrides

    unknown = ["--learning_rate=0.01", "--layers=[32, 16]", "--show_progress=False", "--x", "stray", "--name=a=b"]
    assert config_overrides(unknown) == {"learning_rate": 0.01, "layers": [32, 16], "show_progress": False,
                                         "name": "a=b"}
    assert config_overrides(unknown, typed=False)["learning_rate"] == "0.01"  # passed on to a child as given


@pytest.mark.parametrize("sampled", [False, True])
def test_scaling_benchmark_times_every_size_and_view_count(tmp_path, sampled):
    """Each size runs in its own child process on the generated CKG (full graph, or with
    ``--sample_sizes`` each batch's sampled receptive field); a child that fails is recorded as such, so this
    checks that none did (the generated dataset must offer what CollaborativeKG reads)."""
    from benchmarks import bench_scaling

    args = ["--sizes=1e3", "--steps=1", "--view_counts=1,2", f"--out_dir={tmp_path}"]
    assert bench_scaling.main(args + (["--sample_sizes=4,4,4"] if sampled else [])) == 0
    name = "scaling_sampled_cpu" if sampled else "scaling_cpu"
    rows = json.load(open(tmp_path / f"{name}.json"))["rows"]
    assert [(r["size"], r["views"]) for r in rows] == [(1000, 1), (1000, 2)]
    for row in rows:
        assert row["capped"] is None, row["capped"]
        assert row["ckg_edges"] == 4000 and row["step_s"] > 0 and row["attention_s"] > 0 and row["peak_rss_mb"] > 0
    assert "| 1,000 | 4,000 | Multi-KG4Rec (2 views) |" in (tmp_path / f"{name}.md").read_text()


@pytest.mark.shared_data
def test_ml1m_benchmark_times_both_models_on_the_real_graph(tmp_path):
    """The ML-1M benchmark end to end at its smallest (one batch, one round; about 2 CPU minutes): the script
    a lent GPU runs first, so it must not have rotted when one comes."""
    from benchmarks import bench_ml1m
    from tests.conftest import shared_dataset

    data_path = os.path.dirname(shared_dataset("ml-1m-kg"))
    assert bench_ml1m.main([f"--data_path={data_path}", "--batches=1", "--rounds=1", "--eval_repeats=1",
                            "--skip_memory", "--skip_profile", "--models=KGAT,MultiKG4Rec",
                            f"--out_dir={tmp_path}"]) == 0
    record = json.load(open(tmp_path / "ml1m_cpu.json"))
    for name in ("KGAT", "MultiKG4Rec"):
        model = record["models"][name]
        assert model["ckg_edges"] == 1528850 and model["items"] == 2924 and model["train_batches_per_epoch"] == 359
        assert model["train_s_per_bpr_batch (median round)"] > 0 and model["full_ranking_eval_s"] > 0
    assert record["synthetic_features"] and record["ratio_train_batch"] is not None
    assert "| train s / BPR batch (median) |" in (tmp_path / "ml1m_cpu.md").read_text()


def test_gat_layer_benchmark_times_each_aggregation_and_its_difference(tmp_path):
    from benchmarks import bench_gat_layer

    record = bench_gat_layer.main(["--nodes=40", "--edges=300", "--relations=6", "--dim=16", "--heads=2",
                                   "--rounds=2", f"--out_dir={tmp_path}"])
    variants = {"sparse", "grouped", "edgewise"}
    assert set(record["median_s"]) == variants and all(len(t) == 2 for t in record["seconds"].values())
    assert set(record["max_abs_difference"]) == variants
    assert max(record["max_abs_difference"].values()) < 1e-5  # the same layer, summed in another order
    assert json.load(open(tmp_path / "gat_layer_cpu.json"))["shapes"]["edges"] == 300
    assert all(f"| {name} |" in (tmp_path / "gat_layer_cpu.md").read_text() for name in variants)
