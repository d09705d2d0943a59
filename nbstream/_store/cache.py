"""The reply cache: ``Client(cache=PATH)``, ``%chat cache on``. A request whose key
(``keys.request_key``: model, API, base URL, messages with the history, system,
parameters) is ``done`` in the store is answered from it at once, through the same
pipeline as a live reply, and marked ``turn.extra["cached"] = True`` (the readout says
"cached"); a complete live reply is added to the store. A batch's store is a cache too.

Imports only the core and ``sqlite3`` (and the store), so the client can use it.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .._core.events import (
    Done,
    Event,
    Finish,
    Meta,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    Usage,
    UsageEvent,
)
from .._core.pipeline import Pipeline
from .._core.transcript import Turn
from .keys import keyed
from .store import Result, Store

if TYPE_CHECKING:
    from .._http.request import RequestSpec

__all__ = ["StoreCache", "events_of"]


def events_of(d: dict[str, Any]) -> list[Event]:
    """The events that rebuild a stored turn (``Turn.to_dict()``)."""
    out: list[Event] = []
    if d.get("model"):
        out.append(Meta("model", d["model"]))
    if d.get("response_id"):
        out.append(Meta("response_id", d["response_id"]))
    for c in d.get("choices") or []:
        ci = c["index"]
        if c.get("reasoning"):
            out.append(ReasoningDelta(c["reasoning"], ci))
        if c.get("text"):
            out.append(TextDelta(c["text"], ci))
        if c.get("refusal"):
            out.append(RefusalDelta(c["refusal"], ci))
        for call in c.get("tool_calls") or []:
            out.append(
                ToolCallDelta(
                    call["index"], call["id"], call["name"], call["arguments"], ci
                )
            )
            out.append(ToolCallEnd(call["index"], ci))
        if c.get("finish_reason"):
            out.append(Finish(c["finish_reason"], ci))
    usage = d.get("usage")
    if usage:
        out.append(UsageEvent(Usage(**usage)))
    out.append(Done())
    return out


def key_of(spec: RequestSpec) -> tuple[str, str]:
    """``(key, request JSON)`` of what ``spec`` sends (history included)."""
    s = spec.settings
    return keyed(s.api, s.base_url, s.model, spec.messages, spec.system, spec.params)


class StoreCache:
    """A ``ReplyCache`` (``nbstream._http.request``) over a store file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.store = Store(path)
        self.path = self.store.path
        self.hits = 0

    def __repr__(self) -> str:
        return f"<StoreCache {self.path!r}>"

    def answer(self, spec: RequestSpec, turn: Turn) -> list[Event] | None:
        try:
            key, _ = key_of(spec)
        except (TypeError, ValueError):  # parameters JSON cannot hold: not cached
            return None
        stored = self.store.lookup_turn(key)
        if stored is None:
            return None
        pipe = Pipeline(
            spec.provider,
            turn,
            prompt_chars=spec.prompt_chars(),
            scrubber=spec.scrubber,
        )
        events = pipe.apply(events_of(stored), 0.0)
        events += pipe.close(0.0)
        turn.extra["cached"] = True
        self.hits += 1
        return events

    def keep(self, spec: RequestSpec, turn: Turn) -> None:
        if turn.status != "complete" or turn.extra.get("cached"):
            return
        try:
            key, request = key_of(spec)
        except (TypeError, ValueError):
            return
        now = time.time()
        self.store.save(
            Result(
                key,
                spec.scrubber.scrub(request),
                "done",
                True,
                turn,
                turn.metrics.attempts,
                started_at=turn.created_at,
                finished_at=now,
            )
        )
