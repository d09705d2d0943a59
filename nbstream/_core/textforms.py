"""Objects as bounded text for a model: a DataFrame as its schema, a head and a
``describe()`` in Markdown tables; a Series the same; a numpy array summarised; dicts,
lists and anything else as a bounded repr. Each form fits in the characters it is given
and says what it left out. Pure functions; pandas and numpy are used only through the
objects given (never imported here).

>>> print(text_form({"a": 1, "b": [1, 2]}, 200, "notes"))
dict `notes`, 2 items:
{'a': 1, 'b': [1, 2]}
"""

from __future__ import annotations

import math
import pprint
import reprlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["CHARS_PER_TOKEN", "cut", "text_form"]

CHARS_PER_TOKEN = 4  # how the engine estimates tokens from characters (accumulate.py)
HEAD_ROWS = (50, 20, 10, 5, 3)  # the most first rows that fit, down to 3
MAX_COLUMNS = 20  # at most this many columns in the rows and the summary
MAX_SCHEMA = 200  # at most this many columns listed with their dtype
CELL = 40  # characters of one table cell
SAMPLE_OVER = 200_000  # rows: describe() a sample of larger frames
SAMPLE = 100_000


def _kind(obj: Any) -> str:
    pd, np = sys.modules.get("pandas"), sys.modules.get("numpy")
    if pd is not None:
        if isinstance(obj, pd.DataFrame):
            return "dataframe"
        if isinstance(obj, pd.Series):
            return "series"
    if np is not None and isinstance(obj, np.ndarray):
        return "ndarray"
    if isinstance(obj, str):
        return "str"
    if isinstance(obj, dict | list | tuple | set | frozenset):
        return "container"
    return "other"


def text_form(obj: Any, chars: int, name: str | None = None) -> str:
    """``obj`` as text of at most ``chars`` characters, saying what it left out."""
    kind = _kind(obj)
    if kind == "dataframe":
        text = _frame(obj, chars, _called("DataFrame", name))
    elif kind == "series":
        title = f"{_called('Series', name)}: {len(obj):,} values, dtype {obj.dtype}"
        label = obj.name if obj.name is not None else (name or "value")
        text = _frame(obj.to_frame(name=label), chars, title, series=True)
    elif kind == "ndarray":
        text = _array(obj, chars, name)
    elif kind == "str":
        text = f"{_called('str', name)}, {len(obj):,} characters:\n{obj}"
    elif kind == "container":
        text = _container(obj, chars, name)
    else:
        text = _repr(obj, chars, name)
    return cut(text, chars)


def _called(kind: str, name: str | None) -> str:
    return f"{kind} `{name}`" if name else kind


def cut(text: str, chars: int) -> str:
    """``text`` cut to ``chars`` characters, the cut said in its last line."""
    if len(text) <= chars:
        return text
    note = f"\n[… {len(text):,} characters in all: the rest is left out]"
    if chars <= len(note):
        return text[: max(chars, 0)]
    return text[: chars - len(note)] + note


# -- tables --------------------------------------------------------------------------


def _cell(v: Any) -> str:
    s = str(v) if not isinstance(v, float) else "NaN" if math.isnan(v) else f"{v:.6g}"
    s = s.replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return s if len(s) <= CELL else s[: CELL - 1] + "…"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _rows(sub: Any) -> list[list[str]]:
    """A frame's rows as table cells, its index first."""
    vals = sub.itertuples(index=False, name=None)
    return [[_cell(i), *map(_cell, v)] for i, v in zip(sub.index, vals, strict=True)]


def _names(names: list[str], most: int = 8) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" … and {len(names) - most:,} more" if len(names) > most else "")


def _halvings(n: int) -> Iterator[int]:
    while n >= 1:
        yield n
        n //= 2


def _frame(df: Any, chars: int, title: str, *, series: bool = False) -> str:
    """A DataFrame within ``chars``: the richest of a list of ever smaller forms."""
    nrows, ncols = df.shape
    if not series:
        title = f"{title}: {nrows:,} rows, {ncols:,} columns"
    columns = [_cell(c) for c in df.columns]
    dtypes = [str(t) for t in df.dtypes]
    summary = _describe(df) if nrows and ncols else None
    counts = [f"{int(n):,}" for n in df.count()] if not series else []

    def build(s: int, r: int, c: int, with_summary: bool) -> str:
        out = [title]
        left: list[str] = []
        if s and not series:
            rows = [[columns[i], dtypes[i], counts[i]] for i in range(s)]
            out += ["", "Columns:", "", _table(["column", "dtype", "non-null"], rows)]
            if ncols > s:
                left.append(f"{ncols - s:,} of {ncols:,} columns from the list above")
        shown = min(r, nrows)
        if shown and c:
            rows = _rows(df.iloc[:shown, :c])
            index = _cell(df.index.name) if df.index.name is not None else ""
            first = f"First {shown} rows:" if shown > 1 else "First row:"
            out += ["", first, "", _table([index, *columns[:c]], rows)]
        if nrows > shown:
            left.append(f"{nrows - shown:,} of {nrows:,} rows" if shown else "the rows")
        if shown and ncols > c:
            left.append(
                f"{ncols - c:,} of {ncols:,} columns from the rows "
                f"({_names(columns[c:])})"
            )
        if summary is not None:
            if with_summary and c:
                d, note, head = summary
                table = _table(["", *head[:c]], _rows(d.iloc[:, :c]))
                out += ["", f"Summary (describe(){note}):", "", table]
                if len(head) > c:
                    left.append(
                        f"{len(head) - c:,} of {len(head):,} columns from the "
                        f"summary ({_names(head[c:])})"
                    )
            else:
                left.append("the describe() summary")
        out += ["", f"Left out: {'; '.join(left)}." if left else "(all of it shown)"]
        return "\n".join(out)

    most_cols = min(ncols, MAX_COLUMNS)
    most_schema = min(ncols, MAX_SCHEMA)
    row_counts = sorted({min(r, nrows) for r in HEAD_ROWS}, reverse=True)
    for c in _halvings(most_cols) if most_cols else [0]:
        for r in row_counts:
            text = build(most_schema, r, c, True)
            if len(text) <= chars:
                return text
    for c in _halvings(most_cols):
        text = build(most_schema, 1, c, False)
        if len(text) <= chars:
            return text
    for s in _halvings(most_schema):
        text = build(s, 0, 0, False)
        if len(text) <= chars:
            return text
    return build(0, 0, 0, False)


def _describe(df: Any) -> tuple[Any, str, list[str]] | None:
    """``describe()`` of the numeric columns (of all when there are none), how it was
    made, and the names of every column it covers. Only the first columns that can be
    shown are described, and a frame of over 200,000 rows from a sample."""
    src, note = df, ""
    if len(df) > SAMPLE_OVER:
        src = df.sample(SAMPLE, random_state=0)
        note = f" of a random sample of {SAMPLE:,} rows"
    try:
        numeric = src.select_dtypes("number")
        if numeric.shape[1]:
            if numeric.shape[1] < df.shape[1]:
                note += ", numeric columns"
            src = numeric
            described = numeric.iloc[:, :MAX_COLUMNS].describe()
        else:
            described = src.iloc[:, :MAX_COLUMNS].describe(include="all")
    except (ValueError, TypeError):  # columns describe() cannot handle
        return None
    return described, note, [_cell(c) for c in src.columns]


# -- arrays, containers, anything ----------------------------------------------------------


def _array(a: Any, chars: int, name: str | None) -> str:
    np = sys.modules["numpy"]
    title = f"{_called('numpy array', name)}: shape {tuple(a.shape)}, dtype {a.dtype}"
    stats = ""
    if a.size and a.dtype.kind in "iuf":
        with np.errstate(all="ignore"):
            lo, hi, mean = np.nanmin(a), np.nanmax(a), np.nanmean(a)
        if not math.isnan(float(mean)):
            stats = (
                f"\nmin {float(lo):.6g}, max {float(hi):.6g}, mean {float(mean):.6g}"
            )
    options = [(sys.maxsize, 3)] if a.size <= 10_000 else []
    options += [(0, 3), (0, 2), (0, 1)]
    for threshold, edge in options:
        body = np.array2string(
            a, threshold=threshold, edgeitems=edge, max_line_width=100
        )
        left = ""
        if threshold == 0 and a.size > (2 * edge) ** max(a.ndim, 1):
            left = f"\n(… marks values left out: {a.size:,} in all)"
        text = f"{title}{stats}\n{body}{left}"
        if len(text) <= chars:
            return text
    return text


def _nodes(obj: Any, most: int) -> int:
    """How many items ``obj`` holds, nested, counting up to ``most``."""
    seen, todo = 0, [obj]
    while todo and seen <= most:
        x = todo.pop()
        seen += 1
        if isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, list | tuple | set | frozenset):
            todo.extend(x)
    return seen


def _container(obj: Any, chars: int, name: str | None) -> str:
    title = f"{_called(type(obj).__name__, name)}, {len(obj):,} items:"
    if _nodes(obj, 5000) <= 5000:
        text = (
            f"{title}\n{pprint.pformat(obj, width=100, compact=True, sort_dicts=False)}"
        )
        if len(text) <= chars:
            return text
    for n in (50, 20, 10, 5, 2, 1):
        r = reprlib.Repr()
        r.maxlist = r.maxtuple = r.maxdict = r.maxset = r.maxfrozenset = n
        r.maxlevel = 4
        r.maxstring = r.maxother = max(40, chars // (4 * n))
        text = f"{title}\n{r.repr(obj)}\n(… marks items left out)"
        if len(text) <= chars:
            return text
    return text


def _repr(obj: Any, chars: int, name: str | None) -> str:
    t = type(obj)
    kind = (
        t.__qualname__
        if t.__module__ == "builtins"
        else f"{t.__module__}.{t.__qualname__}"
    )
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not stop the message
        text = f"<its repr failed: {type(exc).__name__}>"
    return f"{_called(kind, name)}:\n{text}"
