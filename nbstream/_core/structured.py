"""Structured output: a reply that is a JSON value of a given shape, read while it
streams.

``client.chat(…, response_format=X)`` takes as ``X`` a type pydantic's ``TypeAdapter``
takes (a ``BaseModel`` subclass, a dataclass, a ``TypedDict``, ``list[…]``), a JSON
schema (a dict), or a response format in wire form (``{"type": "json_schema", …}``,
``{"type": "json_object"}``). ``response_format.normalise`` turns it into the
*neutral format*, plain JSON data kept in ``turn.request.params["response_format"]``
(so it saves with the transcript, and each provider turns it into its own wire form)::

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

>>> partial_json('{"city": "San Fr'), partial_json('{"t": 6')
({'city': 'San Fr'}, {})
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Protocol

from .providers._json import loads

if TYPE_CHECKING:
    from .turn import Turn

__all__ = ["RATIO", "Invalid", "Structured", "Validator", "partial_json"]

RATIO = 8.0  # a reader polling per delta waits this many parse costs between parses
_MAX_COST_PER_CHAR = 1e-7  # seconds: a partial parse costs ~15 ns a character here
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
    import jiter  # (imported once, on the first structured reply)

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
