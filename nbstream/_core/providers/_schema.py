"""A JSON schema made acceptable to each provider's structured output.

Pydantic's schemas are not what the providers' constrained decoders accept as they
are. Each function returns a new schema (the argument is not changed) and is
idempotent: a schema already in the provider's form comes back equal.

- OpenAI ``strict`` mode (``openai_strict``): every object has
  ``additionalProperties: false`` and lists *every* property in ``required`` (an
  optional field is one whose type admits ``null``); a ``$ref`` has no sibling
  keywords (it is inlined when it has some); a one-item ``allOf`` is merged; a
  ``default`` of ``null`` is dropped. The rules of the openai SDK's
  ``to_strict_json_schema`` (openai-python ``src/openai/lib/_pydantic.py``).
- Anthropic (``anthropic_schema``): objects get ``additionalProperties: false``;
  ``oneOf`` becomes ``anyOf``; a keyword the decoder does not take (``minimum``,
  ``pattern``, ``maxItems`` …) is moved into the description, where the model can
  still read it; only the string formats it knows stay. The rules of the anthropic
  SDK's ``transform_schema`` (anthropic-sdk-python ``src/anthropic/lib/_parse/
  _transform.py``).

>>> openai_strict({"type": "object", "properties": {"a": {"type": "string"}}})
{'type': 'object', 'properties': {'a': {'type': 'string'}}, 'additionalProperties': False, 'required': ['a']}
"""

from __future__ import annotations

import copy
from typing import Any

from ..schema_check import resolve_ref

__all__ = ["anthropic_schema", "openai_strict"]

_ANTHROPIC_FORMATS = frozenset(
    {
        "date-time",
        "time",
        "date",
        "duration",
        "email",
        "hostname",
        "uri",
        "ipv4",
        "ipv6",
        "uuid",
    }
)


def openai_strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as OpenAI's ``strict: true`` accepts it."""
    root = copy.deepcopy(schema)
    out: dict[str, Any] = _strict(root, root, 0)
    return out


def _strict(node: Any, root: dict[str, Any], depth: int) -> Any:
    if not isinstance(node, dict) or depth > 64:
        return node
    for defs in ("$defs", "definitions"):
        if isinstance(node.get(defs), dict):
            for name, sub in node[defs].items():
                node[defs][name] = _strict(sub, root, depth + 1)
    if node.get("type") == "object" and "additionalProperties" not in node:
        node["additionalProperties"] = False
    props = node.get("properties")
    if isinstance(props, dict):
        node["required"] = list(props)
        node["properties"] = {k: _strict(v, root, depth + 1) for k, v in props.items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"], root, depth + 1)
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_strict(v, root, depth + 1) for v in node["anyOf"]]
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        if len(all_of) == 1:
            node.pop("allOf")
            node.update(_strict(all_of[0], root, depth + 1))
        else:
            node["allOf"] = [_strict(v, root, depth + 1) for v in all_of]
    if "default" in node and node["default"] is None:
        del node["default"]
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        target = resolve_ref(root, ref)
        if isinstance(target, dict):  # the node's own keywords win over the target's
            merged = {**copy.deepcopy(target), **node}
            merged.pop("$ref")
            return _strict(merged, root, depth + 1)
    return node


def anthropic_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as Anthropic's structured outputs (``output_config.format``) take it."""
    out: dict[str, Any] = _anthropic(copy.deepcopy(schema), 0)
    return out


def _anthropic(node: Any, depth: int) -> Any:
    if not isinstance(node, dict) or depth > 64:
        return node
    out: dict[str, Any] = {}
    rest = dict(node)
    defs = rest.pop("$defs", None)
    if isinstance(defs, dict):
        out["$defs"] = {k: _anthropic(v, depth + 1) for k, v in defs.items()}
    ref = rest.pop("$ref", None)
    if ref is not None:
        out["$ref"] = ref
        return out
    kind = rest.pop("type", None)
    any_of, one_of, all_of = rest.pop("anyOf", None), rest.pop("oneOf", None), None
    if not isinstance(any_of, list) and not isinstance(one_of, list):
        all_of = rest.pop("allOf", None)
    if isinstance(any_of, list) or isinstance(one_of, list):
        variants = any_of if isinstance(any_of, list) else one_of
        assert isinstance(variants, list)
        out["anyOf"] = [_anthropic(v, depth + 1) for v in variants]
    elif isinstance(all_of, list):
        out["allOf"] = [_anthropic(v, depth + 1) for v in all_of]
    elif kind is not None:
        out["type"] = kind
    for key in ("enum", "description", "title"):
        if key in rest:
            out[key] = rest.pop(key)
    if kind == "object":
        props = rest.pop("properties", {})
        out["properties"] = {
            k: _anthropic(v, depth + 1) for k, v in (props or {}).items()
        }
        rest.pop("additionalProperties", None)
        out["additionalProperties"] = False
        if "required" in rest:
            out["required"] = rest.pop("required")
    elif kind == "string":
        fmt = rest.pop("format", None)
        if fmt in _ANTHROPIC_FORMATS:
            out["format"] = fmt
        elif fmt:
            rest["format"] = fmt
    elif kind == "array":
        items = rest.pop("items", None)
        if items is not None:
            out["items"] = _anthropic(items, depth + 1)
        if rest.get("minItems") in (0, 1):
            out["minItems"] = rest.pop("minItems")
    if rest:  # what the decoder does not take, said in words
        said = ", ".join(f"{k}: {v}" for k, v in rest.items())
        desc = out.get("description")
        out["description"] = (f"{desc}\n\n" if desc else "") + "{" + said + "}"
    return out
