"""scripts/offline_gpu_*.sh: the bundle a GPU machine without registry access needs, and the runner there."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bundle_script_explains_its_arguments():
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "offline_gpu_bundle.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and "DATASET RESULTS_DIR FEATURE_DIR" in proc.stderr


def _fake_tree(tmp_path):
    """A repository-shaped folder with the run script, a fake comparison script and a bundle."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "scripts", "offline_gpu_run.sh"), repo / "scripts")
    (repo / "benchmarks").mkdir()
    # stands for benchmarks/run_comparison_<dataset>.sh: records what it was given; model "Slow" never ends
    (repo / "benchmarks" / "run_comparison_fake.sh").write_text(
        '#!/usr/bin/env bash\nmkdir -p "$RESULTS_DIR/runs" "$RESULTS_DIR/split"\n'
        'touch "$RESULTS_DIR/split/data.inter" "$RESULTS_DIR/started_$MODELS"\n'
        'mkdir -p "$RESULTS_DIR/progress" && touch "$RESULTS_DIR/progress/${MODELS}__seed$SEEDS.pth"\n'
        'if [ "$MODELS" = Slow ]; then sleep 900; fi\n'
        'printf \'{"models": "%s", "seeds": "%s", "jobs": "%s", "features": "%s", "epochs": "%s"}\' '
        '"$MODELS" "$SEEDS" "$JOBS" "$FEATURE_DIR" "$EPOCHS" > "$RESULTS_DIR/runs/${MODELS}__seed$SEEDS.json"\n')
    bundle = repo / "offline_bundle"
    bundle.mkdir()
    (bundle / "bundle.env").write_text("DATASET=fake-kg\nRESULTS_DIR=results/fake\nFEATURE_DIR=dataset/fake-features\n")
    payload = tmp_path / "payload" / "dataset" / "fake-features"
    payload.mkdir(parents=True)
    (payload / "fake-kg.text.feat").write_text("entity_id:token\tfeature:float_seq\n")
    with tarfile.open(bundle / "data.tar.xz", "w:xz") as tar:
        tar.add(payload, arcname="dataset/fake-features")
    return repo


def test_stages_share_the_machine_and_the_deadline_stops_only_what_still_runs(tmp_path):
    repo = _fake_tree(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SKIP_WHEELS": "1", "OUT": str(out), "STAGE_DELAY": "0",
           "STAGES": "A,B|2020,2021|4;Slow|7|1", "EPOCHS": "10", "DEADLINE": "20",
           "BEFORE": 'echo "before ran with $PY" > "$OUT/marker"; ls dataset/fake-features'}
    start = time.time()
    # generous limits: on a loaded machine the script's own start (a Python importing torch) can take a minute
    proc = subprocess.run(["bash", str(repo / "scripts" / "offline_gpu_run.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert time.time() - start < 600  # the Slow stage (900 s) was stopped at the deadline
    assert "DEADLINE (20 s)" in proc.stdout
    assert (repo / "dataset" / "fake-features" / "fake-kg.text.feat").is_file()  # the bundle's data unpacked
    runs = repo / "results" / "fake" / "runs"
    first = json.loads((runs / "A,B__seed2020,2021.json").read_text())
    assert first == {"models": "A,B", "seeds": "2020,2021", "jobs": "4", "features": "dataset/fake-features",
                     "epochs": "10"}
    assert (repo / "results" / "fake" / "started_Slow").exists() and not (runs / "Slow__seed7.json").exists()
    assert "device:" in (out / "device.txt").read_text()
    # BEFORE ran first, after the bundle was unpacked, with the variables it names expanded there
    assert (out / "marker").read_text() == f"before ran with {sys.executable}\n"
    assert "fake-kg.text.feat" in (out / "before.log").read_text()
    with tarfile.open(out / "results.tgz") as tar:
        names = tar.getnames()
    assert "results/fake/runs/A,B__seed2020,2021.json" in names and not any("/split" in n for n in names)
    assert not any("/progress" in n for n in names)  # a stopped run's progress would need its checkpoint too


def test_a_failing_before_command_is_reported_and_the_stages_still_run(tmp_path):
    repo = _fake_tree(tmp_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "SKIP_WHEELS": "1", "OUT": str(out), "STAGE_DELAY": "0",
           "STAGES": "A|2020|1", "BEFORE": "echo broken >&2; exit 7"}
    proc = subprocess.run(["bash", str(repo / "scripts" / "offline_gpu_run.sh")], env=env, capture_output=True,
                          text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "BEFORE failed (exit 7)" in proc.stdout and "broken" in (out / "before.log").read_text()
    assert (repo / "results" / "fake" / "runs" / "A__seed2020.json").is_file()


def test_run_script_without_a_bundle_says_how_to_make_one(tmp_path):
    repo = _fake_tree(tmp_path)
    proc = subprocess.run(["bash", str(repo / "scripts" / "offline_gpu_run.sh")], capture_output=True, text=True,
                          env={**os.environ, "BUNDLE": str(tmp_path / "none"), "STAGES": "A|1|1"})
    assert proc.returncode == 2 and "offline_gpu_bundle.sh" in proc.stderr


def test_run_script_rejects_a_stage_without_models_or_seeds_before_running_anything(tmp_path):
    repo = _fake_tree(tmp_path)
    for stages, shown in (("A|2020|1;;B|2020|1", "stage ''"), ("A", "stage 'A'"), ("A|1|two", "stage 'A|1|two'")):
        proc = subprocess.run(["bash", str(repo / "scripts" / "offline_gpu_run.sh")], capture_output=True, text=True,
                              env={**os.environ, "STAGES": stages, "OUT": str(tmp_path / "out"), "SKIP_WHEELS": "1",
                                   "PYTHON": sys.executable})
        assert proc.returncode == 2 and shown in proc.stderr and "MODELS|SEEDS|JOBS" in proc.stderr, proc.stderr
    assert not (repo / "results").exists()
    bad_deadline = subprocess.run(["bash", str(repo / "scripts" / "offline_gpu_run.sh")], capture_output=True, text=True,
                                  env={**os.environ, "STAGES": "A|1|1", "DEADLINE": "9m", "SKIP_WHEELS": "1"})
    assert bad_deadline.returncode == 2 and "DEADLINE" in bad_deadline.stderr
