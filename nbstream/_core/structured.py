"""Structured output: a reply that is a JSON value of a given shape, read while it
streams.

``client.chat(…, response_format=X)`` takes as ``X`` a type pydantic's ``TypeAdapter``
takes (a ``BaseModel`` subclass, a dataclass, a ``TypedDict``, ``list[…]``), a JSON
schema (a dict), or a response format in wire form (``{"type": "json_schema", …}``,
``{"type": "json_object"}``). ``normalise`` turns it into the *neutral format*, plain
JSON data kept in ``turn.request.params["response_format"]`` (so it saves with the
transcript, and each provider turns it into its own wire form)::

    {"type": "json_schema", "name": "Location", "schema": {…}, "strict": true}
    {"type": "json_object"}                       # JSON mode (optionally with "schema")

and the turn gets a ``Structured``, which holds what is read from the reply:

- ``partial``: the value so far, parsed with jiter's partial mode *when it is read*
  and the text changed since the last parse (nothing is done per delta). A parse costs
  time in proportion to the text, so a reader that asks after every delta is served the
  last value until ``RATIO`` times the last parse's cost has passed: parsing takes at
  most ~1/(1 + RATIO) of such a reader's time, whatever the length (linear overall),
  and a reader at a human pace (a view at 20 Hz) always gets the current value.
  Each partial extends the one before: strings grow, keys and items are added; a key
  appears when its value has started, and a number only once it is complete (``6``
  is not shown on the way to ``61``).
- ``parsed`` / ``parse_error``: decided once, when the turn has ended and one of them
  is read (validation is not paid for unless it is asked for): the value validated by
  the pydantic type (an instance) or checked against the schema (JSON data), or
  ``None`` and why (not JSON, cut off, refused, or what did not validate). The turn's
  status is not changed: the model did answer; its text stays in ``turn.text``.

>>> fmt, _ = normalise({"type": "object", "properties": {"n": {"type": "integer"}}})
>>> fmt["type"], fmt["name"], fmt["strict"]
('json_schema', 'response', True)
"""

from __future__ import annotations

import functools
import re
import time
from typing import TYPE_CHECKING, Any, Protocol

import jiter

from .errors import ConfigurationError
from .providers._json import loads
from .schema_check import check

if TYPE_CHECKING:
    from .turn import Turn

__all__ = [
    "RATIO",
    "Structured",
    "normalise",
    "partial_json",
    "rejection_hint",
    "with_response_format",
]

RATIO = 8.0  # a reader polling per delta waits this many parse costs between parses
_MAX_COST_PER_CHAR = 1e-7  # seconds: a partial parse costs ~15 ns a character here
_SCHEMA_TYPES = frozenset(
    {"object", "array", "string", "number", "integer", "boolean", "null"}
)
_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")
# the rest of a JSON string, from after its opening quote to its closing one
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOTHING: Any = object()
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_BEFORE_VALUE = frozenset(",:[ \t\r\n")


class Invalid(Exception):
    """The reply's JSON does not have the asked shape; the message says where."""


class Validator(Protocol):
    def validate(self, text: str, data: Any) -> Any:
        """The validated value of the reply (``data`` is ``text`` parsed)."""
        ...

    def dump(self, value: Any) -> Any:
        """A validated value as JSON data."""
        ...


# -- what response_format= can be ------------------------------------------------------


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
        if isinstance(schema, dict):
            name = spec.get("name") or _name_of(schema.get("title"))
            return _schema_format(str(name), schema, strict), _SchemaValidator(schema)
        if schema is not None and not isinstance(schema, str | int | float | list):
            adapter = _TypeValidator.of(schema)
            name = spec.get("name") or adapter.name
            return _schema_format(str(name), adapter.schema, strict), adapter
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
        errors = check(self.schema, data)
        if errors:
            raise Invalid("; ".join(errors))
        return data

    def dump(self, value: Any) -> Any:
        return value


# -- the value so far ---------------------------------------------------------------------


class _StringScan:
    """Whether the end of a growing text is inside a JSON string: scanned once, from
    where the last scan stopped, a whole string per step (the regex engine skips its
    characters); an unfinished string is looked at again next time."""

    __slots__ = ("inside", "pos")

    def __init__(self) -> None:
        self.pos = 0  # where to go on: after a string's opening quote when inside
        self.inside = False

    def advance(self, text: str) -> bool:
        pos, inside = self.pos, self.inside
        rest, find = _STRING_REST.match, text.find
        while True:
            if inside:
                m = rest(text, pos)
                if m is None:
                    break  # the string goes on past the end
                pos, inside = m.end(), False
            quote = find('"', pos)
            if quote < 0:
                pos = len(text)
                break
            pos, inside = quote + 1, True
        self.pos, self.inside = pos, inside
        return inside


def partial_json(text: str, scan: _StringScan | None = None) -> Any:
    """The JSON value so far of ``text`` (``_NOTHING`` when there is none yet): jiter's
    partial mode, with incomplete strings kept, and a number at the very end of the
    text left out (it may still grow: ``6`` → ``61``)."""
    if text[-1:] in _NUMBER_CHARS:
        start = len(text)
        while start and text[start - 1] in _NUMBER_CHARS:
            start -= 1
        if not start or text[start - 1] in _BEFORE_VALUE:
            if scan is None:
                scan = _StringScan()
            if not scan.advance(text):  # a number, not the end of a string
                text = text[:start]
    try:
        return jiter.from_json(text.encode(), partial_mode="trailing-strings")
    except ValueError:
        return _NOTHING


# -- on the turn --------------------------------------------------------------------------


class Structured:
    """What a structured reply holds: see the module docstring. Read through the turn
    (``turn.partial``, ``turn.parsed``, ``turn.parse_error``), under its lock."""

    __slots__ = (
        "_error",
        "_frozen",
        "_next_at",
        "_parsed",
        "_scan",
        "_settled",
        "_source",
        "_value",
        "_version",
        "format",
        "validator",
    )

    def __init__(self, fmt: dict[str, Any], validator: Validator | None) -> None:
        self.format = fmt
        self.validator = validator
        self._value: Any = _NOTHING
        self._scan = _StringScan()
        self._version = -1
        self._next_at = 0.0
        self._settled: str | None = None  # the text parsed and validated last
        self._parsed: Any = None
        self._error: str | None = None
        self._frozen = False  # loaded from a transcript: kept as it was saved
        self._source: Any = None  # the choice parsed: a restart replaces it

    @property
    def name(self) -> str:
        return str(self.format.get("name") or "the schema")

    def partial(self, turn: Turn) -> Any:
        """The value so far (``None`` before there is one)."""
        if turn.status != "streaming":
            self._settle(turn)
        else:
            version = turn.metrics.deltas
            if version != self._version:
                start = time.perf_counter()
                if start >= self._next_at:
                    if turn.choices[0] is not self._source:  # new, or a restart
                        self._source = turn.choices[0]
                        self._scan = _StringScan()
                        self._value = _NOTHING
                    text = turn.text
                    self._parse(text)
                    self._version = version
                    end = time.perf_counter()
                    # at most what a parse of this length costs even on a slow machine:
                    # a thread preempted mid-parse must not hold the next one back
                    cost = min(end - start, 2e-6 + len(text) * _MAX_COST_PER_CHAR)
                    self._next_at = end + RATIO * cost
        return None if self._value is _NOTHING else self._value

    def _parse(self, text: str) -> None:
        value = partial_json(text, self._scan)
        if value is not _NOTHING or not text.strip():
            self._value = value

    def parsed(self, turn: Turn) -> Any:
        self._settle(turn)
        return self._parsed

    def parse_error(self, turn: Turn) -> str | None:
        self._settle(turn)
        return self._error

    def parsed_data(self, turn: Turn) -> Any:
        """``parsed`` as JSON data (a pydantic instance dumped), or ``None``."""
        parsed = self.parsed(turn)
        if parsed is None or self.validator is None or self._frozen:
            return parsed
        try:
            return self.validator.dump(parsed)
        except Exception:  # a type that does not dump: its JSON as it came
            return self._value

    def data(self, turn: Turn) -> Any:
        """What to show: the validated value as JSON data, else the value so far."""
        parsed = self.parsed_data(turn)
        if parsed is not None:
            return parsed
        return None if self._value is _NOTHING else self._value

    def _settle(self, turn: Turn) -> None:
        """Once the turn has ended: the whole value, validated (again only if the
        text changed, e.g. when the key was scrubbed out of it at the very end)."""
        if self._frozen or turn.status == "streaming":
            return
        text = turn.text
        if text is self._settled:
            return
        self._settled = text
        self._parsed, self._error = None, None
        try:
            data = loads(text) if text.strip() else _NOTHING
        except (ValueError, RecursionError):
            data = _NOTHING
        if data is _NOTHING:
            self._scan = _StringScan()
            self._value = _NOTHING
            self._parse(text)
            self._error = _why_not_json(turn, text)
            return
        self._value = data
        if self.validator is None:
            self._parsed = data
            return
        try:
            self._parsed = self.validator.validate(text, data)
        except Invalid as exc:
            self._error = f"The JSON does not match {self.name}: {exc}"
        except Exception as exc:  # a validator's own failure is reported, not raised
            self._error = f"Validating against {self.name} failed: {exc!r:.300}"

    # -- the record --------------------------------------------------------------------
    def to_dict(self, turn: Turn) -> dict[str, Any]:
        partial = self.partial(turn)
        parsed = self.parsed_data(turn)
        return {"partial": partial, "parsed": parsed, "parse_error": self._error}

    @classmethod
    def from_dict(cls, fmt: Any, d: dict[str, Any]) -> Structured:
        """As saved: ``parsed`` is its JSON data now (the type is not saved)."""
        s = cls(fmt if isinstance(fmt, dict) else {}, None)
        s._value = _NOTHING if d.get("partial") is None else d["partial"]
        s._parsed = d.get("parsed")
        s._error = d.get("parse_error")
        s._frozen = True
        return s


def _why_not_json(turn: Turn, text: str) -> str:
    refusal = turn.refusal
    if refusal and not text.strip():
        return f"The model refused: {refusal}"
    kept = " What arrived is in turn.partial, the text in turn.text."
    if not text.strip():
        return f"The reply has no text to parse (status {turn.status!r})."
    reason = turn.finish_reason
    if reason in ("length", "max_tokens"):
        return (
            f"The JSON was cut off by the token limit (finish reason {reason!r}): "
            f"ask again with a higher max_tokens.{kept}"
        )
    if turn.status != "complete":
        return f"The reply ended ({turn.status}) before its JSON was complete.{kept}"
    return f"The reply is not valid JSON.{kept}"


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
