"""The whole core in one object: bytes → SSE events → neutral events → the turn.

No I/O: the caller feeds bytes as they arrive with the time they arrived, and calls
``close()`` at end of body. Used by the client, by replay, and by the tests byte by byte.

What a hostile server can do is settled here, once: every event's text passes the
``Redactor`` (the key never reaches the turn, a view or a recording); nothing after the
end marker is applied; a batch of events is applied under the turn's lock, so a reader
on another thread sees the turn before or after a batch, never in between.

>>> from nbstream._core.transcript import Request, Turn
>>> turn = Turn(Request([], "m", "openai", "u"))
>>> p = Pipeline("openai", turn)
>>> _ = p.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\\n\\n', 0.1)
>>> _ = p.feed(b"data: [DONE]\\n\\n", 0.2); _ = p.close(0.2)
>>> turn.text, turn.status
('Hi', 'complete')
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .accumulate import Accumulator
from .events import (
    Done,
    ErrorEvent,
    Event,
    Meta,
    ReasoningDelta,
    RefusalDelta,
    StreamWarning,
    TextDelta,
    ToolCallDelta,
)
from .providers import Provider, provider_for
from .secrets import Redactor, Scrubber
from .sse import DEFAULT_MAX_EVENT_SIZE, ServerSentEvent, SSEDecoder
from .transcript import Api, Turn

__all__ = ["Pipeline"]


class Pipeline:
    """``feed(bytes, now) -> events``; ``close(now) -> events``; the turn is kept current."""

    __slots__ = (
        "_acc",
        "_after_end",
        "_decoder",
        "_parser",
        "_redactor",
        "_scrubber",
        "_transform",
        "raw_events",
        "turn",
    )

    def __init__(
        self,
        provider: Provider | Api,
        turn: Turn,
        *,
        max_event_size: int | None = DEFAULT_MAX_EVENT_SIZE,
        prompt_chars: int = 0,
        keep_raw_events: bool = False,
        scrubber: Scrubber | None = None,
        transform: Callable[[Event], Event | None] | None = None,
    ) -> None:
        """``transform``: called on each event before it reaches the turn; returns it,
        a changed event, or ``None`` to drop it (the client's middleware)."""
        self.turn = turn
        self._transform = transform
        self._scrubber = scrubber if scrubber else None
        self._redactor = Redactor(scrubber) if scrubber else None
        self._decoder = SSEDecoder(max_event_size)
        if isinstance(provider, str):
            provider = provider_for(provider)
        self._parser = provider.parser(self._scrubber)
        self._acc = Accumulator(turn, prompt_chars=prompt_chars)
        self._after_end = 0
        self.raw_events: list[ServerSentEvent] | None = [] if keep_raw_events else None
        if self.raw_events is not None:
            turn.raw_events = self.raw_events

    def feed(self, data: bytes, now: float) -> list[Event]:
        if self.raw_events is None:
            payload = self._decoder.one_data(data)
            if payload is not None:  # one whole event in this read: the usual case
                turn = self.turn
                turn.metrics.chunks += 1
                with turn._lock:
                    if turn.done:
                        self._after_end += 1
                        return self._note_after_end(now)
                    return self._apply(self._parser.parse_data(payload), now)
        return self._events(self._decoder.feed(data), now)

    def close(self, now: float) -> list[Event]:
        """End of body: the last event, what the redactor held back, the final status."""
        out = self._events(self._decoder.close(), now)
        with self.turn._lock:
            out += self._release(now)
            self._acc.finish(now)
            self._scrub_all()
        return out

    def abort(self, now: float) -> None:
        """The body did not end normally (stopped, failed): settle the turn as it is."""
        with self.turn._lock:
            self._release(now)
            self._acc.finish(now)
            self._scrub_all()

    def apply(self, events: list[Event], now: float) -> list[Event]:
        """Apply events that did not come from the body (a whole JSON answer)."""
        with self.turn._lock:
            return self._apply(events, now)

    def _events(self, sses: list[ServerSentEvent], now: float) -> list[Event]:
        if not sses:
            return []
        turn = self.turn
        turn.metrics.chunks += len(sses)
        if self.raw_events is not None:
            self.raw_events.extend(sses)
        parse = self._parser.parse
        with turn._lock:
            if len(sses) == 1 and not turn.done:  # one event per read: the usual case
                return self._apply(parse(sses[0]), now)
            out: list[Event] = []
            for sse in sses:
                if turn.done:
                    self._after_end += 1
                    continue
                out += self._apply(parse(sse), now)
            out += self._note_after_end(now)
        return out

    def _note_after_end(self, now: float) -> list[Event]:
        """A warning for the events that came after the end marker (if any did)."""
        if not self._after_end:
            return []
        n, self._after_end = self._after_end, 0
        warning = StreamWarning(
            f"The server sent {n} more event{'s' if n > 1 else ''} after the end of "
            "the reply; ignored."
        )
        self._acc.apply(warning, now)
        return [warning]

    def _apply(self, events: list[Event], now: float) -> list[Event]:
        apply, turn = self._acc.apply, self.turn
        if self._redactor is None and self._transform is None:
            for i, ev in enumerate(events):
                apply(ev, now)
                if type(ev) is Done:
                    self._after_end += len(events) - i - 1
                    return events[: i + 1]
            return events
        out: list[Event] = []
        transform, red = self._transform, self._redactor
        for ev in events:
            if turn.done:
                self._after_end += 1
                continue
            if type(ev) is TextDelta and red is not None:  # most events: inlined
                text = red.feed(ev.choice, ev.text)  # a reply's text: channel = choice
                if text is not ev.text:
                    if not text:
                        continue
                    ev = TextDelta(text, ev.choice)
                clean: Event | None = ev
            else:
                clean = ev if red is None else self._clean(ev)
            if clean is not None and transform is not None:
                clean = transform(clean)
            if clean is not None:
                apply(clean, now)
                out.append(clean)
        return out

    # -- secrets -------------------------------------------------------------------
    def _clean(self, ev: Event) -> Event | None:
        """``ev`` with the key taken out; ``None`` when nothing is left to show yet."""
        red, scrub = self._redactor, self._scrubber
        assert red is not None and scrub is not None
        kind = type(ev)
        if kind is TextDelta or kind is ReasoningDelta or kind is RefusalDelta:
            assert isinstance(ev, TextDelta | ReasoningDelta | RefusalDelta)
            text = red.feed((ev.type, ev.choice), ev.text)
            if text is ev.text:
                return ev
            return kind(text, ev.choice) if text else None
        if kind is ToolCallDelta:
            assert isinstance(ev, ToolCallDelta)
            args = red.feed(("args", ev.choice, ev.index), ev.arguments)
            return replace(
                ev,
                arguments=args,
                id=scrub.scrub(ev.id) if ev.id else ev.id,
                name=scrub.scrub(ev.name) if ev.name else ev.name,
            )
        if kind is Meta:
            assert isinstance(ev, Meta)
            return replace(ev, value=_scrub_json(scrub, ev.value))
        if kind is ErrorEvent:
            assert isinstance(ev, ErrorEvent)
            return replace(
                ev,
                message=scrub.scrub(ev.message),
                code=scrub.scrub(ev.code) if ev.code else ev.code,
                error_type=scrub.scrub(ev.error_type) if ev.error_type else None,
                raw=_scrub_json(scrub, ev.raw),
            )
        if kind is StreamWarning:
            assert isinstance(ev, StreamWarning)
            return replace(ev, message=scrub.scrub(ev.message))
        return ev

    def _release(self, now: float) -> list[Event]:
        """What the redactor held back: the stream ended, so it cannot grow into the key."""
        red = self._redactor
        if red is None:
            return []
        out: list[Event] = []
        for channel in red.channels():
            held = red.flush(channel)
            if not held:
                continue
            ev: Event
            if isinstance(channel, int):  # a reply's text
                ev = TextDelta(held, channel)
            else:
                assert isinstance(channel, tuple)
                kind, choice = channel[0], channel[1]
                if kind == "args":
                    ev = ToolCallDelta(channel[2], None, None, held, choice)
                elif kind == "reasoning":
                    ev = ReasoningDelta(held, choice)
                else:
                    ev = RefusalDelta(held, choice)
            self._acc.apply(ev, now)
            out.append(ev)
        return out

    def _scrub_all(self) -> None:
        """The whole reply once more: a slice of the key from its middle, split across
        pieces, is only visible in the whole text."""
        scrub = self._scrubber
        if scrub is None:
            return
        for ch in self.turn.choices:
            ch.scrub(scrub.scrub)


def _scrub_json(scrub: Scrubber, value: Any) -> Any:
    if isinstance(value, str):
        return scrub.scrub(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    text = json.dumps(value, ensure_ascii=False)
    clean = scrub.scrub(text)
    if clean == text:
        return value
    try:
        return json.loads(clean)
    except ValueError:  # a mask cut through an escape sequence
        return clean
