"""What a batch asks: its inputs turned into one ``Row`` per request. Pure: no I/O.

Accepted inputs (each item is one row):

- a list of strings: each is the user message (its column is ``prompt``);
- a list of message lists: ``[{"role": "user", "content": "..."}, ...]`` (``messages``);
- a list of dicts, or a pandas ``DataFrame`` (one dict per row, its columns as keys).
  A row gives its message as ``prompt`` (a string) or ``messages`` (a message list), or
  through ``template``: ``"Classify: {review}"`` fills ``{review}`` from the row. Two
  more names are read when present: ``system`` (this row's system prompt, instead of
  ``batch(system=...)``) and ``params`` (a dict of parameters for this row, over the
  batch's ``**params``; ``"model"`` in it picks the row's model). Every other column is
  kept as input, shown again by ``Job.to_pandas()``.

A template that names a column no row has fails at once (``ConfigurationError``), before
anything is sent. A row that cannot be sent (a missing or empty field, a message list of
the wrong shape, parameters JSON cannot hold) becomes a row with an ``error``: recorded,
not sent.

>>> rows = build_rows(["Hi", 3], template=None)
>>> rows[0].messages, rows[1].error
([{'role': 'user', 'content': 'Hi'}], 'row 1 is an int: give a string, a message list or a dict')
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._core.errors import ConfigurationError

__all__ = ["ROLES", "Row", "build_rows", "template_fields"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
RESERVED = ("prompt", "messages", "system", "params")


@dataclass(slots=True)
class Row:
    """One request of the batch (or, with ``error``, one that will not be sent)."""

    position: int  # 0-based place in the input
    label: Any  # the DataFrame's index label, else the position
    columns: dict[str, Any]  # the input, as given (shown again by to_pandas)
    messages: list[dict[str, Any]] = field(default_factory=list)
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    error: str | None = None


def template_fields(template: str) -> list[str]:
    """The column names ``template`` reads (``{a}``, ``{a.b}`` and ``{a[0]}`` read
    ``a``). Raises ``ConfigurationError`` for a template ``str.format`` cannot read."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(
            f"template {template!r} is not a valid format string ({exc}). Double a "
            "brace ({{ or }}) to send it as it is."
        ) from None
    names: list[str] = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        base = name.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise ConfigurationError(
                f"template {template!r} has a positional field {{{name}}}: name a "
                "column, e.g. {review}."
            )
        if base not in names:
            names.append(base)
    return names


def _kind(value: Any) -> str:
    """``an int``, ``a str``: what a value is, in words."""
    name = type(value).__name__
    return ("an " if name[:1] in "aeiou" else "a ") + name


def _is_dataframe(obj: Any) -> bool:
    return type(obj).__module__.startswith("pandas") and hasattr(obj, "to_dict")


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return isinstance(value, float) and math.isnan(value)
    except TypeError:  # pragma: no cover - a float subclass that refuses isnan
        return False


def _records(inputs: Any) -> tuple[list[Any], list[Any], list[str] | None]:
    """``(items, labels, dataframe columns or None)``."""
    if _is_dataframe(inputs):
        columns = [str(c) for c in inputs.columns]
        records = inputs.to_dict("records")
        items = [{str(k): v for k, v in r.items()} for r in records]
        return items, list(inputs.index), columns
    if isinstance(inputs, str | bytes | Mapping):
        raise ConfigurationError(
            "batch() takes a list of prompts (strings), a list of message lists, a "
            f"list of dicts or a pandas DataFrame, not a single {type(inputs).__name__}"
            ": wrap it in a list."
        )
    if not isinstance(inputs, Iterable):
        raise ConfigurationError(
            f"batch() cannot read inputs of type {type(inputs).__name__}: give a list "
            "of prompts, of message lists or of dicts, or a pandas DataFrame."
        )
    items = list(inputs)
    return items, list(range(len(items))), None


def _check_messages(value: Any) -> str | None:
    """Why ``value`` is not a message list, or None."""
    if not isinstance(value, list) or not value:
        return "messages must be a non-empty list of {'role': ..., 'content': ...}"
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            return f"message {i} is {_kind(m)}, not a dict"
        role = m.get("role")
        if role not in ROLES:
            return f"message {i} has role {role!r}; use one of {sorted(ROLES)}"
        if "content" not in m and "tool_calls" not in m:
            return f"message {i} has no 'content'"
    return None


def build_rows(
    inputs: Any,
    *,
    template: str | None,
    system: str | None = None,
) -> list[Row]:
    """One ``Row`` per input item (see the module docstring)."""
    items, labels, df_columns = _records(inputs)
    fields = template_fields(template) if template is not None else []
    if fields:
        _check_fields_exist(fields, items, df_columns)
    rows: list[Row] = []
    for pos, (item, label) in enumerate(zip(items, labels, strict=True)):
        rows.append(_row(pos, label, item, template, fields, system))
    return rows


def _check_fields_exist(
    fields: list[str], items: list[Any], df_columns: list[str] | None
) -> None:
    if df_columns is not None:
        have = set(df_columns)
    else:
        have = set()
        for item in items:
            if isinstance(item, str):
                have.add("prompt")
            elif isinstance(item, list):
                have.add("messages")
            elif isinstance(item, Mapping):
                have.update(str(k) for k in item)
    missing = [f for f in fields if f not in have]
    if missing:
        names = ", ".join(repr(f) for f in missing)
        avail = ", ".join(repr(c) for c in sorted(have)) or "none"
        raise ConfigurationError(
            f"The template names {'a column' if len(missing) == 1 else 'columns'} "
            f"that the inputs do not have: {names}. Columns available: {avail}. "
            "Nothing was sent."
        )


def _row(
    pos: int,
    label: Any,
    item: Any,
    template: str | None,
    fields: list[str],
    default_system: str | None,
) -> Row:
    if isinstance(item, str):
        columns: dict[str, Any] = {"prompt": item}
    elif isinstance(item, list):
        columns = {"messages": item}
    elif isinstance(item, Mapping):
        columns = {str(k): v for k, v in item.items()}
    else:
        return Row(
            pos,
            label,
            {"input": item},
            error=f"row {pos} is {_kind(item)}: give a string, a message list or a "
            "dict",
        )
    row = Row(pos, label, columns, system=default_system)

    system = columns.get("system")
    if not _missing(system):
        if not isinstance(system, str):
            row.error = f"'system' is {_kind(system)}, not a string"
            return row
        row.system = system
    params = columns.get("params")
    if not _missing(params):
        if not isinstance(params, Mapping):
            row.error = f"'params' is {_kind(params)}, not a dict"
            return row
        row.params = {str(k): v for k, v in params.items()}
        model = row.params.pop("model", None)
        if model is not None:
            if not isinstance(model, str) or not model:
                row.error = f"params['model'] is {model!r}, not a model name"
                return row
            row.model = model

    if template is not None:
        for f in fields:
            if f not in columns:
                row.error = f"this row has no {f!r} for the template"
                return row
            if _missing(columns[f]):
                row.error = f"{f!r} is empty in this row"
                return row
        try:
            text = template.format_map(columns)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
            row.error = f"the template cannot be filled from this row ({exc!r})"
            return row
        row.messages = [{"role": "user", "content": text}]
        return row

    prompt = columns.get("prompt")
    messages = columns.get("messages")
    if not _missing(prompt):
        if not isinstance(prompt, str) or not prompt.strip():
            row.error = "'prompt' is empty or not a string"
            return row
        row.messages = [{"role": "user", "content": prompt}]
    elif not _missing(messages):
        why = _check_messages(messages)
        if why or not isinstance(messages, list):
            row.error = why
            return row
        row.messages = [dict(m) for m in messages]
    else:
        row.error = (
            "nothing to send: give the row a 'prompt' or 'messages', or pass "
            "template='...{column}...'"
        )
    return row
