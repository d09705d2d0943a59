"""A reply across attempts: the primary model, then each fallback in turn, joined into
one turn.

Before the first token, a failure that retries did not cure moves to the next entry
(``fallback``). Once output has started, ``recover=`` decides: ``restart`` asks the next
entry from scratch (the partial reply is superseded, kept in ``turn.attempts``),
``prefill`` sends the partial reply as a trailing assistant message for the next entry
to continue (a server that refuses one is asked again with ``user_turn``), and
``user_turn`` adds a user message asking to continue. The decisions are pure functions
(``_core/recovery.py``); this module runs them.

Each attempt builds its own record (a ``Turn`` of its own, through its own
``Producer``); the events it emits are joined into the caller's turn as they come, so
the live view never jumps back and ``turn.text`` is the stitched reply.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .._core.accumulate import Accumulator
from .._core.errors import APIStatusError, InternalError, NbstreamError
from .._core.events import (
    AttemptStart,
    Done,
    ErrorEvent,
    Event,
    TextDelta,
    Usage,
    UsageEvent,
)
from .._core.record import Attempt, ErrorInfo, Request, Strategy, sum_usage
from .._core.recovery import (
    Recover,
    Stitcher,
    continuation,
    decide,
    describe_break,
    rejects_prefill,
)
from .._core.transcript import Turn
from .producer import Producer
from .request import RequestSpec
from .retry import retry_delay

if TYPE_CHECKING:
    from .client import Client
    from .tooloptions import ToolOptions

__all__ = ["Entry", "Plan", "Runner"]

Emit = Callable[[list[Event]], None]


@dataclass(frozen=True)
class Entry:
    """One place to ask: a client, and the model to ask there."""

    client: Client
    model: str

    def __repr__(self) -> str:
        return f"<Entry {self.model!r} at {self.client.base_url}>"


@dataclass(eq=False)
class Plan:
    """One question, ready to run: the first request, and what a fallback needs to
    build its own (the new messages, the system prompt, the parameters, the earlier
    turns of the conversation, rendered by each entry in its own wire format)."""

    client: Client
    spec: RequestSpec
    messages: list[dict[str, Any]]
    system: str | None
    params: dict[str, Any]
    history: tuple[Turn, ...] = ()
    tools: ToolOptions | None = None  # Python functions the model may call

    def __repr__(self) -> str:
        return f"<Plan {self.spec!r}>"

    async def run(
        self, turn: Turn, emit: Emit, loop: asyncio.AbstractEventLoop
    ) -> Turn:
        if self.tools is None:
            cache = self.spec.cache  # (a tool loop is not cached: its tools must run)
            if cache is not None:
                events = cache.answer(self.spec, turn)
                if events is not None:  # answered from the store: nothing is sent
                    emit(events)
                    return turn
            turn = await self.once(turn, emit, loop)
            if cache is not None:
                cache.keep(self.spec, turn)
            return turn
        from .toolloop import ToolLoop

        return await _guard(
            ToolLoop(self, turn, emit, loop).run(),
            turn,
            "running a tool loop",
            "Every step so far is kept in turn.steps.",
        )

    async def once(
        self, turn: Turn, emit: Emit, loop: asyncio.AbstractEventLoop
    ) -> Turn:
        """One model request (with its retries and fallbacks), into ``turn``."""
        client = self.client
        if not client.fallbacks and client.recover is None:
            return await Producer(self.spec, turn, client._http_for(loop), emit).run()
        return await _guard(
            Runner(self, turn, emit, loop).run(),
            turn,
            "joining the attempts of a reply",
            "The partial reply is kept.",
        )


async def _guard(work: Awaitable[Turn], turn: Turn, doing: str, kept: str) -> Turn:
    """Run ``work``; a bug of ours (an exception that is neither an ``NbstreamError``
    nor a cancellation) ends the turn as ``error`` with an ``InternalError``: never as
    if someone had pressed Stop."""
    try:
        return await work
    except (NbstreamError, asyncio.CancelledError):
        raise
    except Exception as exc:
        err = InternalError(
            f"nbstream failed while {doing} ({type(exc).__name__}: {exc}). {kept} "
            "This is a bug in nbstream: please report it.",
            turn=turn,
        )
        turn.status, turn.error = "error", ErrorInfo("InternalError", err.message)
        raise err from None


def _usage_sum(attempts: Sequence[Attempt], current: Usage | None) -> Usage | None:
    return sum_usage([*(a.usage for a in attempts), current])


class Runner:
    """Runs the attempts of one turn (see the module docstring)."""

    def __init__(
        self, plan: Plan, turn: Turn, emit: Emit, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.plan, self.turn, self.emit, self.loop = plan, turn, emit, loop
        client = plan.client
        self.entries = [Entry(client, plan.spec.settings.model), *client.fallbacks]
        self.recover: Recover | None = client.recover
        self.acc = Accumulator(turn, prompt_chars=plan.spec.prompt_chars())
        self.t0 = time.perf_counter()
        self.attempts: list[Attempt] = []
        self.stitcher: Stitcher | None = None
        self.kept = 0  # characters of turn.text before the current attempt's part
        self.started = 0.0  # when the current attempt began

    def _now(self) -> float:
        return time.perf_counter() - self.t0

    async def run(self) -> Turn:
        turn = self.turn
        strategy: Strategy = "first"
        index = 0
        reason = ""
        while True:
            entry = self.entries[index]
            if index:
                self._begin(index, entry, strategy, reason)
                before = self.entries[index - 1]
                if before.client is entry.client and before.model == entry.model:
                    # the same model again: back off as for a retry
                    await asyncio.sleep(
                        retry_delay(index, None, entry.client.retry_delay)
                    )
            sub, error = await self._attempt(entry, strategy, reason)
            if error is None and sub.status == "complete":
                self._settle(None)
                return turn
            if (
                strategy == "prefill"
                and isinstance(error, APIStatusError)
                and rejects_prefill(error.status_code, error.provider_message or "")
            ):
                self.attempts[-1].note = (
                    f"the server refused the trailing assistant message (HTTP "
                    f"{error.status_code}); asked again as a user turn"
                )
                strategy = "user_turn"
                reason = "the server does not continue a trailing assistant message"
                self.entries.insert(index + 1, entry)  # the same entry, once more
                index += 1
                continue
            kind = type(error).__name__ if error else "incomplete"
            phase = getattr(error, "phase", None)
            verdict = decide(
                kind,
                getattr(error, "status_code", None),
                had_output=bool(turn.text or sub.text or sub.tool_calls),
                recover=self.recover,
                more=index + 1 < len(self.entries),
                phase=phase,
            )
            if not verdict.go:
                self._fail(error, verdict.why)
                if error is not None:
                    raise error
                return turn
            reason = describe_break(
                kind, phase, len(turn.text), incomplete=error is None
            )
            strategy = verdict.strategy
            index += 1

    # -- one attempt -----------------------------------------------------------------
    async def _attempt(
        self, entry: Entry, strategy: Strategy, reason: str = ""
    ) -> tuple[Turn, NbstreamError | None]:
        plan, turn = self.plan, self.turn
        partial = turn.text if strategy in ("prefill", "user_turn") else ""
        messages, extra = continuation(
            strategy,
            plan.messages,
            partial,
            anthropic=entry.client.api == "anthropic",
            extra=entry.client.prefill_params,
        )
        spec = entry.client._spec(
            messages,
            plan.system,
            entry.model,
            {**plan.params, **extra},
            plan.history,
            tools=plan.spec.tools,
            tool_choice=plan.spec.tool_choice,
        )
        sub = Turn(
            Request(messages, spec.settings.model, spec.api, spec.base_url, spec.params)
        )
        self.kept = len(turn.text)
        self.started = self._now()
        self.stitcher = Stitcher(partial) if partial else None
        record = Attempt(spec.settings.model, spec.api, spec.base_url, strategy)
        record.reason = reason or None
        self.attempts.append(record)
        producer = Producer(
            spec, sub, entry.client._http_for(self.loop), self._forward(sub)
        )
        error: NbstreamError | None = None
        try:
            await producer.run()
        except NbstreamError as exc:
            error = exc
        except BaseException:
            self._close_attempt(record, sub)
            self._settle(None, cancelled=True)
            raise
        self._close_attempt(record, sub)
        return sub, error

    def _forward(self, sub: Turn) -> Emit:
        """What an attempt emits, joined into the caller's turn."""
        turn, acc = self.turn, self.acc

        def forward(events: list[Event]) -> None:
            out: list[Event] = []
            now = self._now()
            with turn._lock:
                for ev in events:
                    kind = type(ev)
                    if kind is TextDelta and self.stitcher is not None:
                        assert isinstance(ev, TextDelta)
                        if ev.choice == 0:
                            text = self.stitcher.feed(ev.text)
                            if not text:
                                continue
                            ev = replace(ev, text=text)
                    elif kind is ErrorEvent or kind is Done:
                        continue  # the attempt's own end; the turn ends in _settle
                    elif kind is UsageEvent:
                        assert isinstance(ev, UsageEvent)
                        summed = _usage_sum(self.attempts[:-1], ev.usage)
                        ev = UsageEvent(summed or ev.usage)
                    acc.apply(ev, now)
                    out.append(ev)
            if out:
                self.emit(out)

        return forward

    def _close_attempt(self, record: Attempt, sub: Turn) -> None:
        """The attempt is over: what it held back goes out, and its record is made."""
        if self.stitcher is not None:
            rest = self.stitcher.flush()
            self.stitcher = None
            if rest:
                ev = TextDelta(rest)
                with self.turn._lock:
                    self.acc.apply(ev, self._now())
                self.emit([ev])
        text = self.turn.text
        m = self.turn.metrics
        if m.ttfb_s is None and sub.metrics.ttfb_s is not None:
            m.ttfb_s = self.started + sub.metrics.ttfb_s
        record.status = sub.status
        record.error = sub.error
        record.text = sub.text
        record.span = (self.kept, len(text)) if len(text) > self.kept else None
        record.usage = sub.usage
        record.metrics = sub.metrics
        self.turn._attempts = list(self.attempts)

    def _begin(self, index: int, entry: Entry, strategy: Strategy, reason: str) -> None:
        superseded = strategy == "restart"
        if superseded:
            for a in self.attempts:
                a.span = None  # what they wrote is not in the final text
        ev = AttemptStart(
            index,
            entry.model,
            entry.client.base_url,
            strategy,
            reason,
            kept=0 if superseded else len(self.turn.text),
            superseded=superseded,
        )
        with self.turn._lock:
            self.acc.apply(ev, self._now())
            self.turn.metrics.attempts = index + 1
        self.emit([ev])

    # -- the end -----------------------------------------------------------------------
    def _settle(self, error: ErrorInfo | None, *, cancelled: bool = False) -> None:
        turn = self.turn
        with turn._lock:
            if cancelled:
                turn.status = "cancelled"
            elif error is not None:
                turn.status = "error"
                turn.error = error
            elif self.attempts and self.attempts[-1].status == "complete":
                self.acc.apply(Done(), self._now())
            self.acc.finish(self._now())
            if self.attempts:
                turn.usage = _usage_sum(self.attempts, None) or turn.usage
            turn._attempts = list(self.attempts)

    def _fail(self, error: NbstreamError | None, why: str) -> None:
        if error is None:  # an incomplete end that could not be recovered
            self._settle(None)
            return
        tried = len(self.attempts)
        if tried > 1:
            error.message = (
                f"{error.message} (attempt {tried} of {tried}; not tried further: "
                f"{why}. Every attempt's partial reply is in turn.attempts.)"
            )
        elif why and "no fallback" not in why and len(self.entries) > 1:
            error.message = f"{error.message} (no fallback tried: {why}.)"
        error.args = (error.message,)
        error.turn = self.turn
        self._settle(
            ErrorInfo(
                type(error).__name__,
                error.message,
                status_code=getattr(error, "status_code", None),
                request_id=getattr(error, "request_id", None),
                retry_after=getattr(error, "retry_after", None),
            )
        )
