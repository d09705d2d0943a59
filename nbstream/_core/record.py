"""The small records a turn is made of: what was asked (``Request``), when things
happened (``Metrics``), why it failed (``ErrorInfo``), and each try at an answer
(``Attempt``). Plain data.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from .events import Strategy, Usage
from .recovery import takeover

__all__ = [
    "Api",
    "Attempt",
    "ErrorInfo",
    "Metrics",
    "Request",
    "Status",
    "Strategy",
    "sum_usage",
    "usage_from_dict",
    "usage_to_dict",
]

Status = Literal["streaming", "complete", "cancelled", "error", "incomplete"]
Api = Literal["openai", "anthropic"]
# Strategy (events.py): how an attempt joined the reply: the first one; another model
# before any output ("fallback"); after output: from scratch ("restart"), continuing
# the partial reply as a trailing assistant message ("prefill"), or with a user message
# asking to continue ("user_turn").


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
    ``tools`` are the tools offered, neutrally (``{"name", "description",
    "parameters"}``). In a tool loop, the final turn's request is the question; an
    earlier step's holds what was new in that step (the tool results before it).
    """

    messages: list[dict[str, Any]]
    model: str
    api: Api
    base_url: str
    params: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if not d["tools"]:
            del d["tools"]  # the saved form of a turn without tools is unchanged
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Request:
        return cls(**d)


def usage_to_dict(u: Usage | None) -> dict[str, Any] | None:
    if u is None:
        return None
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "cached_input_tokens": u.cached_input_tokens,
        "cache_write_tokens": u.cache_write_tokens,
        "estimated": u.estimated,
        "raw": u.raw,
    }


def usage_from_dict(d: dict[str, Any] | None) -> Usage | None:
    return Usage(**d) if d is not None else None


def sum_usage(parts: Iterable[Usage | None]) -> Usage | None:
    """The usage of several requests (attempts, tool-loop steps) added up, field by
    field; a field none of them reported stays ``None``. Estimated if any part is."""
    us = [u for u in parts if u is not None]
    if not us:
        return None

    def add(name: str) -> int | None:
        values = [v for u in us if (v := getattr(u, name)) is not None]
        return sum(values) if values else None

    inp, out = add("input_tokens"), add("output_tokens")
    total = add("total_tokens")
    if inp is not None and out is not None:
        total = inp + out
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=total,
        reasoning_tokens=add("reasoning_tokens"),
        cached_input_tokens=add("cached_input_tokens"),
        cache_write_tokens=add("cache_write_tokens"),
        estimated=any(u.estimated for u in us),
    )


@dataclass(eq=False)
class Attempt:
    """One try at the reply: which model and server, how it ended, and what it added.

    ``text`` is everything this attempt produced; ``span`` is the part of the final
    ``turn.text`` that came from it (``None`` when it added nothing to the final text,
    e.g. a partial reply superseded by a restart).
    """

    model: str
    api: Api
    base_url: str
    strategy: Strategy = "first"
    status: Status = "streaming"
    error: ErrorInfo | None = None
    text: str = ""
    span: tuple[int, int] | None = None
    usage: Usage | None = None
    metrics: Metrics = field(default_factory=Metrics)
    note: str | None = None  # e.g. why a prefill was asked again as a user turn
    reason: str | None = None  # why the attempt before this one ended

    def takeover(self) -> str | None:
        """How this attempt took over, in words (``None`` for the first one):
        ``the connection dropped at 1,204 characters; continued by llama3``."""
        return takeover(self.strategy, self.reason, self.model)

    def __repr__(self) -> str:
        short = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return (
            f"<Attempt {self.strategy} {self.status} model={self.model!r} "
            f"text={short!r}>"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "api": self.api,
            "base_url": self.base_url,
            "strategy": self.strategy,
            "status": self.status,
            "error": self.error.to_dict() if self.error else None,
            "text": self.text,
            "span": list(self.span) if self.span is not None else None,
            "usage": usage_to_dict(self.usage),
            "metrics": self.metrics.to_dict(),
            "note": self.note,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        span = d.get("span")
        return cls(
            model=d["model"],
            api=d["api"],
            base_url=d["base_url"],
            strategy=d["strategy"],
            status=d["status"],
            error=ErrorInfo.from_dict(d["error"]) if d.get("error") else None,
            text=d["text"],
            span=(span[0], span[1]) if span is not None else None,
            usage=usage_from_dict(d.get("usage")),
            metrics=Metrics.from_dict(d["metrics"]),
            note=d.get("note"),
            reason=d.get("reason"),
        )
