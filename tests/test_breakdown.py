"""Test metrics per item group from the runs' saved top-K lists (recbole_mkg.breakdown)."""
import csv
import json
import math
import os
import re

import numpy as np
import pytest

import run_recbole_mkg
from recbole_mkg.breakdown import group_metrics, popularity_groups, read_item_groups, topk_path
from recbole_mkg.compare import compare, protocol_file
from recbole_mkg.data.dataset import read_atomic_table
from recbole_mkg.data.features import write_feature_file
from tests.conftest import tiny_config


def test_group_metrics_by_hand():
    """u1 ranks a, b, c and has test items b, x (b twice in the file); u2 ranks c, d, a and has a."""
    tops = np.array([["a", "b", "c"], ["c", "d", "a"]])
    test_users, test_items = ["u1", "u1", "u1", "u2"], ["b", "x", "b", "a"]
    got = group_metrics(["u1", "u2"], tops, test_users, test_items,
                        {"all": None, "ac": {"a", "c"}, "bdx": {"b", "d", "x"}, "none": {"z"}}, k=3)
    third = 1 / math.log2(3)  # discount of rank 2
    u1_ndcg = third / (1 + third)  # hit at rank 2 of 3; two test items
    assert got["all"]["recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["all"]["ndcg"] == pytest.approx((u1_ndcg + 0.5) / 2)  # u2: hit at rank 3 -> 1/log2(4)
    assert (got["all"]["users"], got["all"]["test interactions"]) == (2, 3)  # the repeated pair counts once
    assert got["ac"] == {"recall": 1.0, "ndcg": pytest.approx(0.5), "share": pytest.approx(4 / 6), "users": 1,
                         "test interactions": 1}  # a and c hold 2 of 3 places in both lists
    assert got["bdx"] == {"recall": 0.5, "ndcg": pytest.approx(u1_ndcg), "share": pytest.approx(2 / 6), "users": 1,
                          "test interactions": 2}
    assert got["none"] == {"recall": None, "ndcg": None, "share": 0.0, "users": 0, "test interactions": 0}
    assert got["all"]["share"] == 1.0
    # k shorter than the lists: only the first k places count
    assert group_metrics(["u1", "u2"], tops, test_users, test_items, {"all": None}, k=1)["all"]["recall"] == 0.0
    with pytest.raises(ValueError, match="users without a top-K list.*'u3'"):
        group_metrics(["u1", "u2"], tops, ["u3"], ["a"], {"all": None}, k=3)


def test_popularity_groups_hold_a_third_of_the_training_interactions_each():
    train = ["a"] * 6 + ["b"] * 3 + ["c"] * 2 + ["d"]
    groups = popularity_groups(train, {"a", "b", "c", "d", "e"})
    assert groups == {"head": {"a"}, "mid": {"b"}, "tail": {"c", "d", "e"}}  # e: never in training -> tail


def test_item_group_file_needs_its_columns(tmp_path):
    good = tmp_path / "groups.tsv"
    good.write_text("item_id:token\tgroup:token\ni1\twith overview\ni2\twith overview\ni1\tfrom 1990s\n")
    assert read_item_groups(str(good)) == {"with overview": {"i1", "i2"}, "from 1990s": {"i1"}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("item:token\tgroup:token\ni1\tx\n")
    with pytest.raises(ValueError, match=r"bad\.tsv: no column item_id"):
        read_item_groups(str(bad))
    with pytest.raises(FileNotFoundError, match=r"nope\.tsv not found.*item_id:token, group:token"):
        read_item_groups(str(tmp_path / "nope.tsv"))


@pytest.fixture(scope="module")
def ran(tiny_root, tmp_path_factory):
    """BPR (2 epochs) and KGAT (1 epoch), seeds 2020 and 2021, through the side-by-side runner."""
    out = tmp_path_factory.mktemp("breakdown")
    config = tiny_config(tiny_root, epochs=2, metrics=["Recall", "NDCG"])
    config.pop("checkpoint_dir")
    compare(["BPR", "KGAT"], "mkg-tiny", seeds=[2020, 2021], config_file_list=[protocol_file("paper")],
            config_dict=config, results_dir=str(out), epoch_caps={"KGAT": 1}, log=lambda *a: None)
    return out


def test_the_saved_top_k_lists_reproduce_each_runs_test_metrics(ran):
    """Scored against the whole test split, each run's top-K file gives RecBole's own Recall/NDCG@10 and @20
    (RecBole rounds them to 4 decimals): the lists are the ones its evaluation ranked."""
    split = ran / "split" / "mkg-tiny"
    test = read_atomic_table(str(split / "mkg-tiny.test.inter"))
    for key in ("BPR__seed2020", "BPR__seed2021", "KGAT__seed2020", "KGAT__seed2021"):
        record = json.load(open(ran / "runs" / f"{key}.json"))
        top = np.load(topk_path(str(ran), key))
        assert top["items"].shape == (len(set(test["user_id"])), 20) and not (top["items"] == "[PAD]").any()
        for k in (10, 20):
            got = group_metrics(top["users"], top["items"], test["user_id"], test["item_id"], {"all": None}, k)["all"]
            assert got["recall"] == pytest.approx(record["test_result"][f"recall@{k}"], abs=6e-5), (key, k)
            assert got["ndcg"] == pytest.approx(record["test_result"][f"ndcg@{k}"], abs=6e-5), (key, k)
    # a list of another model is another list (the check above could not pass with any file)
    assert not np.array_equal(np.load(topk_path(str(ran), "BPR__seed2020"))["items"],
                              np.load(topk_path(str(ran), "KGAT__seed2020"))["items"])


def test_breakdown_tables_per_group(ran, tmp_path):
    split = ran / "split" / "mkg-tiny"
    link = read_atomic_table(str(split / "mkg-tiny.link"))
    covered = list(link["entity_id"][: len(link) // 2])  # a modality present for half of the items
    feature_file = tmp_path / "mkg-tiny.half.feat"
    write_feature_file(str(feature_file), covered, np.ones((len(covered), 4), dtype=np.float32))
    groups_file = tmp_path / "groups.tsv"
    groups_file.write_text("item_id:token\tgroup:token\n" + "".join(f"{i}\tpicked\n" for i in link["item_id"][:5]))

    rows = run_recbole_mkg.main(["--breakdown", f"--results_dir={ran}", "--model=KGAT,BPR",
                                 f"--group_features={feature_file}", f"--item_groups={groups_file}"])
    by_group = {r["group"]: r for r in rows}
    assert list(by_group) == ["all items", "head", "mid", "tail", "has mkg-tiny.half.feat", "no mkg-tiny.half.feat",
                              "picked"]
    parts = [by_group[g] for g in ("head", "mid", "tail")]
    assert sum(p["test interactions"] for p in parts) == by_group["all items"]["test interactions"]
    assert sum(p["items"] for p in parts) == by_group["all items"]["items"]
    assert parts[0]["items"] < parts[2]["items"]  # few popular items, many tail ones
    halves = [by_group["has mkg-tiny.half.feat"], by_group["no mkg-tiny.half.feat"]]
    assert halves[0]["items"] == len(covered) and sum(h["items"] for h in halves) == by_group["all items"]["items"]
    assert by_group["picked"]["items"] == 5
    for model in ("BPR", "KGAT"):  # the popularity thirds share out every place of the lists
        assert sum(by_group[g][f"{model} share"] for g in ("head", "mid", "tail")) == pytest.approx(1.0)
    # the "all items" row: mean and std over the two seeds of the runs' own test NDCG@20
    for model in ("BPR", "KGAT"):
        values = [json.load(open(ran / "runs" / f"{model}__seed{s}.json"))["test_result"]["ndcg@20"] for s in (2020, 2021)]
        assert by_group["all items"][f"{model} ndcg"] == pytest.approx(np.mean(values), abs=6e-5)
        assert by_group["all items"][f"{model} ndcg std"] == pytest.approx(np.std(values, ddof=1), abs=1e-4)
    text = (ran / "breakdown.md").read_text()
    assert "| group | items | test interactions | users | KGAT | BPR |" in text and "Seeds: KGAT 2020,2021; BPR 2020,2021" in text
    assert (ran / "breakdown.png").stat().st_size > 0
    header = next(csv.reader(open(ran / "breakdown.csv")))
    assert header[:4] == ["group", "items", "test interactions", "users"] and "BPR recall std" in header


def test_breakdown_leaves_out_runs_without_a_top_k_file_and_says_so(ran, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ran, copy)
    os.remove(topk_path(str(copy), "BPR__seed2021"))
    rows = run_recbole_mkg.main(["--breakdown", f"--results_dir={copy}", "--model=BPR"])
    assert rows[0]["BPR ndcg std"] == 0.0  # only seed 2020 left: no "± 0.0000" in the table
    assert "±" not in next(line for line in (copy / "breakdown.md").read_text().splitlines() if line.startswith("| all items"))
    assert "Left out (no top-K file" in (copy / "breakdown.md").read_text() and "BPR (seed 2021)" in (copy / "breakdown.md").read_text()
    for key in ("BPR__seed2020", "KGAT__seed2020", "KGAT__seed2021"):
        os.remove(topk_path(str(copy), key))
    with pytest.raises(FileNotFoundError, match="no run has a top-K file"):
        run_recbole_mkg.main(["--breakdown", f"--results_dir={copy}"])
    with pytest.raises(SystemExit, match=r"--retest_missing: only with --breakdown \(add it, or leave it out\)"):
        run_recbole_mkg.main(["--summarise", "--retest_missing", f"--results_dir={copy}"])
    with pytest.raises(SystemExit, match="--breakdown needs --results_dir"):
        run_recbole_mkg.main(["--breakdown", f"--results_dir={tmp_path / 'nowhere'}"])


def test_missing_top_k_lists_come_back_from_the_checkpoints_as_the_runs_ranked_them(ran, tmp_path):
    """--retest_missing: the test evaluated again from the best-epoch checkpoint gives the very lists the run
    saved; a run whose record predates the ``checkpoint`` field is matched by its saved config."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ran, copy)
    for key in ("BPR__seed2021", "KGAT__seed2020"):
        record = json.load(open(copy / "runs" / f"{key}.json"))
        assert os.path.isfile(copy / record["checkpoint"]) and not os.path.isabs(record["checkpoint"])
        os.remove(topk_path(str(copy), key))
    old_style = copy / "runs" / "KGAT__seed2020.json"
    record = json.load(open(old_style))
    del record["checkpoint"]
    record["config"]["checkpoint_dir"] = str(tmp_path / "moved")  # gone: <results_dir>/checkpoints is searched
    old_style.write_text(json.dumps(record))
    (copy / "checkpoints" / "KGAT-damaged.pth").write_bytes(b"x")  # the newest candidate: skipped
    rows = run_recbole_mkg.main(["--breakdown", "--retest_missing", f"--results_dir={copy}"])
    for key in ("BPR__seed2021", "KGAT__seed2020"):
        again, saved = np.load(topk_path(str(copy), key)), np.load(topk_path(str(ran), key))
        assert np.array_equal(again["users"], saved["users"]) and np.array_equal(again["items"], saved["items"]), key
    assert rows == run_recbole_mkg.main(["--breakdown", f"--results_dir={ran}"])
    assert "Left out" not in (copy / "breakdown.md").read_text()


def test_a_checkpoint_that_does_not_reproduce_the_run_writes_nothing(ran, tmp_path):
    import shutil

    from recbole_mkg.retest import recover_topk

    copy = tmp_path / "copy"
    shutil.copytree(ran, copy)
    wrong = copy / "runs" / "BPR__seed2021.json"
    record = json.load(open(wrong))
    record["checkpoint"] = json.load(open(copy / "runs" / "BPR__seed2020.json"))["checkpoint"]  # another seed's
    wrong.write_text(json.dumps(record))
    orphan = copy / "runs" / "KGAT__seed2021.json"
    record = json.load(open(orphan))
    os.remove(copy / record["checkpoint"])
    record["config"]["checkpoint_dir"] = str(tmp_path / "moved")
    orphan.write_text(json.dumps(record))
    damaged = copy / json.load(open(copy / "runs" / "KGAT__seed2020.json"))["checkpoint"]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # the run's own file, truncated
    for key in ("BPR__seed2021", "KGAT__seed2020", "KGAT__seed2021"):
        os.remove(topk_path(str(copy), key))
    logs = []
    recovered, missing = recover_topk(str(copy), log=logs.append)
    assert recovered == [] and len(missing) == 3  # each run listed with its reason; none stops the others
    assert re.search(r"BPR__seed2021: .*BPR-.*\.pth does not reproduce the run's test metrics \(.*recorded, .* now", missing[0])
    assert re.search(r"KGAT__seed2020: .*KGAT-.*\.pth is not a readable PyTorch checkpoint", missing[1])
    assert missing[2].startswith("KGAT__seed2021: no checkpoint with this run's config")
    assert not os.path.exists(topk_path(str(copy), "BPR__seed2021"))
    assert sum("left without a top-K file" in line for line in logs) == 3


def test_reevaluating_a_folder_gives_each_runs_recorded_metrics_back(ran, tmp_path):
    """benchmarks/reevaluate.py: BPR and the KGAT port have no evaluation bug to fix, so their checkpoints
    give their recorded test metrics again; a run whose checkpoint is gone or damaged is listed with none and
    its reason, and the others go on."""
    import shutil

    from benchmarks import reevaluate

    copy = tmp_path / "copy"
    shutil.copytree(ran, copy)
    gone = json.load(open(copy / "runs" / "KGAT__seed2021.json"))
    os.remove(copy / gone["checkpoint"])
    gone["config"]["checkpoint_dir"] = str(tmp_path / "moved")  # not the original folder's either
    (copy / "runs" / "KGAT__seed2021.json").write_text(json.dumps(gone))
    damaged = copy / json.load(open(copy / "runs" / "KGAT__seed2020.json"))["checkpoint"]
    damaged.write_bytes(b"")  # the run's own file, emptied
    rows = reevaluate.main([f"--results_dir={copy}", "--model=BPR,KGAT", f"--out_dir={tmp_path / 'out'}"])
    assert [r["key"] for r in rows] == ["BPR__seed2020", "BPR__seed2021", "KGAT__seed2020", "KGAT__seed2021"]
    for row in rows[:2]:
        assert row["now"] == pytest.approx(row["recorded"], abs=1.5e-4) and row["error"] is None, row["key"]
    assert rows[2]["now"] is None and rows[2]["checkpoint"] == str(damaged)
    assert "is not a readable PyTorch checkpoint (0 bytes" in rows[2]["error"]
    assert rows[3]["now"] is None and rows[3]["checkpoint"] is None and rows[3]["error"] == "no checkpoint found"
    table = (tmp_path / "out" / "reevaluated_BPR_KGAT.md").read_text()
    assert "| KGAT__seed2021 | cpu | " in table and "| BPR | 2020,2021 | " in table
    assert "* KGAT__seed2020: " in table and "* KGAT__seed2021: no checkpoint found" in table
    assert json.load(open(tmp_path / "out" / "reevaluated_BPR_KGAT.json"))[0]["key"] == "BPR__seed2020"
    with pytest.raises(SystemExit, match="no runs/ folder"):
        reevaluate.main([f"--results_dir={tmp_path / 'nowhere'}"])
