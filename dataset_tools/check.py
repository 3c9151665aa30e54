"""``check``: validate a dataset folder and print its statistics table. Exit code 1 on errors.

Errors (exit 1): missing/malformed ``.inter``, ``.kg`` or ``.link`` (header, column count, empty ids,
non-numeric rating/timestamp), an item linked to two entities or an entity linked to two items (RecBole's
link must be one-to-one), any feature-file error (NaN/inf, inconsistent dimension, duplicated ids, ...), a
feature file none of whose ids is known.
Warnings: duplicated interactions or triples, link rows whose item/entity is unknown, feature rows whose id
is unknown.

Feature files are found as ``<name>.<suffix>`` files whose header's second column is ``*:float_seq``, in the
folder and in every ``--features DIR``.
"""
import json
import os

import numpy as np
import pandas as pd

from dataset_tools.atomic import DatasetToolError, fmt_int, fmt_share, print_table, read_atomic
from recbole_mkg.data.features import FeatureFileError, read_feature_file


class Report:
    def __init__(self):
        self.rows, self.errors, self.warnings = [], [], []

    def add(self, key, value):
        self.rows.append((key, value))

    def error(self, msg):
        self.errors.append(msg)

    def warn(self, msg):
        self.warnings.append(msg)


def _load(rep, path, required, what):
    try:
        return read_atomic(path, required=required)
    except DatasetToolError as err:
        rep.error(str(err))
        return None


def _empty_ids(rep, df, path, cols):
    for c in cols:
        bad = np.flatnonzero((df[c].str.strip() == "").to_numpy())
        if len(bad):
            rep.error(f"{path}: line {int(bad[0]) + 2}: empty {c} ({len(bad)} row(s))")


def _numeric(rep, df, path, cols):
    for c in cols:
        if c in df.columns:
            v = pd.to_numeric(df[c], errors="coerce")
            bad = np.flatnonzero(v.isna().to_numpy())
            if len(bad):
                rep.error(f"{path}: line {int(bad[0]) + 2}: field {c!r} is not a number: {df[c].iloc[bad[0]]!r} "
                          f"({len(bad)} row(s))")


def find_feature_files(folder, name):
    out = []
    if not os.path.isdir(folder):
        return out
    for fn in sorted(os.listdir(folder)):
        if not fn.startswith(name + ".") or fn.endswith((".json", ".tsv", ".partial")):
            continue
        p = os.path.join(folder, fn)
        if not os.path.isfile(p):
            continue
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                header = f.readline().rstrip("\n").split("\t")
        except OSError:
            continue
        if len(header) == 2 and header[1].endswith(":float_seq"):
            out.append((fn[len(name) + 1:], p))
    return out


def _lenient_nan_rows(path):
    """Rows with a NaN/inf value (counted even when the strict reader rejects the file)."""
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False)
        vals = df.iloc[:, 1].str.lower()
        return int(vals.str.contains(r"(?:^|\s)[-+]?(?:nan|inf|infinity)(?:\s|$)", regex=True).sum())
    except Exception:  # noqa: BLE001
        return None


def check(folder, name=None, feature_dirs=(), max_messages=20):
    """-> (Report). Never raises for data problems; they are in ``report.errors``."""
    rep = Report()
    name = name or os.path.basename(os.path.normpath(folder))
    rep.add("dataset", f"{name} ({folder})")
    if not os.path.isdir(folder):
        rep.error(f"{folder}: dataset folder not found")
        return rep
    inter_path = os.path.join(folder, f"{name}.inter")
    inter = _load(rep, inter_path, ["user_id", "item_id"], "interactions")
    items_inter = set()
    if inter is not None:
        _empty_ids(rep, inter, inter_path, ["user_id", "item_id"])
        _numeric(rep, inter, inter_path, ["rating", "timestamp"])
        items_inter = set(inter["item_id"])
        dup = int(inter.duplicated().sum())
        dup_pairs = int(inter.duplicated(subset=["user_id", "item_id"]).sum())
        rep.add("users", fmt_int(inter["user_id"].nunique()))
        rep.add("items (with interactions)", fmt_int(len(items_inter)))
        rep.add("interactions", fmt_int(len(inter)))
        rep.add("inter columns", " ".join(inter.columns))
        if "rating" in inter.columns:
            r = pd.to_numeric(inter["rating"], errors="coerce")
            rep.add("rating range", f"{r.min():g} .. {r.max():g}")
        if dup:
            rep.warn(f"{inter_path}: {dup} duplicated interaction row(s)")
        rep.add("duplicated (user, item) pairs", fmt_int(dup_pairs))
    item_path = os.path.join(folder, f"{name}.item")
    items_table = set()
    if os.path.isfile(item_path):
        it = _load(rep, item_path, ["item_id"], "items")
        if it is not None:
            items_table = set(it["item_id"])
            rep.add("items in .item", fmt_int(len(items_table)))
            d = int(it["item_id"].duplicated().sum())
            if d:
                rep.error(f"{item_path}: {d} duplicated item_id(s), e.g. {it['item_id'][it['item_id'].duplicated()].iloc[0]!r}")
            unknown = items_inter - items_table
            if unknown:
                rep.warn(f"{inter_path}: {len(unknown)} item(s) not in {name}.item, e.g. {sorted(unknown)[:3]}")
    user_path = os.path.join(folder, f"{name}.user")
    if os.path.isfile(user_path):
        us = _load(rep, user_path, ["user_id"], "users")
        if us is not None:
            rep.add("users in .user", fmt_int(len(us)))
            if us["user_id"].duplicated().any():
                rep.error(f"{user_path}: duplicated user_id(s)")

    kg_path = os.path.join(folder, f"{name}.kg")
    entities = set()
    kg = None
    if os.path.isfile(kg_path):
        kg = _load(rep, kg_path, ["head_id", "relation_id", "tail_id"], "KG")
        if kg is not None:
            _empty_ids(rep, kg, kg_path, ["head_id", "relation_id", "tail_id"])
            entities = set(kg["head_id"]) | set(kg["tail_id"])
            rep.add("entities (in triples)", fmt_int(len(entities)))
            rep.add("relations", fmt_int(kg["relation_id"].nunique()))
            rep.add("triples", fmt_int(len(kg)))
            d = int(kg.duplicated().sum())
            rep.add("duplicated triples", fmt_int(d))
            if d:
                rep.warn(f"{kg_path}: {d} duplicated triple(s)")
    else:
        rep.add("knowledge graph", "none (no .kg file)")

    link_path = os.path.join(folder, f"{name}.link")
    item2ent = {}
    if os.path.isfile(link_path):
        link = _load(rep, link_path, ["item_id", "entity_id"], "link")
        if link is not None:
            _empty_ids(rep, link, link_path, ["item_id", "entity_id"])
            for col, other in (("item_id", "entity"), ("entity_id", "item")):
                d = link[col].duplicated(keep=False)
                if d.any():
                    first = int(np.flatnonzero(d.to_numpy())[1]) + 2
                    rep.error(f"{link_path}: line {first}: {col} {link[col][d].iloc[0]!r} is linked to more than one "
                              f"{other} ({int(link[col].duplicated().sum())} duplicate(s)); RecBole needs a one-to-one link")
            item2ent = dict(zip(link["item_id"], link["entity_id"]))
            known_items = items_inter | items_table
            unk = [i for i in item2ent if i not in known_items]
            if unk:
                rep.warn(f"{link_path}: {len(unk)} linked item(s) unknown to the interactions/.item, e.g. {unk[:3]}")
            if kg is not None:
                no_triple = [e for e in item2ent.values() if e not in entities]
                if no_triple:
                    rep.warn(f"{link_path}: {len(no_triple)} linked entit(y/ies) without any triple, e.g. {no_triple[:3]}")
            linked_inter = [i for i in items_inter if i in item2ent]
            rep.add("items linked (of items with interactions)",
                    f"{fmt_int(len(linked_inter))} / {fmt_int(len(items_inter))} = {fmt_share(len(linked_inter), len(items_inter))}")
            if inter is not None:
                kept = int(inter["item_id"].isin(set(item2ent)).sum())
                rep.add("interactions on linked items", f"{fmt_int(kept)} ({fmt_share(kept, len(inter))})")
    all_entities = entities | set(item2ent.values())

    # ---- features
    feature_files = find_feature_files(folder, name)
    for d in feature_dirs:
        if not os.path.isdir(d):
            rep.error(f"{d}: --features folder not found")
        feature_files += find_feature_files(d, name)
    for suffix, path in feature_files:
        label = f"[{suffix}]"
        try:
            table = read_feature_file(path)
        except FeatureFileError as err:
            rep.error(str(err))
            nan = _lenient_nan_rows(path)
            rep.add(f"{label} status", "INVALID (see errors)" + (f"; rows with NaN/inf: {nan}" if nan else ""))
            continue
        ids = pd.Index(table.ids)
        meta = table.meta
        enc = meta.get("encoder", {}) if isinstance(meta, dict) else {}
        enc_name = enc.get("name") or enc.get("clip_model") or "?"
        rep.add(f"{label} rows x dim", f"{fmt_int(len(ids))} x {table.dim}  (keyed by {table.id_field}; encoder: "
                                       f"{enc_name}; normalisation: {meta.get('normalization', '?')})")
        if enc.get("type") == "colour-texture":
            rep.add(f"{label} NOTE", "crude colour/texture statistics, not a learned visual encoder")
        rep.add(f"{label} NaN/inf rows", "0")
        if table.id_field == "entity_id":
            item_rows = [i for i in items_inter if i in item2ent and item2ent[i] in ids]
            unknown = ids.difference(pd.Index(list(all_entities))) if all_entities else ids
            ent_cov = int(ids.isin(list(entities)).sum()) if entities else 0
            rep.add(f"{label} item coverage", f"{fmt_int(len(item_rows))} / {fmt_int(len(items_inter))} = "
                                              f"{fmt_share(len(item_rows), len(items_inter))}")
            if item2ent:
                linked_inter = sum(1 for i in items_inter if i in item2ent)
                rep.add(f"{label} linked-item coverage", f"{fmt_share(len(item_rows), linked_inter)}")
            rep.add(f"{label} entity coverage", f"{fmt_int(ent_cov)} / {fmt_int(len(entities))} = "
                                                f"{fmt_share(ent_cov, len(entities))}")
        else:
            known = items_inter | items_table
            cov = int(pd.Index(list(items_inter)).isin(ids).sum())
            unknown = ids.difference(pd.Index(list(known)))
            rep.add(f"{label} item coverage", f"{fmt_int(cov)} / {fmt_int(len(items_inter))} = {fmt_share(cov, len(items_inter))}")
        rep.add(f"{label} unknown ids", fmt_int(len(unknown)))
        if len(unknown) == len(ids):
            rep.error(f"{path}: none of its {len(ids)} {table.id_field}s is known to the dataset "
                      f"(e.g. {list(ids[:3])}); wrong dataset or wrong key?")
        elif len(unknown):
            rep.warn(f"{path}: {len(unknown)} row(s) with unknown {table.id_field}, e.g. {list(unknown[:3])} (ignored when loading)")
    if not feature_files:
        rep.add("feature files", "none")
    return rep


def print_report(rep, max_messages=20):
    print_table(rep.rows, title="check")
    for kind, msgs in (("ERROR", rep.errors), ("warning", rep.warnings)):
        for m in msgs[:max_messages]:
            print(f"{kind}: {m}")
        if len(msgs) > max_messages:
            print(f"{kind}: ... and {len(msgs) - max_messages} more")
    print(f"\n{len(rep.errors)} error(s), {len(rep.warnings)} warning(s)")


def add_args(p):
    p.add_argument("dataset", help="dataset folder")
    p.add_argument("--dataset-name", help="dataset name (default: the folder's name)")
    p.add_argument("--features", nargs="+", default=[], metavar="DIR",
                   help="extra folder(s) holding <name>.<suffix> feature files")
    p.add_argument("--json", help="also write the table, errors and warnings to this JSON file")


def run(args):
    rep = check(args.dataset, args.dataset_name, args.features)
    print_report(rep)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"table": rep.rows, "errors": rep.errors, "warnings": rep.warnings}, f, indent=2)
    return 1 if rep.errors else 0
