"""Reading server JSON whose shape cannot be trusted.

A server can send valid JSON of any shape: ``"choices": [null]``, ``"delta": "hi"``,
``"index": "0"``, string token counts. Every field a parser reads goes through one of
these readers: the right type comes back; anything else becomes ``None`` and a
``StreamWarning`` naming the field, and the stream goes on.

>>> out = []
>>> int_at({"index": "0"}, "index", "choices[].index", out), out[0].message
(None, 'Ignored choices[].index: a string where a whole number belongs.')
"""

from __future__ import annotations

from typing import Any

from ..events import Event, StreamWarning

__all__ = [
    "count",
    "dict_at",
    "int_at",
    "kind",
    "list_at",
    "str_at",
    "wrong",
]


def kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def wrong(field: str, v: Any, expected: str, out: list[Event]) -> None:
    out.append(StreamWarning(f"Ignored {field}: {kind(v)} where {expected} belongs."))


def str_at(obj: dict[str, Any], key: str, field: str, out: list[Event]) -> str | None:
    """``obj[key]`` if it is a string; ``None`` if absent or null (silently) or of
    another type (with a warning)."""
    v = obj.get(key)
    if v is None or type(v) is str:
        return v
    wrong(field, v, "a string", out)
    return None


def int_at(obj: dict[str, Any], key: str, field: str, out: list[Event]) -> int | None:
    v = obj.get(key)
    if v is None or (type(v) is int):
        return v
    wrong(field, v, "a whole number", out)
    return None


def count(obj: dict[str, Any], key: str, field: str, out: list[Event]) -> int | None:
    """A token count: a whole number ≥ 0."""
    v = obj.get(key)
    if v is None:
        return None
    if type(v) is int and v >= 0:
        return v
    if type(v) is float and v.is_integer() and v >= 0:
        return int(v)
    wrong(field, v, "a token count", out)
    return None


def dict_at(
    obj: dict[str, Any], key: str, field: str, out: list[Event]
) -> dict[str, Any] | None:
    v = obj.get(key)
    if v is None or type(v) is dict:
        return v
    wrong(field, v, "an object", out)
    return None


def list_at(
    obj: dict[str, Any], key: str, field: str, out: list[Event]
) -> list[Any] | None:
    v = obj.get(key)
    if v is None or type(v) is list:
        return v
    wrong(field, v, "a list", out)
    return None
