"""DBP15K (JAPE / GCN-Align layout) -> two KG files and two alignment-pair files.

Reads a pair folder (``zh_en``, ``ja_en`` or ``fr_en``) holding ``ent_ids_1``, ``ent_ids_2``
(``id<TAB>URI``), ``triples_1``, ``triples_2`` (``head<TAB>relation<TAB>tail``, integer ids) and
``ref_ent_ids`` (``kg1_id<TAB>kg2_id``), checks that every id resolves, and writes into ``OUT``:

  <name>_1.kg, <name>_2.kg     head_id:token relation_id:token tail_id:token   (the integer ids as tokens)
  <name>.align_train           entity_1:token entity_2:token   JAPE's 30% seeds: the LAST 4,500 lines of ref_ent_ids
  <name>.align_test            entity_1:token entity_2:token   JAPE's test pairs: the FIRST 10,500 lines
  <name>_1.ent, <name>_2.ent   entity_id:token uri:token       id -> DBpedia URI

The split is JAPE's fixed "0_3" split (not a reshuffle): ``--train-lines`` (default 4,500) from the end are
the training seeds, all earlier lines the test pairs. Train and evaluate an alignment model on the output with
``python -m recbole_mkg.model.alignment OUT --name <name>``.
"""
import os

import pandas as pd

from dataset_tools.atomic import DatasetToolError, write_atomic

JAPE_TRAIN_LINES = 4500


def _read_ints(path, n_cols, what):
    if not os.path.isfile(path):
        raise DatasetToolError(f"{path}: file not found (a DBP15K pair folder needs ent_ids_1/2, triples_1/2, "
                               f"ref_ent_ids)")
    df = pd.read_csv(path, sep="\t", header=None, dtype=str, quoting=3, keep_default_na=False,
                     usecols=range(n_cols), engine="python" if n_cols == 2 else "c")
    if df.shape[1] < n_cols:
        raise DatasetToolError(f"{path}: expected {n_cols} tab-separated columns ({what})")
    for c in range(n_cols if n_cols == 3 or what != "ids" else 1):
        bad = ~df[c].str.fullmatch(r"\d+")
        if bad.any():
            line = int(bad.values.argmax()) + 1
            raise DatasetToolError(f"{path}: line {line}: {df[c].iloc[line - 1]!r} is not an integer id ({what})")
    return df


def load_dbp15k(folder, train_lines=JAPE_TRAIN_LINES):
    """Parse and check a pair folder. Returns dict with ``triples`` (two DataFrames h/r/t str),
    ``entities`` (two DataFrames id/uri), ``train`` and ``test`` (DataFrames of id pairs)."""
    entities, triples = [], []
    for k in (1, 2):
        ent = _read_ints(os.path.join(folder, f"ent_ids_{k}"), 2, "ids")
        ent.columns = ["entity_id", "uri"]
        tri = _read_ints(os.path.join(folder, f"triples_{k}"), 3, "triples")
        tri.columns = ["head_id", "relation_id", "tail_id"]
        known = set(ent["entity_id"])
        for col in ("head_id", "tail_id"):
            missing = ~tri[col].isin(known)
            if missing.any():
                line = int(missing.values.argmax()) + 1
                raise DatasetToolError(f"{os.path.join(folder, f'triples_{k}')}: line {line}: entity "
                                       f"{tri[col].iloc[line - 1]} is not in ent_ids_{k}")
        entities.append(ent)
        triples.append(tri)
    ref_path = os.path.join(folder, "ref_ent_ids")
    ref = _read_ints(ref_path, 2, "pairs")
    ref.columns = ["entity_1", "entity_2"]
    for k, col in ((0, "entity_1"), (1, "entity_2")):
        missing = ~ref[col].isin(set(entities[k]["entity_id"]))
        if missing.any():
            line = int(missing.values.argmax()) + 1
            raise DatasetToolError(f"{ref_path}: line {line}: {ref[col].iloc[line - 1]} is not in ent_ids_{k + 1}")
    if not 0 < train_lines < len(ref):
        raise DatasetToolError(f"{ref_path}: {len(ref)} pairs; --train-lines {train_lines} must be between 1 and "
                               f"{len(ref) - 1}")
    return {"entities": entities, "triples": triples,
            "train": ref.iloc[len(ref) - train_lines:], "test": ref.iloc[: len(ref) - train_lines]}


def add_args(p):
    p.add_argument("pair_folder", help="DBP15K pair folder, e.g. ../shared/datasets/dbp15k/zh_en")
    p.add_argument("out", help="output folder")
    p.add_argument("--name", help="file prefix (default: the pair folder's name, e.g. zh_en)")
    p.add_argument("--train-lines", type=int, default=JAPE_TRAIN_LINES,
                   help="training seeds taken from the END of ref_ent_ids (JAPE: 4500 of 15000)")


def run(args):
    name = args.name or os.path.basename(os.path.normpath(args.pair_folder))
    data = load_dbp15k(args.pair_folder, args.train_lines)
    for k in (1, 2):
        write_atomic(os.path.join(args.out, f"{name}_{k}.kg"), data["triples"][k - 1],
                     {"head_id": "token", "relation_id": "token", "tail_id": "token"})
        write_atomic(os.path.join(args.out, f"{name}_{k}.ent"), data["entities"][k - 1],
                     {"entity_id": "token", "uri": "token"})
    for split in ("train", "test"):
        write_atomic(os.path.join(args.out, f"{name}.align_{split}"), data[split],
                     {"entity_1": "token", "entity_2": "token"})
    print(f"{name}: KG1 {len(data['entities'][0])} entities / {len(data['triples'][0])} triples, KG2 "
          f"{len(data['entities'][1])} / {len(data['triples'][1])}; {len(data['train'])} train pairs (last lines of "
          f"ref_ent_ids), {len(data['test'])} test pairs -> {args.out}")
    return 0
