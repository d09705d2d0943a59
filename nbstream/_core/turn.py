"""One request and its reply: ``Turn``, with its ``Request``, ``Metrics`` and
``ErrorInfo``. Plain data, current while the reply streams.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from .events import Usage
from .messages import summary
from .record import (
    Api,
    Attempt,
    ErrorInfo,
    Metrics,
    Request,
    Status,
    sum_usage,
    usage_from_dict,
    usage_to_dict,
)
from .reply import Choice, ToolCall
from .structured import Structured
from .toolresult import ToolResult

if TYPE_CHECKING:
    from .pricing import Cost

__all__ = ["Api", "Attempt", "ErrorInfo", "Metrics", "Request", "Status", "Turn"]

# What a turn's reply is made of: moved to a step of its own when a tool loop goes on.
_REPLY_FIELDS = (
    "status",
    "choices",
    "usage",
    "error",
    "metrics",
    "model",
    "response_id",
    "extra",
    "warnings",
    "done",
    "streamed",
    "_attempts",
    "raw_events",
)


class Turn:
    """One request and its reply, current while it streams.

    >>> turn = Turn(Request([{"role": "user", "content": "Hi"}], "m", "openai", "u"))
    >>> turn.status, turn.text
    ('streaming', '')
    """

    def __init__(self, request: Request) -> None:
        # Held by the stream while it applies a batch of events, and by every read
        # of the text: a turn read from any thread mid-stream is never half-written.
        self._lock = threading.RLock()
        self.id = uuid.uuid4().hex
        self.created_at = time.time()
        self.request = request
        self.status: Status = "streaming"
        self.choices: list[Choice] = [Choice(0, self._lock)]
        self.usage: Usage | None = None
        self.error: ErrorInfo | None = None
        self.metrics = Metrics()
        self.model: str | None = None
        self.response_id: str | None = None
        self.extra: dict[str, Any] = {}
        self.warnings: list[str] = []
        self.done = False  # the stream said it is over ([DONE] / message_stop)
        # False when the server ignored ``stream: true`` and sent one whole answer
        self.streamed = True
        # Every try at the reply, in order, when it took more than one (fallback,
        # recovery); see ``attempts``.
        self._attempts: list[Attempt] = []
        # With response_format=: the value read from the reply (see structured.py)
        self.structured: Structured | None = None
        # Every server-sent event as received, only with Client(keep_raw_events=True):
        # for debugging a provider's stream. Not saved with the transcript.
        self.raw_events: list[Any] | None = None
        # A tool loop's earlier steps (model turns and tool results), in order; this
        # turn is the last step. See ``steps``.
        self._steps: list[Turn | ToolResult] = []

    def choice(self, index: int) -> Choice:
        choices = self.choices
        if index < len(choices):
            return choices[index]
        while len(choices) <= index:
            choices.append(Choice(len(choices), self._lock))
        return choices[index]

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()  # a lock does not pickle; the record does

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(Turn.from_dict(state).__dict__)

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def reasoning(self) -> str:
        return self.choices[0].reasoning

    @property
    def refusal(self) -> str | None:
        return self.choices[0].refusal

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.choices[0].tool_calls

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason

    # -- structured output (response_format=) ----------------------------------------
    @property
    def partial(self) -> Any:
        """With ``response_format=``: the JSON value so far (dicts, lists …), growing
        as the reply streams; the whole value once it ended. ``None`` otherwise."""
        s = self.structured
        if s is None:
            return None
        with self._lock:
            return s.partial(self)

    @property
    def parsed(self) -> Any:
        """With ``response_format=``, once the reply ended: the validated value (an
        instance of the pydantic type, or JSON data checked against the schema), or
        ``None`` when it is not valid (``parse_error`` says why; the text is kept).
        Loaded from a saved transcript, it is the value's JSON data."""
        s = self.structured
        if s is None:
            return None
        with self._lock:
            return s.parsed(self)

    @property
    def parse_error(self) -> str | None:
        """Why ``parsed`` is ``None`` (not JSON, cut off, refused, not valid)."""
        s = self.structured
        if s is None:
            return None
        with self._lock:
            return s.parse_error(self)

    @property
    def provider(self) -> str:
        return self.request.api

    @property
    def attempts(self) -> list[Attempt]:
        """Every try at this reply, in order: the model, server, how it ended, what it
        added. A reply that took one request has one attempt (this turn itself)."""
        if self._attempts:
            return list(self._attempts)
        with self._lock:
            text = self.text
            return [
                Attempt(
                    model=self.model or self.request.model,
                    api=self.request.api,
                    base_url=self.request.base_url,
                    status=self.status,
                    error=self.error,
                    text=text,
                    span=(0, len(text)) if text else None,
                    usage=self.usage,
                    metrics=self.metrics,
                )
            ]

    @property
    def steps(self) -> list[Turn | ToolResult]:
        """Every model step and tool result of a tool loop, in order, this turn (the
        final model step) last. A turn without tools is its only step.

        Each earlier model step is a ``Turn`` of its own (its text, tool calls, usage,
        timings); each tool call's outcome a ``ToolResult``."""
        with self._lock:
            return [*self._steps, self]

    @property
    def tool_results(self) -> list[ToolResult]:
        """The ``ToolResult`` of every tool call of the loop, in order."""
        with self._lock:
            return [s for s in self._steps if isinstance(s, ToolResult)]

    @property
    def total_usage(self) -> Usage | None:
        """The usage of every model step of the loop, added up field by field
        (``usage`` is the final step's)."""
        steps = self.steps
        if len(steps) == 1:
            return self.usage
        return sum_usage(t.usage for t in steps if isinstance(t, Turn))

    def _next_step(self, request: Request, started_at: float) -> Turn:
        """The reply so far becomes a step of its own (asked with ``request`` at
        ``started_at``), kept in ``steps``; this turn starts again, empty, for the next
        step. The caller holds the lock."""
        step = Turn(request)
        step.created_at = started_at
        for name in _REPLY_FIELDS:
            setattr(step, name, getattr(self, name))
        for c in step.choices:
            c._lock = step._lock
        fresh = Turn(self.request)
        for name in _REPLY_FIELDS:
            setattr(self, name, getattr(fresh, name))
        for c in self.choices:
            c._lock = self._lock
        self._steps.append(step)
        return step

    @property
    def cost(self) -> float | None:
        """What the reply cost in US dollars (every attempt, every step of a tool
        loop), from its usage and the model's prices in the genai-prices dataset;
        ``None`` while it streams, or when the model or the usage is unknown.
        ``cost_details`` says how it adds up."""
        c = self.cost_details
        return c.total_usd if c is not None else None

    @property
    def cost_details(self) -> Cost | None:
        """The cost as input, output and total dollars, whether it rests on estimated
        token counts, and which prices were used (``nbstream.Cost``)."""
        from .pricing import turn_cost

        return turn_cost(self)

    @property
    def recovered(self) -> bool:
        """True when the reply needed another attempt after output had started."""
        return any(
            a.strategy in ("restart", "prefill", "user_turn") for a in self._attempts
        )

    def __repr__(self) -> str:
        text = self.text
        short = text if len(text) <= 60 else text[:57] + "..."
        return (
            f"<Turn {self.status} model={self.model or self.request.model!r} "
            f"finish={self.finish_reason!r} text={short!r}>"
        )

    # -- history --------------------------------------------------------------
    def reply_message(self, api: Api) -> dict[str, Any] | None:
        """The assistant message of choice 0, in ``api``'s format (None if empty)."""
        from .providers import provider_for

        return provider_for(api).reply_message(self)

    # -- serialisation --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return self._to_dict()

    def _to_dict(self) -> dict[str, Any]:
        d = self._reply_dict()
        if self._steps:  # only a tool loop's turn has them: others are saved as before
            d["steps"] = [
                {"kind": "tool", **s.to_dict()}
                if isinstance(s, ToolResult)
                else {"kind": "model", **s.to_dict()}
                for s in self._steps
            ]
        if self.structured is not None:
            d["structured"] = self.structured.to_dict(self)
        return d

    def _reply_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "request": self.request.to_dict(),
            "status": self.status,
            "choices": [c.to_dict() for c in self.choices],
            "usage": usage_to_dict(self.usage),
            "error": self.error.to_dict() if self.error else None,
            "metrics": self.metrics.to_dict(),
            "model": self.model,
            "response_id": self.response_id,
            "extra": self.extra,
            "warnings": list(self.warnings),
            "done": self.done,
            "streamed": self.streamed,
            "attempts": [a.to_dict() for a in self._attempts],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        turn = cls(Request.from_dict(d["request"]))
        turn.id = d["id"]
        turn.created_at = d["created_at"]
        turn.status = d["status"]
        turn.choices = [Choice.from_dict(c, turn._lock) for c in d["choices"]]
        turn.usage = usage_from_dict(d["usage"])
        turn.error = ErrorInfo.from_dict(d["error"]) if d["error"] else None
        turn.metrics = Metrics.from_dict(d["metrics"])
        turn.model = d["model"]
        turn.response_id = d["response_id"]
        turn.extra = d["extra"]
        turn.warnings = d["warnings"]
        turn.done = d["done"]
        turn.streamed = d.get("streamed", True)
        turn._attempts = [Attempt.from_dict(a) for a in d.get("attempts", [])]
        turn._steps = [
            ToolResult.from_dict(s) if s.get("kind") == "tool" else Turn.from_dict(s)
            for s in d.get("steps", [])
        ]
        if d.get("structured") is not None:
            fmt = turn.request.params.get("response_format")
            turn.structured = Structured.from_dict(fmt, d["structured"])
        return turn

    def to_row(self) -> dict[str, Any]:
        """A flat row for a DataFrame."""
        u, m = self.usage, self.metrics
        prompt = (
            self.request.messages[-1].get("content") if self.request.messages else None
        )
        row = {
            "turn_id": self.id,
            "created_at": self.created_at,
            "status": self.status,
            "api": self.request.api,
            "model": self.model or self.request.model,
            "prompt": summary(prompt),  # an image as its label, never its data
            "text": self.text,
            "reasoning": self.reasoning,
            "tool_calls": len(self.tool_calls),
            "finish_reason": self.finish_reason,
            "input_tokens": u.input_tokens if u else None,
            "output_tokens": u.output_tokens if u else None,
            "total_tokens": u.total_tokens if u else None,
            "usage_estimated": u.estimated if u else None,
            "cached_input_tokens": u.cached_input_tokens if u else None,
            "cache_write_tokens": u.cache_write_tokens if u else None,
            "reasoning_tokens": u.reasoning_tokens if u else None,
            **_cost_columns(self),
            "ttfb_s": m.ttfb_s,
            "ttft_s": m.ttft_s,
            "elapsed_s": m.elapsed_s,
            "tokens_per_s": m.tokens_per_s,
            "chunks": m.chunks,
            "attempts": m.attempts,
            "error": self.error.message if self.error else None,
        }
        if self.structured is not None:  # the value as data: pd.json_normalize()
            with self._lock:
                row["parsed"] = self.structured.parsed_data(self)
                row["parse_error"] = self.structured.parse_error(self)
        return row


def _cost_columns(turn: Turn) -> dict[str, Any]:
    """This model step's cost (its attempts; not the other steps of a tool loop, which
    have rows of their own), in US dollars."""
    from .pricing import step_cost

    c = step_cost(turn)
    return {
        "cost_input_usd": c.input_usd if c else None,
        "cost_output_usd": c.output_usd if c else None,
        "cost_usd": c.total_usd if c else None,
        "cost_estimated": c.estimated if c else None,
    }
