"""Benchmark scripts run end to end at toy sizes (their figures are not asserted: they are benchmarks)."""
import json

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
