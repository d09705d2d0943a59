"""Checks JSON data against a JSON schema: the keywords structured output uses.

A reply asked for with a JSON schema (a dict, not a pydantic type) is checked here
when it ends. Covered: ``type`` (one or a list), ``enum``, ``const``, ``properties``,
``required``, ``additionalProperties`` (false or a schema), ``items``,
``prefixItems``, ``minItems`` / ``maxItems``, ``minLength`` / ``maxLength``,
``pattern``, ``minimum`` / ``maximum`` / ``exclusiveMinimum`` /
``exclusiveMaximum`` / ``multipleOf``, ``anyOf`` / ``oneOf`` / ``allOf``, and
local ``$ref`` (``#/$defs/…``, ``#/definitions/…``, ``#``). Other keywords
(``format``, ``uniqueItems`` …) are not checked. OpenAI's strict mode and Anthropic's
structured outputs accept a subset of these, so what a provider can be asked for is
checked in full.

(The ``jsonschema`` package does all of JSON Schema, but importing it costs seconds
where Jupyter's format checkers are installed; this covers what is needed.)

>>> check({"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
...       {"n": "3"})
['$.n: expected integer, got a string ("3")']
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["check", "resolve_ref"]

MAX_ERRORS = 10
_MAX_REFS = 64  # $ref hops without going deeper into the data (a schema {"$ref": "#"})

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


def check(schema: Any, data: Any) -> list[str]:
    """What is wrong with ``data`` for ``schema`` (at most ``MAX_ERRORS`` messages, each
    starting with the place: ``$.items[2].price``); empty when it is valid."""
    errors: list[str] = []
    _Checker(schema, errors).run(schema, data, "$", 0)
    return errors


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


class _Checker:
    def __init__(self, root: Any, errors: list[str]) -> None:
        self.root = root
        self.errors = errors

    def fail(self, where: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(f"{where}: {message}")

    def ok(self, schema: Any, data: Any, where: str, refs: int) -> bool:
        """Whether ``data`` matches, without reporting (for anyOf / oneOf)."""
        probe = _Checker(self.root, [])
        probe.run(schema, data, where, refs)
        return not probe.errors

    def run(self, schema: Any, data: Any, where: str, refs: int) -> None:
        if schema is False:
            self.fail(where, "no value is allowed here")
            return
        if not isinstance(schema, dict):
            return
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = self.resolve(ref)
            if target is None:
                self.fail(where, f"the schema's $ref {ref!r} points nowhere")
            elif refs < _MAX_REFS:
                self.run(target, data, where, refs + 1)
        before = len(self.errors)
        self.types(schema, data, where)
        if len(self.errors) > before:
            return  # the wrong type: the other keywords would only repeat it
        if "enum" in schema and not any(_same(data, e) for e in schema["enum"]):
            self.fail(where, f"{_short(data)} is not one of {_short(schema['enum'])}")
        if "const" in schema and not _same(data, schema["const"]):
            self.fail(where, f"expected {_short(schema['const'])}, got {_short(data)}")
        self.combinations(schema, data, where, refs)
        if isinstance(data, dict):
            self.object(schema, data, where)
        elif isinstance(data, list):
            self.array(schema, data, where)
        elif isinstance(data, str):
            self.string(schema, data, where)
        elif isinstance(data, int | float) and not isinstance(data, bool):
            self.number(schema, data, where)

    def resolve(self, ref: str) -> Any:
        return self.root if ref == "#" else resolve_ref(self.root, ref)

    def types(self, schema: dict[str, Any], data: Any, where: str) -> None:
        kind = schema.get("type")
        if kind is None:
            return
        kinds = kind if isinstance(kind, list) else [kind]
        known = [k for k in kinds if k in _TYPES]
        if known and not any(_TYPES[k](data) for k in known):
            want = " or ".join(known)
            self.fail(where, f"expected {want}, got {_kind(data)} ({_short(data)})")

    def combinations(
        self, schema: dict[str, Any], data: Any, where: str, refs: int
    ) -> None:
        for sub in schema.get("allOf") or ():
            self.run(sub, data, where, refs)
        any_of = schema.get("anyOf")
        if (
            isinstance(any_of, list)
            and any_of
            and not any(self.ok(s, data, where, refs) for s in any_of)
        ):
            self.fail(where, f"{_short(data)} matches none of the allowed shapes")
        one_of = schema.get("oneOf")
        if isinstance(one_of, list) and one_of:
            n = sum(self.ok(s, data, where, refs) for s in one_of)
            if n != 1:
                self.fail(
                    where,
                    f"{_short(data)} matches {n} of the shapes of oneOf (exactly one "
                    "must match)",
                )

    def object(self, schema: dict[str, Any], data: dict[str, Any], where: str) -> None:
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        for name in schema.get("required") or ():
            if name not in data:
                self.fail(where, f"the required property {name!r} is missing")
        extra = schema.get("additionalProperties", True)
        for key, value in data.items():
            at = f"{where}.{key}" if key.isidentifier() else f"{where}[{key!r}]"
            if key in props:
                self.run(props[key], value, at, 0)
            elif extra is False:
                self.fail(where, f"the property {key!r} is not allowed")
            elif isinstance(extra, dict):
                self.run(extra, value, at, 0)

    def array(self, schema: dict[str, Any], data: list[Any], where: str) -> None:
        prefix = schema.get("prefixItems")
        first = prefix if isinstance(prefix, list) else []
        items = schema.get("items")
        if isinstance(items, list):  # draft 4-7 tuple form
            first, items = items, schema.get("additionalItems")
        for i, value in enumerate(data):
            sub = first[i] if i < len(first) else items
            if sub is not None:
                self.run(sub, value, f"{where}[{i}]", 0)
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if isinstance(lo, int) and len(data) < lo:
            self.fail(where, f"has {len(data)} items, at least {lo} are needed")
        if isinstance(hi, int) and len(data) > hi:
            self.fail(where, f"has {len(data)} items, at most {hi} are allowed")

    def string(self, schema: dict[str, Any], data: str, where: str) -> None:
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if isinstance(lo, int) and len(data) < lo:
            self.fail(where, f"{_short(data)} is shorter than {lo} characters")
        if isinstance(hi, int) and len(data) > hi:
            self.fail(where, f"{_short(data)} is longer than {hi} characters")
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                found = re.search(pattern, data) is not None
            except re.error:
                found = True  # a pattern Python cannot read is not checked
            if not found:
                self.fail(where, f"{_short(data)} does not match {pattern!r}")

    def number(self, schema: dict[str, Any], data: float, where: str) -> None:
        for key, says in _BOUNDS:
            bound = schema.get(key)
            if not isinstance(bound, int | float) or isinstance(bound, bool):
                continue
            if (
                (key == "minimum" and data < bound)
                or (key == "maximum" and data > bound)
                or (key == "exclusiveMinimum" and data <= bound)
                or (key == "exclusiveMaximum" and data >= bound)
            ):
                self.fail(where, f"{_short(data)} is {says} {bound}")
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and step > 0:
            q = data / step
            if abs(q - round(q)) > 1e-9:
                self.fail(where, f"{_short(data)} is not a multiple of {step}")


_BOUNDS = (
    ("minimum", "less than"),
    ("maximum", "more than"),
    ("exclusiveMinimum", "not more than"),
    ("exclusiveMaximum", "not less than"),
)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def resolve_ref(root: Any, ref: str) -> Any:
    """What a local ``$ref`` (``#/$defs/Row``, JSON Pointer escapes included) points
    to in ``root``, or None."""
    if not ref.startswith("#/"):
        return None
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
