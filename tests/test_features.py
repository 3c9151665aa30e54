"""The feature-file format and the multimodal dataset: loading, alignment, masks, every bad input."""
import os

import numpy as np
import pytest

from recbole_mkg.config import Config
from recbole_mkg.data import KGFilteredDataset, MultimodalKGDataset, create_dataset
from recbole_mkg.data.features import (
    FeatureFileError,
    load_feature_file,
    read_feature_file,
    write_feature_file,
)
from tests.conftest import tiny_config


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_roundtrip_and_meta(tmp_path):
    path = str(tmp_path / "x.feat")
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    write_feature_file(path, ["a", "b", "c"], matrix, meta={"encoder": "test"})
    table = read_feature_file(path)
    assert table.ids.tolist() == ["a", "b", "c"]
    assert table.dim == 4
    np.testing.assert_array_equal(table.matrix, matrix)  # lossless
    assert table.meta == {"encoder": "test"}
    assert table.id_field == "entity_id"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("id\tfeature\n", "header"),
        ("entity_id:token\tfeature:float\n", "float_seq"),
        ("entity_id:token\tfeature:float_seq\n", "no rows"),
        ("entity_id:token\tfeature:float_seq\na\t1 2 3\nb\t1 2\nc\t4 5 6\n", r"inconsistent vector length.*line\(s\) 3"),
        ("entity_id:token\tfeature:float_seq\na\t1 2\nb\tnan 2\n", r"NaN or inf.*line\(s\) 3"),
        ("entity_id:token\tfeature:float_seq\na\t1 2\nb\t1 inf\n", r"NaN or inf.*line\(s\) 3"),
        ("entity_id:token\tfeature:float_seq\na\t1 2\nb\t\n", r"empty feature vector.*line\(s\) 3"),
        ("entity_id:token\tfeature:float_seq\na\t1 2\na\t3 4\n", r"duplicated id.*'a'.*line\(s\) 3"),
        ("entity_id:token\tfeature:float_seq\na\t1 2\nb\t1 x\n", r"non-numeric.*line\(s\) 3"),
        ("entity_id:token\tfeature:float_seq\na\t1 2\tz\n", "columns"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, message):
    path = _write(tmp_path / "bad.feat", text)
    with pytest.raises(FeatureFileError, match=message) as err:
        read_feature_file(path)
    assert "bad.feat" in str(err.value)


def test_missing_file_and_expected_dim(tmp_path):
    with pytest.raises(FeatureFileError, match="not found"):
        read_feature_file(str(tmp_path / "nope.feat"))
    path = _write(tmp_path / "ok.feat", "entity_id:token\tfeature:float_seq\na\t1 2\n")
    with pytest.raises(FeatureFileError, match="expected 3"):
        read_feature_file(path, expected_dim=3)


def test_cache_is_used_and_invalidated(tmp_path):
    path = str(tmp_path / "x.feat")
    cache = str(tmp_path / "cache")
    write_feature_file(path, ["a"], np.ones((1, 3)))
    first = load_feature_file(path, cache_dir=cache)
    assert len(os.listdir(cache)) == 1
    np.testing.assert_array_equal(load_feature_file(path, cache_dir=cache).matrix, first.matrix)
    write_feature_file(path, ["a", "b"], np.zeros((2, 5)))  # size and mtime change -> new cache entry
    os.utime(path, ns=(1, 10**18))
    assert load_feature_file(path, cache_dir=cache).dim == 5


def _dataset(root, **overrides):
    config = Config(model="MultiKG4Rec", dataset="mkg-tiny", config_dict=tiny_config(root, **overrides))
    return create_dataset(config)


def test_features_align_to_internal_entity_ids_with_masks(tiny_root):
    dataset = _dataset(tiny_root)
    assert isinstance(dataset, MultimodalKGDataset)
    folder = os.path.join(str(tiny_root), "mkg-tiny")
    for modality in ("visual", "text"):
        table = read_feature_file(os.path.join(folder, f"mkg-tiny.{modality}.feat"))
        token2id = dataset.field2token_id[dataset.entity_field]
        features = dataset.modal_features[modality].numpy()
        mask = dataset.modal_masks[modality].numpy()
        assert mask.sum() == len(table.ids)
        for token, row in zip(table.ids, table.matrix):
            np.testing.assert_allclose(features[token2id[token]], row, rtol=1e-6)
        missing = np.flatnonzero(~mask)
        assert len(missing) > 0 and np.all(features[missing] == 0)  # masked, not invented
    # entities without an image but with a text: the two masks differ
    assert (dataset.modal_masks["visual"] != dataset.modal_masks["text"]).any()
    assert dataset.modal_info["visual"]["dim"] == 12 and dataset.modal_info["text"]["dim"] == 10


def test_item_keyed_feature_file(fresh_tiny):
    folder = os.path.join(str(fresh_tiny), "mkg-tiny")
    table = read_feature_file(os.path.join(folder, "mkg-tiny.visual.feat"))
    item_ids = [t.replace("e_i", "i") for t in table.ids]
    write_feature_file(os.path.join(folder, "mkg-tiny.visual_items.feat"), item_ids, table.matrix, id_field="item_id")
    dataset = _dataset(fresh_tiny, feature_files={"visual": "visual_items.feat", "text": "text.feat"})
    token2id = dataset.field2token_id[dataset.entity_field]
    items = dataset.field2token_id[dataset.iid_field]
    rows = [k for k, item in enumerate(item_ids) if item in items]  # items with interactions
    assert rows
    for k in rows:
        np.testing.assert_array_equal(dataset.modal_features["visual"][token2id[table.ids[k]]].numpy(), table.matrix[k])


def test_unknown_ids_are_reported_and_dropped_or_strict(fresh_tiny, caplog):
    folder = os.path.join(str(fresh_tiny), "mkg-tiny")
    path = os.path.join(folder, "mkg-tiny.text.feat")
    with open(path, "a", encoding="utf-8") as f:
        f.write("e_not_in_kg\t" + " ".join(["0.5"] * 10) + "\n")
    dataset = _dataset(fresh_tiny)
    assert dataset.modal_info["text"]["dropped_rows"] == 1
    with pytest.raises(FeatureFileError, match="not in the filtered KG/link.*strict_features"):
        _dataset(fresh_tiny, strict_features=True)


def test_feature_file_with_no_overlap(fresh_tiny):
    folder = os.path.join(str(fresh_tiny), "mkg-tiny")
    write_feature_file(os.path.join(folder, "mkg-tiny.text.feat"), ["x1", "x2"], np.ones((2, 4)))
    with pytest.raises(FeatureFileError, match="none of its 2 ids"):
        _dataset(fresh_tiny)


def test_missing_feature_file_names_config_key(fresh_tiny):
    os.remove(os.path.join(str(fresh_tiny), "mkg-tiny", "mkg-tiny.visual.feat"))
    with pytest.raises(FeatureFileError, match=r"visual.feat: feature file for modality 'visual' not found.*modalities"):
        _dataset(fresh_tiny)
    # a model that does not use the visual modality does not need the file
    dataset = _dataset(fresh_tiny, modalities=["text"])
    assert list(dataset.modal_features) == ["text"]


def test_bad_modalities_value(tiny_root):
    with pytest.raises(ValueError, match="config 'modalities': unknown modality"):
        _dataset(tiny_root, modalities=["audio"])


def test_general_models_see_the_kg_models_interactions_and_split(fresh_tiny):
    from recbole.data import data_preparation
    from recbole.utils import init_seed

    folder = os.path.join(str(fresh_tiny), "mkg-tiny")
    # unlink 10 items: their interactions must disappear for every model
    with open(os.path.join(folder, "mkg-tiny.link"), encoding="utf-8") as f:
        lines = f.readlines()
    with open(os.path.join(folder, "mkg-tiny.link"), "w", encoding="utf-8") as f:
        f.writelines(lines[:-10])

    def test_pairs(model):
        config = Config(model=model, dataset="mkg-tiny", config_dict=tiny_config(fresh_tiny))
        init_seed(config["seed"], config["reproducibility"])  # as run_recbole_mkg does
        dataset = create_dataset(config)
        _, _, test = data_preparation(config, dataset)
        inter = test._dataset.inter_feat
        users = dataset.id2token(dataset.uid_field, inter[dataset.uid_field].numpy())
        items = dataset.id2token(dataset.iid_field, inter[dataset.iid_field].numpy())
        return dataset, set(zip(users.tolist(), items.tolist()))

    bpr_dataset, bpr_pairs = test_pairs("BPR")
    kgat_dataset, kgat_pairs = test_pairs("KGAT")
    assert isinstance(bpr_dataset, KGFilteredDataset)
    assert bpr_dataset.inter_num == kgat_dataset.inter_num
    assert bpr_pairs == kgat_pairs


def test_drop_relations_for_kg_and_general_models(fresh_tiny):
    from recbole_mkg.data import KGDataset

    def dataset(model, **overrides):
        config = Config(model=model, dataset="mkg-tiny", config_dict=tiny_config(fresh_tiny, **overrides))
        return create_dataset(config)

    full = dataset("KGIN")  # a RecBole KG model also gets the plugin's KGDataset
    assert isinstance(full, KGDataset)
    dropped = dataset("KGIN", drop_relations=["film.genre"])
    relation_tokens = set(dropped.field2id_token[dropped.relation_field].tolist())
    assert "film.genre" not in relation_tokens and "film.genre" in set(full.field2id_token[full.relation_field])
    assert len(dropped.kg_feat) < len(full.kg_feat)
    # items reachable only through the dropped relation lose their interactions for every model
    only_items = dataset("BPR", drop_relations=["film.genre", "film.director", "film.year"])
    assert only_items.inter_num == 0 or only_items.inter_num < full.inter_num


def test_permute_tails_keeps_each_relations_tails_and_breaks_the_links():
    from recbole_mkg.data.dataset import permute_tails_within_relations

    rng = np.random.default_rng(1)
    relations = rng.integers(0, 4, 500)
    tails = rng.integers(0, 60, 500)
    out = permute_tails_within_relations(relations, tails, seed=3)
    for r in range(4):
        assert sorted(out[relations == r]) == sorted(tails[relations == r])
    assert (out != tails).mean() > 0.8
    np.testing.assert_array_equal(out, permute_tails_within_relations(relations, tails, seed=3))
    assert not np.array_equal(out, permute_tails_within_relations(relations, tails, seed=4))


def test_kg_permute_tails_config_permutes_the_loaded_kg(fresh_tiny):
    def triples(**overrides):
        config = Config(model="KGAT", dataset="mkg-tiny", config_dict=tiny_config(fresh_tiny, **overrides))
        ds = create_dataset(config)
        tokens = ds.field2id_token
        kg = ds.kg_feat
        return sorted(zip(tokens[ds.head_entity_field][np.asarray(kg[ds.head_entity_field])],
                          tokens[ds.relation_field][np.asarray(kg[ds.relation_field])],
                          tokens[ds.tail_entity_field][np.asarray(kg[ds.tail_entity_field])])), ds.inter_num

    original, n_inter = triples()
    permuted, n_inter_permuted = triples(kg_permute_tails=True)
    assert n_inter_permuted == n_inter and len(permuted) == len(original)
    assert sorted((h, r) for h, r, _ in permuted) == sorted((h, r) for h, r, _ in original)
    assert sorted((r, t) for _, r, t in permuted) == sorted((r, t) for _, r, t in original)
    assert len(set(permuted) & set(original)) < 0.5 * len(original)


def test_numeric_looking_ids_stay_tokens(tmp_path):
    path = str(tmp_path / "n.feat")
    write_feature_file(path, ["007", "1e5", "nan"], np.eye(3))
    assert read_feature_file(path).ids.tolist() == ["007", "1e5", "nan"]


@pytest.mark.parametrize("value, expected", [
    ("[text]", ["text"]), ("[visual, text]", ["visual", "text"]), ("['text','visual']", ["text", "visual"]),
    ("[]", []), ("none", []), ("text", ["text"]), (["visual"], ["visual"]), (None, []),
])
def test_modalities_from_cli_strings(value, expected):
    from recbole_mkg.data.dataset import requested_modalities

    assert requested_modalities({"modalities": value}) == expected
