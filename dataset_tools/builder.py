"""The dataset-building core shared by ``build-movielens`` and ``build-amazon-books``.

Input readers (ratings, items, links, KG, texts, images) produce plain string DataFrames; :func:`build`
filters and joins them and writes a RecBole atomic dataset folder::

    <out>/<name>.inter             user_id:token item_id:token [rating:float] [timestamp:float]
    <out>/<name>.kg                head_id:token relation_id:token tail_id:token
    <out>/<name>.link              item_id:token entity_id:token
    <out>/<name>.item / .user      when given
    <out>/<name>.item_text.tsv     item_id  text  flags          (side table, read by extract-features)
    <out>/<name>.ent_text.tsv      entity_id  text
    <out>/<name>.image.tsv         item_id  path  flags          (absolute paths, or images/ with --copy-images)
    <out>/build_report.json        every count printed in the summary, and the options used

Every row that is dropped is counted under a reason; the summary prints them.
"""
import datetime
import os
import shutil

import numpy as np
import pandas as pd

from dataset_tools.atomic import (DatasetToolError, fmt_int, fmt_share, is_atomic_header, parse_list, pick_column,
                                  print_table, progress, read_atomic, read_side_table, read_text, split_flags,
                                  write_atomic, write_tsv)
from recbole_mkg.atomic_io import atomic_write_json

DEFAULT_EXCLUDE_FLAGS = ("imdb_mismatch", "year_diff")
FLAG_COLUMNS = ("tmdb_match_flags", "flags")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")


# ----------------------------------------------------------------------------------------------- readers
def read_delimited(path, sep, names, what, encoding_fallback=True, header=None):
    """Read a headerless delimited file whose rows must have exactly ``len(names)`` fields.

    ``sep``: '\t', '::', '|' or 'ws' (any run of spaces/tabs). Raises naming the first bad line.
    """
    text = read_text(path) if encoding_fallback else open(path, encoding="utf-8").read()
    if sep == "::":
        text = text.replace("::", "\t")
        sep = "\t"
    lines = text.splitlines()
    start = 1 if header else 0
    rows = []
    n = len(names)
    splitter = (lambda s: s.split()) if sep == "ws" else (lambda s: s.split(sep))
    for i in range(start, len(lines)):
        line = lines[i]
        if not line.strip():
            continue
        parts = splitter(line)
        if len(parts) != n:
            raise DatasetToolError(f"{path}: line {i + 1}: expected {n} {what} fields {names}, found {len(parts)}: "
                                   f"{line[:120]!r}")
        rows.append(parts)
    return pd.DataFrame(rows, columns=names, dtype=str)


def check_numeric(df, path, fields, line_offset=1):
    """Raise naming file/line/field if a field holds a non-numeric value."""
    for field in fields:
        if field not in df.columns:
            continue
        values = pd.to_numeric(df[field], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            i = int(bad[0])
            raise DatasetToolError(f"{path}: line {i + line_offset}: field {field!r} is not a number: "
                                   f"{df[field].iloc[i]!r} ({len(bad)} bad row(s))")


def read_link_table(path, cols=None, what="link"):
    """Two-column key -> value table: a RecBole ``.link``/atomic file, a side table whose columns ``cols``
    ('KEY,VALUE' names or 0-based indices) are named, or a headerless whitespace file (KB4Rec ``ml2fb.txt``)."""
    if not os.path.isfile(path):
        raise DatasetToolError(f"{path}: file not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    cols = parse_list(cols)
    if cols:
        if len(cols) != 2:
            raise DatasetToolError(f"--{what}-cols takes two columns KEY,VALUE, got {cols}")
        df = read_atomic(path) if is_atomic_header(first) else read_side_table(path)
        k = pick_column(df, path, cols[0], what=f"{what} key column")
        v = pick_column(df, path, cols[1], what=f"{what} value column")
        out = df[[k, v]].copy()
    elif is_atomic_header(first):
        df = read_atomic(path)
        out = df.iloc[:, :2].copy()
    else:
        text = read_text(path)
        rows = []
        for i, line in enumerate(text.splitlines()):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise DatasetToolError(f"{path}: line {i + 1}: expected at least 2 whitespace-separated fields "
                                       f"(key, value), found {len(parts)}: {line[:120]!r}")
            rows.append(parts[:2])
        out = pd.DataFrame(rows, columns=["key", "value"], dtype=str)
    out.columns = ["key", "value"]
    out["key"] = out["key"].str.strip()
    out["value"] = out["value"].str.strip()
    return out[(out["key"] != "") & (out["value"] != "")]


def read_kg(paths, order="hrt"):
    """KG triples from RecBole ``.kg`` files or headerless 3-column whitespace files (``order``: hrt/htr)."""
    if order not in ("hrt", "htr"):
        raise DatasetToolError(f"--kg-order must be 'hrt' or 'htr', got {order!r}")
    frames = []
    for path in paths:
        if not os.path.isfile(path):
            raise DatasetToolError(f"{path}: file not found")
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline()
        if is_atomic_header(first):
            df = read_atomic(path, required=["head_id", "relation_id", "tail_id"])
            df = df[["head_id", "relation_id", "tail_id"]]
        else:
            names = ["head_id", "relation_id", "tail_id"] if order == "hrt" else ["head_id", "tail_id", "relation_id"]
            df = read_delimited(path, "ws", names, "KG triple")[["head_id", "relation_id", "tail_id"]]
        empty = (df == "").any(axis=1).to_numpy()
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise DatasetToolError(f"{path}: line {i + 2 if is_atomic_header(first) else i + 1}: empty head/relation/tail")
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["head_id", "relation_id", "tail_id"])


def read_text_table(path, id_col, text_col, id_candidates, text_candidates, flag_col=None, what="text"):
    """A side table of texts -> DataFrame(id, text, flags)."""
    df = read_side_table(path)
    i = pick_column(df, path, id_col, id_candidates, what=f"{what} id column")
    t = pick_column(df, path, text_col, text_candidates, what=f"{what} text column")
    f = _flag_column(df, path, flag_col)
    out = pd.DataFrame({"id": df[i].str.strip(), "text": df[t].str.strip(),
                        "flags": df[f] if f else ""})
    return out, {"id_col": i, "text_col": t, "flag_col": f}


def _flag_column(df, path, flag_col):
    if flag_col == "none":
        return None
    if flag_col:
        return pick_column(df, path, flag_col, what="flag column")
    return next((c for c in FLAG_COLUMNS if c in df.columns), None)


def read_image_source(image_dir=None, image_table=None, id_col=None, path_col=None, flag_col=None):
    """Images as DataFrame(id, path, flags): a folder of ``<item_id>.<ext>`` files or a table (id, path)."""
    if image_table:
        df = read_side_table(image_table)
        i = pick_column(df, image_table, id_col, ("item_id", "asin", "id"), what="image id column")
        p = pick_column(df, image_table, path_col, ("path", "image", "file", "image_path"), what="image path column")
        f = _flag_column(df, image_table, flag_col)
        base = os.path.dirname(os.path.abspath(image_table))
        paths = [q if os.path.isabs(q) else os.path.join(base, q) for q in df[p].str.strip()]
        return pd.DataFrame({"id": df[i].str.strip(), "path": paths, "flags": df[f] if f else ""})
    if image_dir:
        if not os.path.isdir(image_dir):
            raise DatasetToolError(f"{image_dir}: image folder not found")
        rows = []
        for fn in sorted(os.listdir(image_dir)):
            stem, ext = os.path.splitext(fn)
            if ext.lower() in IMAGE_EXTS:
                rows.append((stem, os.path.abspath(os.path.join(image_dir, fn)), ""))
        return pd.DataFrame(rows, columns=["id", "path", "flags"])
    return None


def natural_key(values):
    """Sort key: numeric ids numerically, others lexicographically after them."""
    s = pd.Series(values, dtype=str)
    num = pd.to_numeric(s, errors="coerce")
    return list(zip(num.isna(), num.fillna(0), s))


# ----------------------------------------------------------------------------------------------- build
def k_core(inter, k, max_rounds=100):
    """Iteratively keep users and items with >= k interactions."""
    for _ in range(max_rounds):
        uc = inter["user_id"].map(inter["user_id"].value_counts())
        ic = inter["item_id"].map(inter["item_id"].value_counts())
        keep = (uc >= k) & (ic >= k)
        if keep.all():
            break
        inter = inter[keep]
    return inter


def build(name, out_dir, inter, kg=None, link=None, items=None, item_types=None, users=None, user_types=None,
          item_text=None, entity_text=None, images=None, opts=None, sources=None):
    """Filter, join and write the dataset folder. Returns the report dict (also written as JSON)."""
    o = dict(rating_threshold=None, implicit=False, k_core=0, drop_unlinked=False, reverse_relations=False,
             reverse_suffix="_reverse", drop_relations=(), exclude_flags=DEFAULT_EXCLUDE_FLAGS, keep_flagged=False,
             keep_links_without_triples=False, copy_images=False, check_images=True)
    o.update(opts or {})
    rep = {"name": name, "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "options": {k: (list(v) if isinstance(v, (tuple, set)) else v) for k, v in o.items()},
           "sources": sources or {}, "dropped_interactions": {}, "dropped_links": {}, "dropped_triples": {},
           "dropped_item_text": {}, "dropped_entity_text": {}, "dropped_images": {}}
    os.makedirs(out_dir, exist_ok=True)
    inter = inter.copy()
    rep["interactions_read"] = len(inter)

    # ---- interactions: threshold / implicit
    if o["rating_threshold"] is not None:
        if "rating" not in inter.columns:
            raise DatasetToolError("--rating-threshold given but the ratings have no rating column")
        r = pd.to_numeric(inter["rating"])
        keep = r >= float(o["rating_threshold"])
        rep["dropped_interactions"][f"rating < {o['rating_threshold']}"] = int((~keep).sum())
        inter = inter[keep]
    if o["implicit"] and "rating" in inter.columns:
        inter = inter.drop(columns=["rating"])
    dup = inter.duplicated(subset=["user_id", "item_id"]).sum()
    rep["duplicated_user_item_pairs_kept"] = int(dup)

    # ---- KG
    if kg is not None:
        rep["triples_read"] = len(kg)
        drop = set(parse_list(o["drop_relations"]))
        if drop:
            unknown = drop - set(kg["relation_id"])
            if unknown:
                rep["drop_relations_not_found"] = sorted(unknown)
            m = kg["relation_id"].isin(drop)
            rep["dropped_triples"]["relation dropped by --drop-relations"] = int(m.sum())
            kg = kg[~m]
        d = kg.duplicated()
        rep["dropped_triples"]["duplicated triple"] = int(d.sum())
        kg = kg[~d]
        if o["reverse_relations"]:
            rev = pd.DataFrame({"head_id": kg["tail_id"], "relation_id": kg["relation_id"] + o["reverse_suffix"],
                                "tail_id": kg["head_id"]})
            kg = pd.concat([kg, rev], ignore_index=True)
            d = kg.duplicated()
            rep["reverse_triples_added"] = int(len(rev) - d.sum())
            kg = kg[~d]
        kg_entities = pd.Index(pd.unique(np.concatenate([kg["head_id"].to_numpy(), kg["tail_id"].to_numpy()])))
    else:
        kg_entities = pd.Index([])

    # ---- link
    known_items = set(inter["item_id"])
    if items is not None:
        known_items |= set(items["item_id"])
    if link is not None:
        link = link.rename(columns={"key": "item_id", "value": "entity_id"})[["item_id", "entity_id"]]
        rep["link_rows_read"] = len(link)
        d = link.duplicated()
        link = link[~d]
        m = ~link["item_id"].isin(known_items)
        rep["dropped_links"]["item not in the ratings/item table"] = int(m.sum())
        link = link[~m]
        if kg is not None and not o["keep_links_without_triples"]:
            m = ~link["entity_id"].isin(kg_entities)
            rep["dropped_links"]["entity has no triple in the KG"] = int(m.sum())
            link = link[~m]
        keys = natural_key(link["item_id"])
        link = link.iloc[sorted(range(len(link)), key=keys.__getitem__)]
        m = link["item_id"].duplicated()
        rep["dropped_links"]["item already linked to another entity (first kept)"] = int(m.sum())
        link = link[~m]
        m = link["entity_id"].duplicated()
        rep["dropped_links"]["entity already linked to another item (duplicate movie; lowest id kept)"] = int(m.sum())
        if m.any():
            rep["duplicate_entity_items_dropped"] = link[m]["item_id"].tolist()[:50]
        link = link[~m]
    linked = set(link["item_id"]) if link is not None else set()

    if o["drop_unlinked"] and link is not None:
        m = ~inter["item_id"].isin(linked)
        rep["dropped_interactions"]["item not linked to the KG (--drop-unlinked)"] = int(m.sum())
        inter = inter[~m]
    if o["k_core"] and int(o["k_core"]) > 1:
        before = len(inter)
        inter = k_core(inter, int(o["k_core"]))
        rep["dropped_interactions"][f"{o['k_core']}-core filter"] = before - len(inter)

    # ---- texts and images
    flagged_items = set()
    ex = set(parse_list(o["exclude_flags"]))

    def flagged(df):
        if o["keep_flagged"] or not ex:
            return pd.Series(False, index=df.index)
        return df["flags"].map(lambda v: bool(split_flags(v) & ex))

    all_items = set(inter["item_id"]) | (set(items["item_id"]) if items is not None else set())
    if item_text is not None:
        for df in (item_text,):
            fl = flagged(df)
            flagged_items |= set(df.loc[fl, "id"])
    if images is not None:
        flagged_items |= set(images.loc[flagged(images), "id"])
    rep["items_flagged_excluded"] = len(flagged_items & all_items)

    if item_text is not None:
        t = item_text
        m = ~t["id"].isin(all_items)
        rep["dropped_item_text"]["item not in the dataset"] = int(m.sum())
        t = t[~m]
        m = t["id"].isin(flagged_items)
        rep["dropped_item_text"]["flagged (" + ",".join(sorted(ex)) + ")"] = int(m.sum())
        t = t[~m]
        m = t["text"] == ""
        rep["dropped_item_text"]["empty text"] = int(m.sum())
        t = t[~m]
        m = t["id"].duplicated()
        rep["dropped_item_text"]["duplicated id (first kept)"] = int(m.sum())
        t = t[~m]
        write_tsv(os.path.join(out_dir, f"{name}.item_text.tsv"),
                  pd.DataFrame({"item_id": t["id"], "text": t["text"], "flags": t["flags"]}))
        rep["items_with_text"] = int(t["id"].isin(set(inter["item_id"])).sum())
    if entity_text is not None:
        t = entity_text
        if kg is not None:
            valid = set(kg_entities) | (set(link["entity_id"]) if link is not None else set())
            m = ~t["id"].isin(valid)
            rep["dropped_entity_text"]["entity not in the KG"] = int(m.sum())
            t = t[~m]
        m = t["text"] == ""
        rep["dropped_entity_text"]["empty text"] = int(m.sum())
        t = t[~m]
        m = t["id"].duplicated()
        rep["dropped_entity_text"]["duplicated id (first kept)"] = int(m.sum())
        t = t[~m]
        write_tsv(os.path.join(out_dir, f"{name}.ent_text.tsv"), pd.DataFrame({"entity_id": t["id"], "text": t["text"]}))
        rep["entities_with_text"] = len(t)
    if images is not None:
        im = images
        m = ~im["id"].isin(all_items)
        rep["dropped_images"]["item not in the dataset"] = int(m.sum())
        im = im[~m]
        m = im["id"].isin(flagged_items)
        rep["dropped_images"]["flagged (" + ",".join(sorted(ex)) + ")"] = int(m.sum())
        im = im[~m]
        m = im["id"].duplicated()
        rep["dropped_images"]["duplicated id (first kept)"] = int(m.sum())
        im = im[~m]
        if o["check_images"]:
            exists = np.array([os.path.isfile(p) for p in progress(im["path"], desc="images: checking", unit="img")],
                              dtype=bool)
            rep["dropped_images"]["file missing"] = int((~exists).sum())
            if (~exists).any():
                rep["missing_image_files"] = im.loc[~exists, "path"].tolist()[:20]
            im = im[exists]
        paths = im["path"].tolist()
        if o["copy_images"]:
            dst_dir = os.path.join(out_dir, "images")
            os.makedirs(dst_dir, exist_ok=True)
            new = []
            for ident, p in progress(list(zip(im["id"], paths)), desc="images: copying", unit="img"):
                dst = os.path.join(dst_dir, ident + os.path.splitext(p)[1].lower())
                shutil.copyfile(p, dst)
                new.append(os.path.relpath(dst, out_dir))
            paths = new
        write_tsv(os.path.join(out_dir, f"{name}.image.tsv"),
                  pd.DataFrame({"item_id": im["id"], "path": paths, "flags": im["flags"]}))
        rep["items_with_image"] = int(im["id"].isin(set(inter["item_id"])).sum())

    # ---- write
    types = {"user_id": "token", "item_id": "token"}
    for c in ("rating", "timestamp"):
        if c in inter.columns:
            types[c] = "float"
    write_atomic(os.path.join(out_dir, f"{name}.inter"), inter, types)
    if kg is not None:
        write_atomic(os.path.join(out_dir, f"{name}.kg"), kg,
                     {"head_id": "token", "relation_id": "token", "tail_id": "token"})
    if link is not None:
        write_atomic(os.path.join(out_dir, f"{name}.link"), link, {"item_id": "token", "entity_id": "token"})
    if items is not None:
        write_atomic(os.path.join(out_dir, f"{name}.item"), items, item_types)
    if users is not None:
        write_atomic(os.path.join(out_dir, f"{name}.user"), users, user_types)

    n_items = inter["item_id"].nunique()
    rep.update({
        "interactions": len(inter), "users": int(inter["user_id"].nunique()), "items_with_interactions": int(n_items),
        "items_in_item_table": len(items) if items is not None else None,
        "linked_items": len(linked), "linked_items_with_interactions": int(inter["item_id"].drop_duplicates().isin(linked).sum()),
        "interactions_on_linked_items": int(inter["item_id"].isin(linked).sum()),
        "triples": len(kg) if kg is not None else 0, "entities": len(kg_entities),
        "relations": int(kg["relation_id"].nunique()) if kg is not None else 0,
    })
    atomic_write_json(os.path.join(out_dir, "build_report.json"), rep)
    return rep


def print_summary(rep, out_dir):
    n = rep["items_with_interactions"]
    rows = [
        ("interactions read", fmt_int(rep["interactions_read"])),
        ("interactions written", fmt_int(rep["interactions"])),
    ]
    for reason, c in rep["dropped_interactions"].items():
        rows.append((f"  dropped: {reason}", fmt_int(c)))
    rows += [
        ("users", fmt_int(rep["users"])), ("items with interactions", fmt_int(n)),
        ("items linked to the KG", f"{fmt_int(rep['linked_items'])} "
                                   f"({fmt_share(rep['linked_items_with_interactions'], n)} of items with interactions)"),
        ("interactions on linked items (RecBole KG pipeline keeps these)", fmt_int(rep["interactions_on_linked_items"])),
    ]
    if "link_rows_read" in rep:
        rows.append(("link rows read", fmt_int(rep["link_rows_read"])))
        for reason, c in rep["dropped_links"].items():
            rows.append((f"  link dropped: {reason}", fmt_int(c)))
    if "triples_read" in rep:
        rows.append(("triples read", fmt_int(rep["triples_read"])))
        for reason, c in rep["dropped_triples"].items():
            rows.append((f"  triple dropped: {reason}", fmt_int(c)))
        if "reverse_triples_added" in rep:
            rows.append(("reverse triples added", fmt_int(rep["reverse_triples_added"])))
    rows += [("triples written", fmt_int(rep["triples"])), ("entities", fmt_int(rep["entities"])),
             ("relations", fmt_int(rep["relations"]))]
    if rep.get("items_flagged_excluded"):
        rows.append(("items flagged (no text, no image)", fmt_int(rep["items_flagged_excluded"])))
    for key, drops in (("items_with_text", "dropped_item_text"), ("entities_with_text", "dropped_entity_text"),
                       ("items_with_image", "dropped_images")):
        if key in rep:
            den = n if key != "entities_with_text" else rep["entities"]
            rows.append((key.replace("_", " "), f"{fmt_int(rep[key])} ({fmt_share(rep[key], den)})"))
            for reason, c in rep[drops].items():
                if c:
                    rows.append((f"  dropped: {reason}", fmt_int(c)))
    print_table(rows, title=f"built {rep['name']} -> {out_dir}")
