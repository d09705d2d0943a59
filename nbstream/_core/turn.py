"""One request and its reply: ``Turn``, with its ``Request``, ``Metrics`` and
``ErrorInfo``. Plain data, current while the reply streams.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal

from .events import Usage
from .reply import Choice, ToolCall

__all__ = ["Api", "ErrorInfo", "Metrics", "Request", "Status", "Turn"]

Status = Literal["streaming", "complete", "cancelled", "error", "incomplete"]
Api = Literal["openai", "anthropic"]


@dataclass(eq=False)
class Metrics:
    """Timing of one turn, in seconds from the moment the request was sent.

    ``arrivals`` holds the arrival time of every content delta (float32, 4 bytes each),
    compact enough to keep for a timeline plot of a 100k-token reply.
    """

    ttfb_s: float | None = None
    ttft_s: float | None = None
    elapsed_s: float | None = None
    chunks: int = 0
    deltas: int = 0
    attempts: int = 0
    output_tokens: int | None = None
    output_tokens_estimated: bool = True
    input_estimate: int | None = None  # tokens, from the size of what was sent
    arrivals: array[float] = field(default_factory=lambda: array("f"))

    @property
    def tokens_per_s(self) -> float | None:
        """Output tokens per second of generation (after the first token). While the
        reply streams: the deltas so far, up to the last one that arrived."""
        if self.ttft_s is None:
            return None
        if self.elapsed_s is None:  # still streaming
            if self.deltas < 2 or not self.arrivals:
                return None
            gen = self.arrivals[-1] - self.ttft_s
            return (self.deltas - 1) / gen if gen > 0 else None
        if self.output_tokens is None:
            return None
        gen = self.elapsed_s - self.ttft_s
        if gen <= 0 or self.output_tokens < 2:
            return None
        return (self.output_tokens - 1) / gen

    def to_dict(self) -> dict[str, Any]:
        return {
            "ttfb_s": self.ttfb_s,
            "ttft_s": self.ttft_s,
            "elapsed_s": self.elapsed_s,
            "chunks": self.chunks,
            "deltas": self.deltas,
            "attempts": self.attempts,
            "output_tokens": self.output_tokens,
            "output_tokens_estimated": self.output_tokens_estimated,
            "input_estimate": self.input_estimate,
            "arrivals": self.arrivals.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        d = dict(d)
        arrivals = array("f", d.pop("arrivals"))
        return cls(**d, arrivals=arrivals)


@dataclass(eq=False)
class ErrorInfo:
    """Why a turn failed: the error's class name, message, and HTTP facts if any."""

    kind: str
    message: str
    status_code: int | None = None
    request_id: str | None = None
    retry_after: float | None = None
    code: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ErrorInfo:
        return cls(**d)


@dataclass(eq=False)
class Request:
    """What was asked: the new messages of this turn and the parameters (never a key).

    In a ``Conversation`` the history sent with it is the transcript's earlier turns.
    """

    messages: list[dict[str, Any]]
    model: str
    api: Api
    base_url: str
    params: dict[str, Any] = field(default_factory=dict)
    system: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(**d)


def _usage_to_dict(u: Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "estimated": u.estimated,
        "raw": u.raw,
    }


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
        # Every server-sent event as received, only with Client(keep_raw_events=True):
        # for debugging a provider's stream. Not saved with the transcript.
        self.raw_events: list[Any] | None = None

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

    @property
    def provider(self) -> str:
        return self.request.api

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
        return {
            "id": self.id,
            "created_at": self.created_at,
            "request": self.request.to_dict(),
            "status": self.status,
            "choices": [c.to_dict() for c in self.choices],
            "usage": _usage_to_dict(self.usage),
            "error": self.error.to_dict() if self.error else None,
            "metrics": self.metrics.to_dict(),
            "model": self.model,
            "response_id": self.response_id,
            "extra": self.extra,
            "warnings": list(self.warnings),
            "done": self.done,
            "streamed": self.streamed,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        turn = cls(Request.from_dict(d["request"]))
        turn.id = d["id"]
        turn.created_at = d["created_at"]
        turn.status = d["status"]
        turn.choices = [Choice.from_dict(c, turn._lock) for c in d["choices"]]
        turn.usage = Usage(**d["usage"]) if d["usage"] is not None else None
        turn.error = ErrorInfo.from_dict(d["error"]) if d["error"] else None
        turn.metrics = Metrics.from_dict(d["metrics"])
        turn.model = d["model"]
        turn.response_id = d["response_id"]
        turn.extra = d["extra"]
        turn.warnings = d["warnings"]
        turn.done = d["done"]
        turn.streamed = d.get("streamed", True)
        return turn

    def to_row(self) -> dict[str, Any]:
        """A flat row for a DataFrame."""
        u, m = self.usage, self.metrics
        prompt = (
            self.request.messages[-1].get("content") if self.request.messages else None
        )
        return {
            "turn_id": self.id,
            "created_at": self.created_at,
            "status": self.status,
            "api": self.request.api,
            "model": self.model or self.request.model,
            "prompt": prompt if isinstance(prompt, str) else json.dumps(prompt),
            "text": self.text,
            "reasoning": self.reasoning,
            "tool_calls": len(self.tool_calls),
            "finish_reason": self.finish_reason,
            "input_tokens": u.input_tokens if u else None,
            "output_tokens": u.output_tokens if u else None,
            "total_tokens": u.total_tokens if u else None,
            "usage_estimated": u.estimated if u else None,
            "ttfb_s": m.ttfb_s,
            "ttft_s": m.ttft_s,
            "elapsed_s": m.elapsed_s,
            "tokens_per_s": m.tokens_per_s,
            "chunks": m.chunks,
            "attempts": m.attempts,
            "error": self.error.message if self.error else None,
        }
