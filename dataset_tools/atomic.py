"""Small shared helpers: reading raw/side tables, writing RecBole atomic files atomically, progress bars.

Nothing here imports model code. Errors are raised as :class:`DatasetToolError` with a message that names
the file, the line (1-based, counting the header) and the field when one is known.
"""
import os
import re
import sys

import pandas as pd

from recbole_mkg.atomic_io import atomic_open


class DatasetToolError(Exception):
    """A user-facing error: bad input file, bad option. The message names the file/line/field."""


def progress(iterable=None, total=None, desc=None, unit="it", disable=None):
    """A tqdm progress bar on stderr (silently a plain iterator when tqdm is missing or disabled)."""
    if disable is None:
        disable = os.environ.get("DATASET_TOOLS_NO_PROGRESS", "") not in ("", "0")
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable if iterable is not None else _NullBar()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


class _NullBar:  # pragma: no cover - only without tqdm
    def update(self, n=1):
        pass

    def close(self):
        pass


def read_text(path):
    """Read a whole text file; UTF-8, falling back to latin-1 (ML-100K's ``u.item`` is latin-1)."""
    if not os.path.isfile(path):
        raise DatasetToolError(f"{path}: file not found")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def is_atomic_header(line):
    """True when ``line`` looks like a RecBole atomic header (``name:type`` columns)."""
    cols = line.rstrip("\r\n").split("\t")
    return all(re.fullmatch(r"[A-Za-z_][\w]*:(token|token_seq|float|float_seq)", c.strip()) for c in cols)


def read_atomic(path, required=None):
    """Read a RecBole atomic file into a str DataFrame whose columns are the bare field names.

    Args:
        path: the file.
        required: field names that must be present.
    """
    if not os.path.isfile(path):
        raise DatasetToolError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        header = f.readline()
    if not is_atomic_header(header):
        raise DatasetToolError(f"{path}: line 1: not a RecBole atomic header ('name:type<TAB>...'): {header.strip()[:120]!r}")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False, engine="c")
    except pd.errors.ParserError as err:
        raise DatasetToolError(f"{path}: wrong number of tab-separated columns ({err})")
    df.columns = [c.split(":")[0] for c in df.columns]
    for field in required or ():
        if field not in df.columns:
            raise DatasetToolError(f"{path}: line 1: missing field {field!r} (found {list(df.columns)})")
    return df


def read_side_table(path, sep=None):
    """A CSV/TSV side table with a header (texts, image tables, id maps), all columns as str.

    ``sep``: None chooses ',' for ``.csv`` and TAB otherwise. TSVs are read with ``quoting=3`` (no quote
    handling), as the shared datasets' README prescribes; CSVs with standard quoting.
    """
    if not os.path.isfile(path):
        raise DatasetToolError(f"{path}: file not found")
    if sep is None:
        sep = "," if path.lower().endswith(".csv") else "\t"
    kwargs = dict(sep=sep, dtype=str, keep_default_na=False)
    if sep == "\t":
        kwargs["quoting"] = 3
    try:
        df = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise DatasetToolError(f"{path}: file is empty")
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DatasetToolError(f"{path}: cannot parse as a {'TSV' if sep == chr(9) else 'CSV'} with a header ({err})")
    df.columns = [str(c).split(":")[0] if is_atomic_header(str(c)) else str(c) for c in df.columns]
    return df


def pick_column(df, path, wanted, candidates=(), what="column"):
    """Resolve a column given by name or 0-based index, or the first present of ``candidates``."""
    if wanted is not None:
        if wanted in df.columns:
            return wanted
        if str(wanted).isdigit() and int(wanted) < len(df.columns):
            return df.columns[int(wanted)]
        raise DatasetToolError(f"{path}: line 1: no {what} {wanted!r} (columns: {list(df.columns)})")
    for c in candidates:
        if c in df.columns:
            return c
    raise DatasetToolError(f"{path}: line 1: none of the expected {what}s {list(candidates)} found "
                           f"(columns: {list(df.columns)}); name one with the matching option")


def write_atomic(path, df, types):
    """Write ``df`` as a RecBole atomic file, atomically (temp file + rename).

    ``types``: {column: 'token'|'float'|'token_seq'|'float_seq'}, in column order.
    """
    cols = list(types)
    header = "\t".join(f"{c}:{types[c]}" for c in cols)
    with atomic_open(path, newline="\n") as f:
        f.write(header + "\n")
        if len(df):
            df[cols].astype(str).to_csv(f, sep="\t", header=False, index=False, quoting=3, lineterminator="\n")


def write_tsv(path, df):
    """Write a plain side TSV (header, no types), atomically. Tabs/newlines inside cells become spaces."""
    clean = df.astype(str).apply(lambda s: s.str.replace(r"[\t\r\n]+", " ", regex=True))
    with atomic_open(path, newline="\n") as f:
        clean.to_csv(f, sep="\t", index=False, quoting=3, lineterminator="\n")


def split_flags(value):
    """'imdb_mismatch;year_diff' -> {'imdb_mismatch', 'year_diff'} (also accepts ',' and '|')."""
    return {p.strip() for p in re.split(r"[;,|]", value or "") if p.strip()}


def parse_list(value):
    """'a,b , c' -> ['a', 'b', 'c']; None/'' -> []."""
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out.extend(parse_list(v))
        return out
    return [p.strip() for p in str(value).split(",") if p.strip()]


def fmt_int(n):
    return f"{int(n):,}"


def fmt_share(num, den):
    return f"{num / den:.1%}" if den else "n/a"


def print_table(rows, title=None, file=None):
    """Print ``[(key, value), ...]`` as an aligned two-column table (Markdown-compatible)."""
    file = file or sys.stdout
    width = max([len(str(k)) for k, _ in rows] + [8])
    if title:
        print(f"\n{title}", file=file)
    print(f"| {'quantity'.ljust(width)} | value |", file=file)
    print(f"|{'-' * (width + 2)}|-------|", file=file)
    for k, v in rows:
        print(f"| {str(k).ljust(width)} | {v} |", file=file)
