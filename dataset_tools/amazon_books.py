"""``build-amazon-books``: McAuley-style Amazon reviews + metadata (+ KB4Rec/KGAT link and KG) -> dataset folder.

* ``--reviews``: JSON lines (``.json`` or ``.json.gz``), one review per line with ``reviewerID``, ``asin``,
  ``overall`` and ``unixReviewTime`` (2014 and 2018 dumps; the 2014 dumps' Python-literal lines are accepted
  too), or a headerless ``user,item,rating,timestamp`` CSV (the "ratings only" files).
* ``--meta``: metadata JSON lines with ``asin``, ``title``, ``description`` (string or list) -> item texts
  (``--text-fields``); cover images cannot be downloaded here, give them with ``--image-dir`` (``<asin>.jpg``) or
  ``--image-table``.
* KG: ``--link`` (KB4Rec ``asin  freebase_id`` pairs, headerless) + ``--kg`` triples, or ``--kgat-dir`` with KGAT's
  ``item_list.txt``, ``entity_list.txt``, ``relation_list.txt`` and ``kg_final.txt`` (integer ids are mapped
  back to Freebase ids so that the link and the KG share one id space).
"""
import ast
import gzip
import json
import os

import pandas as pd

from dataset_tools import builder
from dataset_tools.atomic import DatasetToolError, progress
from dataset_tools.movielens import add_common_build_args, build_opts, load_common


def _open(path):
    if not os.path.isfile(path):
        raise DatasetToolError(f"{path}: file not found")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_json_lines(path):
    """Yield (line_number, dict); strict JSON first, Python literal (2014 dumps) second."""
    with _open(path) as f:
        for i, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                try:
                    obj = ast.literal_eval(line)
                except (ValueError, SyntaxError) as err:
                    raise DatasetToolError(f"{path}: line {i}: not a JSON object ({err.__class__.__name__}: {err})")
            if not isinstance(obj, dict):
                raise DatasetToolError(f"{path}: line {i}: expected a JSON object, got {type(obj).__name__}")
            yield i, obj


def read_reviews(path):
    """-> DataFrame(user_id, item_id, rating, timestamp) of str."""
    if path.endswith(".csv"):
        df = builder.read_delimited(path, ",", ["user_id", "item_id", "rating", "timestamp"], "ratings CSV")
        builder.check_numeric(df, path, ["rating", "timestamp"])
        return df
    rows = []
    for i, obj in progress(iter_json_lines(path), desc="reviews", unit="line"):
        try:
            user, item = obj["reviewerID"], obj["asin"]
        except KeyError as err:
            raise DatasetToolError(f"{path}: line {i}: missing field {err.args[0]!r}")
        rating = obj.get("overall", "")
        ts = obj.get("unixReviewTime", "")
        for field, value in (("overall", rating), ("unixReviewTime", ts)):
            if value != "":
                try:
                    float(value)
                except (TypeError, ValueError):
                    raise DatasetToolError(f"{path}: line {i}: field {field!r} is not a number: {value!r}")
        rows.append((str(user), str(item), str(rating), str(ts)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"], dtype=str)
    for c in ("rating", "timestamp"):
        if (df[c] == "").all():
            df = df.drop(columns=[c])
        elif (df[c] == "").any():
            i = int((df[c] == "").to_numpy().nonzero()[0][0])
            raise DatasetToolError(f"{path}: review {i + 1}: missing {'overall' if c == 'rating' else 'unixReviewTime'}")
    return df


def _as_text(value):
    if isinstance(value, list):
        return " ".join(_as_text(v) for v in value if v)
    return " ".join(str(value or "").split())


def read_meta(path, text_fields=("title", "description")):
    """-> (items DataFrame(item_id, title, categories), texts DataFrame(id, text, flags))."""
    items, texts = [], []
    for i, obj in progress(iter_json_lines(path), desc="metadata", unit="line"):
        if "asin" not in obj:
            raise DatasetToolError(f"{path}: line {i}: missing field 'asin'")
        asin = str(obj["asin"])
        title = _as_text(obj.get("title", ""))
        cats = obj.get("categories", obj.get("category", []))
        if cats and isinstance(cats[0], list):
            cats = cats[0]
        items.append((asin, title, " ".join(str(c).replace(" ", "_") for c in cats)))
        parts = [_as_text(obj.get(f, "")) for f in text_fields]
        texts.append((asin, ". ".join(p for p in parts if p), ""))
    items = pd.DataFrame(items, columns=["item_id", "title", "categories"], dtype=str)
    texts = pd.DataFrame(texts, columns=["id", "text", "flags"], dtype=str)
    return items, texts


def read_kgat(folder):
    """KGAT's amazon-book layout -> (link DataFrame(key, value), kg DataFrame) in Freebase ids."""
    def table(name, ncols):
        path = os.path.join(folder, name)
        df = builder.read_delimited(path, "ws", [f"c{i}" for i in range(ncols)], name, header=True)
        return df

    items = table("item_list.txt", 3)          # org_id remap_id freebase_id
    ents = table("entity_list.txt", 2)         # org_id remap_id
    rels = table("relation_list.txt", 2)       # org_id remap_id
    kg = builder.read_delimited(os.path.join(folder, "kg_final.txt"), "ws", ["h", "r", "t"], "kg_final.txt")
    e = dict(zip(ents["c1"], ents["c0"]))
    r = dict(zip(rels["c1"], rels["c0"]))
    path = os.path.join(folder, "kg_final.txt")
    for col, mapping, what in (("h", e, "entity"), ("t", e, "entity"), ("r", r, "relation")):
        unknown = ~kg[col].isin(mapping.keys())
        if unknown.any():
            i = int(unknown.to_numpy().nonzero()[0][0])
            raise DatasetToolError(f"{path}: line {i + 1}: {what} id {kg[col].iloc[i]!r} not in "
                                   f"{'entity' if what == 'entity' else 'relation'}_list.txt")
    out = pd.DataFrame({"head_id": kg["h"].map(e), "relation_id": kg["r"].map(r), "tail_id": kg["t"].map(e)})
    link = pd.DataFrame({"key": items["c0"], "value": items["c2"]})
    return link, out


def add_args(p):
    p.add_argument("--reviews", required=True, help="reviews JSON lines (.json/.json.gz) or ratings-only CSV")
    p.add_argument("--meta", help="metadata JSON lines (asin, title, description, categories)")
    p.add_argument("--text-fields", default="title,description",
                   help="metadata fields joined into the item text (default: %(default)s)")
    p.add_argument("--kgat-dir", help="folder with KGAT's item_list/entity_list/relation_list/kg_final.txt")
    add_common_build_args(p)


def run(args):
    name = args.name or os.path.basename(os.path.normpath(args.out))
    inter = read_reviews(args.reviews)
    items = item_types = None
    meta_text = None
    if args.meta:
        items, meta_text = read_meta(args.meta, [f.strip() for f in args.text_fields.split(",") if f.strip()])
        item_types = {"item_id": "token", "title": "token_seq", "categories": "token_seq"}
    link = None
    kg, item_text, entity_text, images = load_common(args)
    if args.kgat_dir:
        if args.kg or args.link:
            raise DatasetToolError("--kgat-dir replaces --link/--kg; give one or the other")
        link, kg = read_kgat(args.kgat_dir)
    elif args.link:
        link = builder.read_link_table(args.link, args.link_cols, "link")
    if item_text is None:
        item_text = meta_text
    sources = {k: getattr(args, k) for k in ("reviews", "meta", "link", "kg", "kgat_dir", "item_text", "entity_text",
                                            "image_dir", "image_table")}
    rep = builder.build(name, args.out, inter, kg=kg, link=link, items=items, item_types=item_types,
                        item_text=item_text, entity_text=entity_text, images=images, opts=build_opts(args),
                        sources=sources)
    builder.print_summary(rep, args.out)
    return 0
