"""A structured reply (``response_format=``) as HTML: its value as a table or tree,
the raw JSON under it (collapsed), and why it did not validate, if it did not.

Inert: every key and value is escaped text. The markup is the one the live views
build (js/src/structured.js), so the saved output looks like the live one:

- an object: a two-column table, ``<table class="nbs-obj">`` (key, value);
- an array of objects: one row per item, a column per key, ``<table class="nbs-rows">``;
- any other array: ``<ol class="nbs-arr" start="0">``;
- a string, number, true/false/null: ``<span class="nbs-str|nbs-num|nbs-lit">``;
- deeper than ``MAX_DEPTH``: the rest as compact JSON in ``<code>``.

>>> value_html({"a": [1, "<b>"]})
'<table class="nbs-obj"><tbody><tr><th>a</th><td><ol class="nbs-arr" start="0"><li><span class="nbs-num">1</span></li><li><span class="nbs-str">&lt;b&gt;</span></li></ol></td></tr></tbody></table>'
"""

from __future__ import annotations

import json
from typing import Any

from markdown_it.common.utils import escapeHtml

from .._core.transcript import Turn

__all__ = ["MAX_DEPTH", "structured_html", "value_html"]

MAX_DEPTH = 24


def structured_html(turn: Turn) -> str:
    """The structured part of a reply's output (``turn.structured`` is set)."""
    s = turn.structured
    assert s is not None
    with turn._lock:
        value = s.data(turn)
        error = s.parse_error(turn)
    text = turn.text
    parts = ['<div class="nbs-structured">\n']
    if value is not None:
        parts.append(value_html(value) + "\n")
    elif not text:
        parts.append("<p><em>(no value)</em></p>\n")
    if error:
        parts.append(
            '<p class="nbs-parse-error"><strong>Not valid:</strong> '
            f"{_lines(error)}</p>\n"
        )
    if text:
        # open when there is nothing else to look at
        opened = " open" if value is None else ""
        parts.append(
            f'<details class="nbs-raw"{opened}><summary>JSON</summary>\n'
            f"<pre><code>{escapeHtml(text)}</code></pre>\n</details>\n"
        )
    parts.append("</div>\n")
    return "".join(parts)


def value_html(value: Any, depth: int = 0) -> str:
    """A JSON value as HTML (see the module docstring)."""
    if depth >= MAX_DEPTH and isinstance(value, dict | list) and value:
        return f'<code class="nbs-deep">{escapeHtml(_compact(value))}</code>'
    if isinstance(value, dict):
        if not value:
            return '<span class="nbs-empty">{}</span>'
        rows = "".join(
            f"<tr><th>{escapeHtml(str(k))}</th><td>{value_html(v, depth + 1)}</td></tr>"
            for k, v in value.items()
        )
        return f'<table class="nbs-obj"><tbody>{rows}</tbody></table>'
    if isinstance(value, list):
        if not value:
            return '<span class="nbs-empty">[]</span>'
        if all(isinstance(v, dict) for v in value):
            return _rows(value, depth)
        items = "".join(f"<li>{value_html(v, depth + 1)}</li>" for v in value)
        return f'<ol class="nbs-arr" start="0">{items}</ol>'
    if isinstance(value, str):
        return f'<span class="nbs-str">{_lines(value)}</span>'
    if value is None or isinstance(value, bool):
        return f'<span class="nbs-lit">{_compact(value)}</span>'
    if isinstance(value, int | float):
        return f'<span class="nbs-num">{escapeHtml(_compact(value))}</span>'
    return f'<span class="nbs-str">{escapeHtml(str(value))}</span>'


def _rows(items: list[dict[str, Any]], depth: int) -> str:
    columns: dict[str, None] = {}
    for item in items:
        for k in item:
            columns.setdefault(k, None)
    head = "".join(f"<th>{escapeHtml(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{value_html(item[c], depth + 2)}</td>" if c in item else "<td></td>"
            for c in columns
        )
        + "</tr>"
        for item in items
    )
    return (
        f'<table class="nbs-rows"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _compact(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (RecursionError, ValueError):  # nested beyond what json can write back
        return "…"


def _lines(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return escapeHtml(text).replace("\n", "<br />\n")
