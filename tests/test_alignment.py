"""InfoNCE, alignment metrics, cross-KG pre-training on plain KG files, and the DBP15K converter."""
import os

import pytest
import torch

from dataset_tools.__main__ import main as dataset_tools_main
from dataset_tools.atomic import DatasetToolError
from dataset_tools.dbp15k import load_dbp15k
from recbole_mkg.model.alignment import KGraph, read_pairs, run_alignment
from recbole_mkg.model.contrastive import alignment_metrics, info_nce
from tests.conftest import SHARED_DATASETS


def test_info_nce_prefers_matching_pairs():
    torch.manual_seed(0)
    a = torch.randn(8, 5)
    assert info_nce(a, a, 0.1) < info_nce(a, a[torch.randperm(8)], 0.1)
    # a sampled negative that is the positive itself is masked out (otherwise the loss would be log 2)
    ids = torch.arange(8)
    assert info_nce(a[:1], a[:1], 0.1, a[:1], ids[:1], ids[:1]).item() == pytest.approx(0.0, abs=1e-6)
    assert info_nce(a[:1], a[:1], 0.1, a[:1]).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())


def test_alignment_metrics():
    z = torch.eye(4)
    assert alignment_metrics(z, z, torch.arange(4)) == {"hits@1": 1.0, "hits@10": 1.0, "mrr": 1.0}
    m = alignment_metrics(z, z, torch.tensor([1, 0, 3, 2]))  # all wrong, each target ranked 2nd of 4
    assert m["hits@1"] == 0.0 and m["hits@10"] == 1.0 and m["mrr"] == pytest.approx(0.5)


def _write_dbp_like(folder, n=40, seed=0):
    """Two isomorphic random KGs with integer ids (KG2 ids offset by n), DBP15K layout."""
    g = torch.Generator().manual_seed(seed)
    os.makedirs(folder, exist_ok=True)
    triples = torch.stack([torch.randint(0, n, (160,), generator=g), torch.randint(0, 3, (160,), generator=g),
                           torch.randint(0, n, (160,), generator=g)], 1).tolist()
    used = sorted({h for h, _, _ in triples} | {t for _, _, t in triples})
    with open(os.path.join(folder, "ent_ids_1"), "w") as f:
        f.writelines(f"{i}\thttp://x/{i}\n" for i in used)
    with open(os.path.join(folder, "ent_ids_2"), "w") as f:
        f.writelines(f"{i + n}\thttp://y/{i}\n" for i in used)
    with open(os.path.join(folder, "triples_1"), "w") as f:
        f.writelines(f"{h}\t{r}\t{t}\n" for h, r, t in triples)
    with open(os.path.join(folder, "triples_2"), "w") as f:
        f.writelines(f"{h + n}\t{r + 3}\t{t + n}\n" for h, r, t in triples)
    with open(os.path.join(folder, "ref_ent_ids"), "w") as f:
        f.writelines(f"{i}\t{i + n}\n" for i in used)
    return used


def test_convert_dbp15k_uses_japes_fixed_split(tmp_path):
    used = _write_dbp_like(str(tmp_path / "xx_en"))
    out = str(tmp_path / "out")
    assert dataset_tools_main(["convert-dbp15k", str(tmp_path / "xx_en"), out, "--train-lines", "10"]) == 0
    a, b = KGraph.from_kg_file(os.path.join(out, "xx_en_1.kg")), KGraph.from_kg_file(os.path.join(out, "xx_en_2.kg"))
    train = read_pairs(os.path.join(out, "xx_en.align_train"), a, b)
    test = read_pairs(os.path.join(out, "xx_en.align_test"), a, b)
    assert len(train) == 10 and len(test) == len(used) - 10
    assert [a.entity_tokens[i] for i in train[:, 0]] == [str(i) for i in used[-10:]]  # the LAST lines train
    assert [a.entity_tokens[i] for i in test[:, 0]] == [str(i) for i in used[:-10]]


def test_convert_dbp15k_errors(tmp_path):
    _write_dbp_like(str(tmp_path / "p"))
    with open(tmp_path / "p" / "ref_ent_ids", "a") as f:
        f.write("99999\t1\n")
    with pytest.raises(DatasetToolError, match="ref_ent_ids: line .*99999"):
        load_dbp15k(str(tmp_path / "p"))
    with pytest.raises(DatasetToolError, match="not found"):
        load_dbp15k(str(tmp_path / "missing"))


def test_alignment_learns_on_isomorphic_kgs(tmp_path):
    _write_dbp_like(str(tmp_path / "iso"))
    out = str(tmp_path / "o")
    dataset_tools_main(["convert-dbp15k", str(tmp_path / "iso"), out, "--train-lines", "20"])
    a, b = KGraph.from_kg_file(os.path.join(out, "iso_1.kg")), KGraph.from_kg_file(os.path.join(out, "iso_2.kg"))
    train = read_pairs(os.path.join(out, "iso.align_train"), a, b)
    test = read_pairs(os.path.join(out, "iso.align_test"), a, b)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: OpenMP spinning across busy cores costs ~50x here
    try:
        result = run_alignment(a, b, train, test, dim=16, epochs=30, batch_size=8, n_negatives=8,
                               learning_rate=0.01, eval_every=30, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    history = result["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert result["final"]["hits@10"] > 10 / len(test)  # better than chance


@pytest.mark.shared_data
def test_dbp15k_real_files_split():
    folder = os.path.join(SHARED_DATASETS, "dbp15k", "zh_en")
    if not os.path.isdir(folder):
        pytest.skip("no ../shared/datasets/dbp15k")
    data = load_dbp15k(folder)
    assert len(data["train"]) == 4500 and len(data["test"]) == 10500
    assert data["test"].iloc[0].tolist() == ["0", "10500"]
