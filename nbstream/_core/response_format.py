"""``response_format=``: what it can be, and what it becomes.

``normalise`` turns what was given (a type pydantic's ``TypeAdapter`` takes, a JSON
schema as a dict, a wire form) into the neutral format that requests keep as data
(``request.params["response_format"]``; each provider writes it in its own wire form,
see ``providers/openai.py`` and ``providers/anthropic.py``) and the ``Validator`` that
checks a reply against it; ``with_response_format`` does that for a request and makes
the turn's ``Structured`` (structured.py). ``rejection_hint`` says what to do when a
server refuses the format.

>>> fmt, _ = normalise({"type": "object", "properties": {"n": {"type": "integer"}}})
>>> fmt["type"], fmt["name"], fmt["strict"]
('json_schema', 'response', True)
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .errors import ConfigurationError
from .structured import Invalid, Structured, Validator

__all__ = ["normalise", "rejection_hint", "with_response_format"]

_SCHEMA_TYPES = frozenset(
    {"object", "array", "string", "number", "integer", "boolean", "null"}
)
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")


def with_response_format(
    params: dict[str, Any], api: str
) -> tuple[dict[str, Any], Structured | None]:
    """``params`` with its ``response_format`` in the neutral format, and the
    ``Structured`` the turn gets (``None`` for plain text)."""
    fmt, validator = normalise(params["response_format"])
    if api == "anthropic" and fmt["type"] == "json_object" and "schema" not in fmt:
        raise ConfigurationError(
            'response_format={"type": "json_object"}: Anthropic has no JSON mode '
            "without a schema. Give a pydantic model class or a JSON schema."
        )
    structured = None if fmt["type"] == "text" else Structured(fmt, validator)
    return {**params, "response_format": fmt}, structured


def normalise(value: Any) -> tuple[dict[str, Any], Validator | None]:
    """``response_format=`` → (the neutral format, what validates a reply for it)."""
    if isinstance(value, dict):
        return _from_dict(value)
    if isinstance(value, str | bytes | int | float | list | tuple) or value is None:
        raise _bad(value)
    adapter = _TypeValidator.of(value)
    return _schema_format(adapter.name, adapter.schema, True), adapter


def _from_dict(value: dict[str, Any]) -> tuple[dict[str, Any], Validator | None]:
    kind = value.get("type")
    if kind == "json_schema":
        inner = value.get("json_schema")
        if isinstance(inner, dict):  # OpenAI chat completions' own form
            spec, strict = inner, inner.get("strict") is True
        else:  # the neutral form (OpenAI Responses' text.format)
            spec, strict = value, value.get("strict", True) is not False
        schema = spec.get("schema")
        validator: Validator
        if isinstance(schema, dict):
            name = spec.get("name") or _name_of(schema.get("title"))
            validator = _SchemaValidator(schema)
        elif schema is not None and not isinstance(schema, str | int | float | list):
            adapter = _TypeValidator.of(schema)
            name, schema, validator = (
                spec.get("name") or adapter.name,
                adapter.schema,
                adapter,
            )
        else:
            schema = None
        if schema is not None:
            fmt = _schema_format(str(name), schema, strict)
            if isinstance(spec.get("description"), str):
                fmt["description"] = spec["description"]
            return fmt, validator
        raise ConfigurationError(
            'response_format={"type": "json_schema", …} needs a "schema": a JSON '
            "schema (a dict) or a pydantic model class."
        )
    if kind == "json_object":
        schema = value.get("schema")
        if schema is None:
            return {"type": "json_object"}, None
        if isinstance(schema, dict):
            return {"type": "json_object", "schema": schema}, _SchemaValidator(schema)
        adapter = _TypeValidator.of(schema)
        return {"type": "json_object", "schema": adapter.schema}, adapter
    if kind == "text":
        return {"type": "text"}, None
    if _looks_like_schema(value):
        return _schema_format(
            _name_of(value.get("title")), value, True
        ), _SchemaValidator(value)
    raise _bad(value)


def _looks_like_schema(value: dict[str, Any]) -> bool:
    kind = value.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if kind is not None:
        return all(k in _SCHEMA_TYPES for k in kinds)
    return any(k in value for k in ("properties", "anyOf", "oneOf", "allOf", "$ref"))


def _schema_format(name: str, schema: dict[str, Any], strict: bool) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "name": _name_of(name),
        "schema": schema,
        "strict": strict,
    }


def _name_of(name: Any) -> str:
    """A name OpenAI takes: letters, digits, _ and -, at most 64."""
    text = _NAME_BAD.sub("_", name)[:64] if isinstance(name, str) else ""
    return text or "response"


def _bad(value: Any) -> ConfigurationError:
    return ConfigurationError(
        f"response_format={value!r:.80} is not a format nbstream knows. Give a pydantic "
        "model class (or another type pydantic's TypeAdapter takes: a dataclass, a "
        'TypedDict, list[...]), a JSON schema (a dict with "type": "object" …), or '
        '{"type": "json_object"} for any JSON.'
    )


class _TypeValidator:
    """A type, through pydantic's ``TypeAdapter``: its schema, and its validation."""

    def __init__(self, tp: Any) -> None:
        from pydantic import TypeAdapter  # only when a type is asked for

        self.adapter: Any = TypeAdapter(tp)
        self.name = _name_of(getattr(tp, "__name__", None))
        self.schema: dict[str, Any] = self.adapter.json_schema()

    @classmethod
    def of(cls, tp: Any) -> _TypeValidator:
        try:
            try:
                return _adapter(tp)
            except TypeError as exc:  # unhashable: not cached
                if "unhashable" not in str(exc):
                    raise
                return cls(tp)
        except ImportError:
            raise ConfigurationError(
                f"response_format={tp!r:.60} is a type: that needs pydantic "
                "(pip install pydantic), or give a JSON schema as a dict."
            ) from None
        except Exception as exc:  # pydantic's schema errors, a non-type …
            hint = " (pass the class, not an instance)" if _is_instance(tp) else ""
            raise ConfigurationError(
                f"response_format={tp!r:.60} has no JSON schema{hint}: "
                f"{type(exc).__name__}: {str(exc)[:200]}. Give a pydantic model class "
                "or a JSON schema (a dict)."
            ) from None

    def validate(self, text: str, data: Any) -> Any:
        from pydantic import ValidationError

        try:
            return self.adapter.validate_json(text)
        except ValidationError as exc:
            raise Invalid(_pydantic_errors(exc)) from None

    def dump(self, value: Any) -> Any:
        return self.adapter.dump_python(value, mode="json")


@functools.lru_cache(maxsize=64)
def _adapter(tp: Any) -> _TypeValidator:
    """One adapter per type (building one costs about a millisecond)."""
    return _TypeValidator(tp)


def _is_instance(tp: Any) -> bool:
    return hasattr(type(tp), "model_fields") and not isinstance(tp, type)


def _pydantic_errors(exc: Any) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:10]:
        where = "$" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ())
        )
        got = err.get("input")
        said = err.get("msg", "invalid")
        if err.get("type") != "missing":
            said += f" (got {_brief(got)})"
        parts.append(f"{where}: {said}")
    return "; ".join(parts)


def _brief(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class _SchemaValidator:
    """A JSON schema given as a dict: the reply's data, checked (schema_check.py)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema

    def validate(self, text: str, data: Any) -> Any:
        from .schema_check import check

        errors = check(self.schema, data)
        if errors:
            raise Invalid("; ".join(errors))
        return data

    def dump(self, value: Any) -> Any:
        return value


# -- a server that does not take it ---------------------------------------------------------


_FIELDS = {
    "openai": ("response_format", "json_schema"),
    "anthropic": ("output_config", "output_format"),
}


def rejection_hint(
    api: str, params: dict[str, Any], status: int, body: str
) -> str | None:
    """What to do when a server refused the structured-output request, or ``None`` if
    that is not what its answer (``status``, ``body``) is about."""
    fmt = params.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") == "text":
        return None
    # a 4xx, or a 500 that names the field (llama-cpp-python answers its request
    # validation error with 500): not worth retrying, and not the server's fault
    if not 400 <= status <= 500 or status in (401, 403, 404, 408, 409, 429):
        return None
    fields = _FIELDS.get(api, ())
    low = body.lower()
    if not any(f in low for f in fields):
        return None
    if api == "anthropic":
        return (
            "This server or model does not take Anthropic's structured outputs "
            "(output_config.format): use a model that supports them, or leave out "
            "response_format= and describe the JSON you want in the prompt "
            "(turn.partial and turn.parsed then need the reply to be JSON)."
        )
    sent = f'{{"type": "{fmt.get("type")}", …}}'
    if fmt.get("type") == "json_object":
        return (
            f"This server or model does not take response_format={sent}: leave it "
            "out and describe the JSON you want in the prompt (turn.partial and "
            "turn.parsed then need the reply to be JSON)."
        )
    return (
        f"This server or model does not take response_format={sent} (structured "
        "output with a JSON schema): use a model that supports it, or ask for JSON "
        'without a schema: response_format={"type": "json_object"} (some servers, '
        'e.g. llama-cpp-python, take the schema there: {"type": "json_object", '
        '"schema": ...}).'
    )
