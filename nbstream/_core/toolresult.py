"""What a tool call did: ``ToolResult``, one step of a tool loop (``turn.steps``), and the
text a function's return value becomes for the model. Plain data, no I/O.

>>> r = ToolResult("call_1", "lookup", '{"city": "Paris"}', {"city": "Paris"})
>>> r.finish("complete", result_text({"temp": 21}), now=1.5)
>>> r.message()
{'role': 'tool', 'tool_call_id': 'call_1', 'name': 'lookup', 'content': '{"temp": 21}', 'is_error': False}
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["MAX_RESULT_CHARS", "ToolResult", "ToolStatus", "cut", "result_text"]

MAX_RESULT_CHARS = 16_000  # a result longer than this is cut (≈ 4k tokens)

ToolStatus = Literal[
    "approval",  # waiting for someone to approve it
    "running",
    "complete",  # the function returned
    "error",  # it raised, or the call was unknown or its arguments invalid
    "denied",  # approval was refused
    "cancelled",  # stopped (an async function was cancelled; or stopped before it ran)
    "background",  # stopped while a sync function ran: it finishes on its own thread
    "skipped",  # not run: the step limit was reached
]
ENDED: frozenset[str] = frozenset(
    {"complete", "error", "denied", "cancelled", "background", "skipped"}
)


@dataclass(eq=False)
class ToolResult:
    """One tool call of a loop and what came of it.

    ``result`` is the text sent back to the model (a function's return value as is
    when it is a ``str``, else as JSON; cut at the tool's ``max_result_chars``);
    ``value`` is the Python value itself (kept in memory only, not saved). ``error``
    says what went wrong when ``is_error`` (the exception, an unknown tool, invalid
    arguments); ``traceback`` is the function's traceback when it raised.
    ``started_at`` is a Unix time; ``elapsed_s`` how long it ran.
    """

    call_id: str
    name: str
    arguments: str  # the JSON text the model sent
    input: Any = None  # it parsed (None when it is not valid JSON)
    status: ToolStatus = "running"
    result: str = ""
    is_error: bool = False
    error: str | None = None
    traceback: str | None = None
    started_at: float = field(default_factory=time.time)
    elapsed_s: float | None = None
    value: Any = field(default=None, repr=False)  # not saved

    @property
    def done(self) -> bool:
        return self.status in ENDED

    def finish(
        self,
        status: ToolStatus,
        result: str,
        *,
        now: float,
        error: str | None = None,
        value: Any = None,
        traceback: str | None = None,
    ) -> None:
        """Settle it: ``now`` is seconds since it started."""
        self.status = status
        self.result = result
        self.is_error = status != "complete"
        self.error = error if self.is_error else None
        self.value = value
        self.traceback = traceback
        self.elapsed_s = now

    def message(self) -> dict[str, Any]:
        """The neutral tool-result message (``nbstream._core.messages``)."""
        return {
            "role": "tool",
            "tool_call_id": self.call_id,
            "name": self.name,
            "content": self.result,
            "is_error": self.is_error,
        }

    def __repr__(self) -> str:
        short = self.result if len(self.result) <= 40 else self.result[:37] + "..."
        return f"<ToolResult {self.name} {self.status} result={short!r}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
            "input": self.input,
            "status": self.status,
            "result": self.result,
            "is_error": self.is_error,
            "error": self.error,
            "traceback": self.traceback,
            "started_at": self.started_at,
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolResult:
        return cls(**{k: v for k, v in d.items() if k in _FIELDS})

    def to_row(self) -> dict[str, Any]:
        """A small dict for a DataFrame cell: name, arguments, result, status, time."""
        return {
            "name": self.name,
            "arguments": self.arguments,
            "result": self.result,
            "status": self.status,
            "elapsed_s": self.elapsed_s,
        }


_FIELDS = frozenset(ToolResult.__dataclass_fields__) - {"value"}


def result_text(value: Any, limit: int | None = MAX_RESULT_CHARS) -> str:
    """What a return value says to the model: a ``str`` as it is, anything else as
    JSON (dataclasses, pydantic models, dates … by pydantic's rules; what has no JSON
    form by its ``repr``), cut at ``limit`` characters (``None``: whole)."""
    if isinstance(value, str):
        text = value
    else:
        from pydantic_core import to_jsonable_python

        try:
            text = json.dumps(
                to_jsonable_python(value, fallback=repr), ensure_ascii=False
            )
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    return text if limit is None else cut(text, limit)


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and a note saying how long it was."""
    if len(text) <= limit:
        return text
    return (
        text[:limit] + f"\n… [cut: the result has {len(text):,} characters; "
        f"the first {limit:,} are shown]"
    )
