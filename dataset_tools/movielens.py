"""``build-movielens``: MovieLens raw files + item->entity links + KG triples (+ texts, images) -> dataset folder.

Ratings: ML-100K ``u.data`` (tab), ML-1M ``ratings.dat`` (``::``), ML-latest ``ratings.csv`` (header
``userId,movieId,rating,timestamp``) or a RecBole ``.inter``. Items: ``u.item`` (``|``, latin-1) or
``movies.dat``; users: ``u.user`` or ``users.dat``; both optional.

Links: ``--link`` maps an item key to a KG entity (a RecBole ``.link``, a headerless ``key entity`` file such
as KB4Rec's ``ml2fb.txt``, or a side table with ``--link-cols KEY,ENTITY``). When the link is keyed by
another id space (KB4Rec uses MovieLens-20M ids), ``--item-map TABLE --item-map-cols ITEM,KEY`` maps the
dataset's item ids to that key first (e.g. ``ml-100k-kg.ml20m_map.tsv``: item_id -> ml20m_movie_id).
"""
import os
import re

import pandas as pd

from dataset_tools import builder
from dataset_tools.atomic import DatasetToolError, is_atomic_header, read_atomic, read_text

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western"]
ITEM_TYPES = {"item_id": "token", "movie_title": "token_seq", "release_year": "token", "class": "token_seq"}
USER_TYPES = {"user_id": "token", "age": "token", "gender": "token", "occupation": "token", "zip_code": "token"}


def _first_line(path):
    if not os.path.isfile(path):
        raise DatasetToolError(f"{path}: file not found")
    text = read_text(path)
    return text.split("\n", 1)[0]


def detect_ratings_format(path):
    first = _first_line(path)
    if is_atomic_header(first):
        return "atomic"
    if "::" in first:
        return "ml-1m"
    if path.lower().endswith(".csv") or first.lower().startswith("userid,"):
        return "csv"
    return "ml-100k"


def read_ratings(path, fmt="auto"):
    """-> DataFrame(user_id, item_id, [rating], [timestamp]) of str."""
    if fmt == "auto":
        fmt = detect_ratings_format(path)
    names = ["user_id", "item_id", "rating", "timestamp"]
    if fmt == "atomic":
        df = read_atomic(path, required=["user_id", "item_id"])
        df = df[[c for c in names if c in df.columns]]
        offset = 2
    elif fmt == "ml-1m":
        df = builder.read_delimited(path, "::", names, "ratings.dat")
        offset = 1
    elif fmt == "ml-100k":
        df = builder.read_delimited(path, "ws", names, "u.data")
        offset = 1
    elif fmt == "csv":
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        cols = {c.lower(): c for c in raw.columns}
        try:
            df = pd.DataFrame({"user_id": raw[cols["userid"]], "item_id": raw[cols["movieid"]]})
        except KeyError:
            raise DatasetToolError(f"{path}: line 1: a ratings CSV needs columns userId,movieId[,rating,timestamp], "
                                   f"found {list(raw.columns)}")
        for c in ("rating", "timestamp"):
            if c in cols:
                df[c] = raw[cols[c]]
        offset = 2
    else:
        raise DatasetToolError(f"unknown --ratings-format {fmt!r}")
    builder.check_numeric(df, path, ["rating", "timestamp"], line_offset=offset)
    empty = (df[["user_id", "item_id"]] == "").any(axis=1)
    if empty.any():
        i = int(empty.to_numpy().nonzero()[0][0])
        raise DatasetToolError(f"{path}: line {i + offset}: empty user_id or item_id")
    return df, fmt


def _split_title(title):
    m = re.match(r"^(.*?)\s*\((\d{4})\)\s*$", title)
    return (m.group(1), m.group(2)) if m else (title.strip(), "")


def read_items(path):
    """``u.item`` / ``movies.dat`` / atomic ``.item`` -> (DataFrame, types)."""
    first = _first_line(path)
    if is_atomic_header(first):
        df = read_atomic(path, required=["item_id"])
        types = {}
        with open(path, encoding="utf-8") as f:
            for col in f.readline().rstrip("\n").split("\t"):
                n, t = col.split(":")
                types[n] = t
        return df, types
    rows = []
    if "::" in first:
        df = builder.read_delimited(path, "::", ["item_id", "title", "genres"], "movies.dat")
        for r in df.itertuples(index=False):
            title, year = _split_title(r.title)
            rows.append((r.item_id, title, year, " ".join(g for g in r.genres.split("|") if g)))
    else:
        text = read_text(path)
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            parts = line.split("|")
            if len(parts) != 5 + len(ML100K_GENRES):
                raise DatasetToolError(f"{path}: line {i + 1}: expected {5 + len(ML100K_GENRES)} '|'-separated u.item "
                                       f"fields, found {len(parts)}")
            title, year = _split_title(parts[1])
            if not year:
                m = re.search(r"(\d{4})$", parts[2])
                year = m.group(1) if m else ""
            flags = parts[5:]
            if any(f not in ("0", "1") for f in flags):
                raise DatasetToolError(f"{path}: line {i + 1}: genre flags must be 0/1")
            genres = " ".join(g for g, f in zip(ML100K_GENRES, flags) if f == "1")
            rows.append((parts[0], title, year, genres))
    return pd.DataFrame(rows, columns=list(ITEM_TYPES), dtype=str), dict(ITEM_TYPES)


def read_users(path):
    """``u.user`` (id|age|gender|occupation|zip) / ``users.dat`` (id::gender::age::occupation::zip) / atomic."""
    first = _first_line(path)
    if is_atomic_header(first):
        df = read_atomic(path, required=["user_id"])
        return df, {c: "token" for c in df.columns}
    if "::" in first:
        df = builder.read_delimited(path, "::", ["user_id", "gender", "age", "occupation", "zip_code"], "users.dat")
    else:
        df = builder.read_delimited(path, "|", ["user_id", "age", "gender", "occupation", "zip_code"], "u.user")
    return df[list(USER_TYPES)], dict(USER_TYPES)


def compose_link(link, item_map):
    """item -> key (item_map) joined with key -> entity (link)."""
    if item_map is None:
        return link
    m = item_map.rename(columns={"key": "item_id", "value": "key"})
    j = m.merge(link.rename(columns={"key": "key", "value": "entity"}), on="key", how="inner")
    return pd.DataFrame({"key": j["item_id"], "value": j["entity"]})


# ----------------------------------------------------------------------------------------------- CLI
def add_common_build_args(p):
    """Options shared by build-movielens and build-amazon-books."""
    g = p.add_argument_group("knowledge graph")
    g.add_argument("--link", help="item -> entity table (RecBole .link, headerless 'key entity' file, or a side table)")
    g.add_argument("--link-cols", help="KEY,ENTITY column names/indices when --link is a side table with a header")
    g.add_argument("--kg", nargs="+", help="KG triple file(s): RecBole .kg or headerless 'head relation tail'")
    g.add_argument("--kg-order", default="hrt", choices=["hrt", "htr"], help="column order of headerless KG files")
    g.add_argument("--drop-relations", nargs="+", default=[], metavar="REL",
                   help="relations to remove, e.g. dbo:wikiPageWikiLink")
    g.add_argument("--reverse-relations", action="store_true", help="add (t, r+SUFFIX, h) for every triple")
    g.add_argument("--reverse-suffix", default="_reverse")
    g.add_argument("--keep-links-without-triples", action="store_true",
                   help="keep links to entities that have no triple in the KG (dropped by default)")
    g = p.add_argument_group("interactions")
    g.add_argument("--rating-threshold", type=float, help="keep interactions with rating >= T")
    g.add_argument("--implicit", action="store_true", help="drop the rating column (every interaction is positive)")
    g.add_argument("--k-core", type=int, default=0, help="iteratively keep users/items with >= K interactions")
    g.add_argument("--drop-unlinked", action="store_true",
                   help="drop interactions on items not linked to the KG (RecBole's KG pipeline does this anyway)")
    g = p.add_argument_group("texts and images")
    g.add_argument("--item-text", help="CSV/TSV of item texts (header)")
    g.add_argument("--item-text-id-col", help="id column (default: item_id/asin/id)")
    g.add_argument("--item-text-col", help="text column (default: text/overview/overview_tmdb/description)")
    g.add_argument("--entity-text", help="CSV/TSV of entity texts (names), e.g. ml-100k-kg.ent_text.tsv")
    g.add_argument("--entity-text-id-col")
    g.add_argument("--entity-text-col")
    g.add_argument("--image-dir", help="folder of <item_id>.jpg/.png/... images")
    g.add_argument("--image-table", help="table item_id -> path (relative to the table's folder)")
    g.add_argument("--image-id-col")
    g.add_argument("--image-path-col")
    g.add_argument("--copy-images", action="store_true", help="copy images into <out>/images/")
    g.add_argument("--flag-col", help="column of match-quality flags in text/image tables "
                                      "(default: tmdb_match_flags or flags if present; 'none' to ignore)")
    g.add_argument("--exclude-flags", default=",".join(builder.DEFAULT_EXCLUDE_FLAGS),
                   help="items carrying any of these flags get no text and no image (default: %(default)s)")
    g.add_argument("--keep-flagged", action="store_true", help="do not exclude flagged items")
    p.add_argument("--out", required=True, help="output dataset folder (created)")
    p.add_argument("--name", help="dataset name (default: the output folder's name)")


def add_args(p):
    p.add_argument("--ratings", required=True, help="u.data / ratings.dat / ratings.csv / <name>.inter")
    p.add_argument("--ratings-format", default="auto", choices=["auto", "ml-100k", "ml-1m", "csv", "atomic"])
    p.add_argument("--items", help="u.item / movies.dat / <name>.item")
    p.add_argument("--users", help="u.user / users.dat / <name>.user")
    p.add_argument("--item-map", help="table mapping dataset item ids to the link's key ids (e.g. ML-20M ids)")
    p.add_argument("--item-map-cols", default="item_id,ml20m_movie_id", help="ITEM,KEY columns (default: %(default)s)")
    add_common_build_args(p)


def load_common(args, id_candidates=("item_id", "asin", "id"),
                text_candidates=("text", "overview", "overview_tmdb", "description")):
    """KG, texts and images shared by both builders."""
    kg = builder.read_kg(args.kg, args.kg_order) if args.kg else None
    item_text = entity_text = None
    if args.item_text:
        item_text, _ = builder.read_text_table(args.item_text, args.item_text_id_col, args.item_text_col,
                                               id_candidates, text_candidates, args.flag_col, "item text")
    if args.entity_text:
        entity_text, _ = builder.read_text_table(args.entity_text, args.entity_text_id_col, args.entity_text_col,
                                                 ("entity_id", "id"), ("text", "name"), "none", "entity text")
    images = builder.read_image_source(args.image_dir, args.image_table, args.image_id_col, args.image_path_col,
                                       args.flag_col)
    return kg, item_text, entity_text, images


def build_opts(args):
    return dict(rating_threshold=args.rating_threshold, implicit=args.implicit, k_core=args.k_core,
                drop_unlinked=args.drop_unlinked, reverse_relations=args.reverse_relations,
                reverse_suffix=args.reverse_suffix, drop_relations=args.drop_relations,
                exclude_flags=args.exclude_flags, keep_flagged=args.keep_flagged,
                keep_links_without_triples=args.keep_links_without_triples, copy_images=args.copy_images)


def run(args):
    name = args.name or os.path.basename(os.path.normpath(args.out))
    inter, fmt = read_ratings(args.ratings, args.ratings_format)
    items = item_types = users = user_types = None
    if args.items:
        items, item_types = read_items(args.items)
    if args.users:
        users, user_types = read_users(args.users)
    link = None
    if args.link:
        link = builder.read_link_table(args.link, args.link_cols, "link")
        if args.item_map:
            item_map = builder.read_link_table(args.item_map, args.item_map_cols, "item-map")
            link = compose_link(link, item_map)
    elif args.item_map:
        raise DatasetToolError("--item-map needs --link")
    kg, item_text, entity_text, images = load_common(args)
    sources = {k: getattr(args, k) for k in ("ratings", "items", "users", "item_map", "link", "kg", "item_text",
                                            "entity_text", "image_dir", "image_table")}
    sources["ratings_format"] = fmt
    rep = builder.build(name, args.out, inter, kg=kg, link=link, items=items, item_types=item_types, users=users,
                        user_types=user_types, item_text=item_text, entity_text=entity_text, images=images,
                        opts=build_opts(args), sources=sources)
    builder.print_summary(rep, args.out)
    return 0
