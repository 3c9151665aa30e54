"""The per-entity feature-file format: read, write, validate, align to RecBole ids, presence masks.

A feature file is a RecBole-style atomic file, ``<dataset>.<suffix>`` in the dataset folder, one row per
entity, tab-separated, with a typed header::

    entity_id:token\tfeature:float_seq
    m.0abc12\t0.0132 -0.2210 0.0917 ...
    m.0xyz34\t0.1020 0.0031 -0.0550 ...

* the first column is ``entity_id:token`` (the KG entity; items reach theirs through the ``.link``
  file) or ``item_id:token`` (rows keyed by item, mapped through the ``.link`` file);
* the second column holds the vector, space-separated; every row has the same length, which is the
  feature dimension (read from the file, never configured);
* an entity without a row has no feature for that modality: its presence-mask bit is 0 and its row
  of the aligned matrix is all zeros (never an invented vector);
* an optional ``<file>.json`` beside it records how the features were made (encoder, settings).

Reading validates everything and raises :class:`FeatureFileError` naming the file, the line and what to
do: missing header, wrong column count, empty or non-numeric vectors, inconsistent lengths, NaN/inf,
duplicated ids. Parsed arrays are cached as ``.npz`` keyed by the file's path, size and mtime.
"""
import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recbole_mkg.atomic_io import atomic_open, atomic_write_json  # noqa: F401  (re-exported)

ID_FIELDS = ("entity_id", "item_id")
MAX_REPORTED_LINES = 5


class FeatureFileError(ValueError):
    """A feature file is missing or malformed; the message names the file, line and remedy."""


@dataclass
class FeatureTable:
    """Parsed feature file: ``ids`` [N] str, ``matrix`` [N, D] float32, ``id_field``, ``meta``."""

    path: str
    id_field: str
    ids: np.ndarray
    matrix: np.ndarray
    meta: dict

    @property
    def dim(self):
        return int(self.matrix.shape[1])


def _lines(row_index):
    """1-based file line numbers of data rows (the header is line 1)."""
    row_index = np.asarray(row_index)[:MAX_REPORTED_LINES]
    return ", ".join(str(int(i) + 2) for i in row_index)


def _parse_header(path, columns):
    if len(columns) != 2:
        raise FeatureFileError(
            f"{path}: line 1: expected 2 tab-separated header columns "
            f"('entity_id:token<TAB>feature:float_seq'), found {len(columns)}: {list(columns)}"
        )
    id_col, vec_col = columns
    id_name, _, id_type = id_col.partition(":")
    if id_name not in ID_FIELDS or id_type != "token":
        raise FeatureFileError(
            f"{path}: line 1: first header column must be 'entity_id:token' or 'item_id:token', got {id_col!r}"
        )
    if not vec_col.endswith(":float_seq"):
        raise FeatureFileError(
            f"{path}: line 1: second header column must be '<name>:float_seq', got {vec_col!r}"
        )
    return id_name


def read_feature_file(path, expected_dim=None):
    """Parse and validate a feature file.

    A fast path (one C-engine ``pandas.read_csv`` pass over the whole file) returns valid files; any
    irregularity sends the file through the careful path, which names the file, line and problem.

    Args:
        path (str): the file.
        expected_dim (int, optional): raise if the vectors do not have this length.

    Returns:
        FeatureTable
    """
    if not os.path.isfile(path):
        raise FeatureFileError(f"{path}: feature file not found")
    table = _read_fast(path)
    if table is not None and (expected_dim is None or table.dim == expected_dim):
        return table
    return _read_careful(path, expected_dim)


def _read_fast(path):
    """Whole-file parse for well-formed files; ``None`` when anything looks wrong."""
    try:
        with open(path, "rb") as f:
            header = f.readline().decode("utf-8").rstrip("\r\n").split("\t")
            body = f.read()
        id_field = _parse_header(path, header)
        if not body.strip():
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = pd.read_csv(io.BytesIO(body.replace(b"\t", b" ")), sep=" ", header=None, dtype={0: str},
                             engine="c", quoting=3, na_filter=False)
        if df.shape[1] < 2 or df[0].duplicated().any() or (df[0] == "").any():
            return None
        matrix = df.iloc[:, 1:].to_numpy(dtype=np.float32)
    except (FeatureFileError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if not np.isfinite(matrix).all():  # NaN/inf values, or short rows padded with NaN
        return None
    return FeatureTable(path=path, id_field=id_field, ids=df[0].to_numpy(dtype=str), matrix=matrix,
                        meta=read_meta(path))


def _read_careful(path, expected_dim=None):
    """Row-by-row validation with precise error messages (also returns the table if all is well)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False, header=0,
                             index_col=False, engine="c")
    except pd.errors.ParserWarning:
        raise FeatureFileError(f"{path}: rows have more tab-separated columns than the header's 2; "
                               f"each row is '<id><TAB><v1 v2 ...>' (values separated by spaces)")
    except pd.errors.EmptyDataError:
        raise FeatureFileError(f"{path}: file is empty; expected a header 'entity_id:token<TAB>feature:float_seq'")
    except pd.errors.ParserError as err:
        raise FeatureFileError(f"{path}: wrong number of tab-separated columns ({err}); each row is '<id><TAB><v1 v2 ...>'")
    id_field = _parse_header(path, list(df.columns))
    if len(df) == 0:
        raise FeatureFileError(f"{path}: has a header but no rows")
    ids = df.iloc[:, 0].to_numpy(dtype=str)
    values = df.iloc[:, 1].str.strip()

    empty = np.flatnonzero((values == "").to_numpy())
    if len(empty):
        raise FeatureFileError(f"{path}: empty feature vector on line(s) {_lines(empty)}; drop those rows instead "
                               f"(an entity without a row is treated as missing this modality)")
    blank_ids = np.flatnonzero(pd.Series(ids).str.strip().eq("").to_numpy())
    if len(blank_ids):
        raise FeatureFileError(f"{path}: empty id on line(s) {_lines(blank_ids)}")
    dup = pd.Series(ids).duplicated(keep="first").to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        raise FeatureFileError(
            f"{path}: duplicated id(s) {sorted(set(ids[rows[:MAX_REPORTED_LINES]]))} on line(s) {_lines(rows)}; "
            f"keep one row per {id_field}"
        )

    lengths = values.str.count(r"\S+").to_numpy()
    dim = int(np.bincount(lengths).argmax())
    bad_len = np.flatnonzero(lengths != dim)
    if len(bad_len):
        raise FeatureFileError(
            f"{path}: inconsistent vector length: most rows have {dim} values, line(s) {_lines(bad_len)} have "
            f"{lengths[bad_len[:MAX_REPORTED_LINES]].tolist()}"
        )
    if expected_dim is not None and dim != expected_dim:
        raise FeatureFileError(f"{path}: vectors have {dim} values, expected {expected_dim}")

    flat = _parse_floats(path, values, len(df) * dim)
    matrix = flat.reshape(len(df), dim)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise FeatureFileError(
            f"{path}: NaN or inf values on line(s) {_lines(np.flatnonzero(~finite))}; "
            f"re-extract those rows or drop them (missing rows are masked)"
        )
    return FeatureTable(path=path, id_field=id_field, ids=ids, matrix=matrix, meta=read_meta(path))


def _parse_floats(path, values, expected_count):
    joined = " ".join(values.tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            flat = np.fromstring(joined, dtype=np.float32, sep=" ")
        except ValueError:
            flat = np.empty(0, dtype=np.float32)
    if flat.size == expected_count:
        return flat
    # slow path, only on error: find the first rows with a non-numeric token
    bad = []
    for i, text in enumerate(values.tolist()):
        try:
            np.asarray(text.split(), dtype=np.float32)
        except ValueError:
            bad.append(i)
            if len(bad) >= MAX_REPORTED_LINES:
                break
    raise FeatureFileError(f"{path}: non-numeric value(s) on line(s) {_lines(bad)}")


def read_meta(path):
    meta_path = path + ".json"
    if not os.path.isfile(meta_path):
        return {}
    with open(meta_path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise FeatureFileError(f"{meta_path}: not valid JSON ({err})")


def write_feature_file(path, ids, matrix, id_field="entity_id", meta=None, significant_digits=9):
    """Write ``ids`` [N] and ``matrix`` [N, D] atomically in the feature-file format (+ ``.json`` meta).

    The default 9 significant digits make the text round-trip float32 exactly."""
    matrix = np.asarray(matrix, dtype=np.float32)
    ids = [str(i) for i in ids]
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise ValueError(f"matrix must be [len(ids), D], got {matrix.shape} for {len(ids)} ids")
    if id_field not in ID_FIELDS:
        raise ValueError(f"id_field must be one of {ID_FIELDS}")
    fmt = f"%.{significant_digits}g"  # 9 significant digits round-trip float32 exactly
    with atomic_open(path) as f:
        f.write(f"{id_field}:token\tfeature:float_seq\n")
        for ident, row in zip(ids, matrix):
            f.write(ident + "\t" + " ".join(fmt % v for v in row) + "\n")
    if meta is not None:
        atomic_write_json(path + ".json", meta)


def _cache_file(path, cache_dir):
    stat = os.stat(path)
    key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"{os.path.basename(path)}.{digest}.npz")


def load_feature_file(path, cache_dir=None):
    """:func:`read_feature_file` with an ``.npz`` cache in ``cache_dir`` (``None``: no cache)."""
    if cache_dir is None:
        return read_feature_file(path)
    if not os.path.isfile(path):
        raise FeatureFileError(f"{path}: feature file not found")
    cache = _cache_file(path, cache_dir)
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as z:
            return FeatureTable(path=path, id_field=str(z["id_field"]), ids=z["ids"], matrix=z["matrix"],
                                meta=read_meta(path))
    table = read_feature_file(path)
    with atomic_open(cache, "wb", suffix=".npz") as f:
        np.savez(f, ids=table.ids, matrix=table.matrix, id_field=np.array(table.id_field))
    return table


def align_features(table, token2id, num_rows):
    """Place a table's rows at RecBole's internal ids.

    Args:
        table (FeatureTable): parsed file; its ``ids`` are already in the ``token2id`` key space.
        token2id (dict): external token -> internal id.
        num_rows (int): rows of the aligned matrix (e.g. ``dataset.entity_num``).

    Returns:
        tuple: ``matrix`` [num_rows, D] float32 (zeros where missing), ``mask`` [num_rows] bool,
        ``unknown`` (array of ids with no internal id; their rows are dropped).
    """
    index = pd.Series(token2id)
    internal = index.reindex(table.ids).to_numpy()
    known = ~pd.isna(internal)
    internal = internal[known].astype(np.int64)
    matrix = np.zeros((num_rows, table.dim), dtype=np.float32)
    matrix[internal] = table.matrix[known]
    mask = np.zeros(num_rows, dtype=bool)
    mask[internal] = True
    return matrix, mask, table.ids[~known]
