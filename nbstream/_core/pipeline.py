"""The whole core in one object: bytes → SSE events → neutral events → the turn.

No I/O: the caller feeds bytes as they arrive with the time they arrived, and calls
``close()`` at end of body. Used by the client, by replay, and by the tests byte by byte.

>>> from nbstream.transcript import Request, Turn
>>> turn = Turn(Request([], "m", "openai", "u"))
>>> p = Pipeline("openai", turn)
>>> _ = p.feed(b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\\n\\n', 0.1)
>>> _ = p.feed(b"data: [DONE]\\n\\n", 0.2); _ = p.close(0.2)
>>> turn.text, turn.status
('Hi', 'complete')
"""

from __future__ import annotations

from .accumulate import Accumulator
from .events import Event
from .providers import Parser, anthropic, openai
from .sse import DEFAULT_MAX_EVENT_SIZE, ServerSentEvent, SSEDecoder
from .transcript import Api, Turn

__all__ = ["Pipeline", "parser_for"]


def parser_for(api: Api) -> Parser:
    return anthropic.Parser() if api == "anthropic" else openai.Parser()


class Pipeline:
    """``feed(bytes, now) -> events``; ``close(now) -> events``; the turn is kept current."""

    __slots__ = ("_acc", "_decoder", "_parser", "raw_events", "turn")

    def __init__(
        self,
        api: Api,
        turn: Turn,
        *,
        max_event_size: int | None = DEFAULT_MAX_EVENT_SIZE,
        prompt_chars: int = 0,
        keep_raw_events: bool = False,
    ) -> None:
        self.turn = turn
        self._decoder = SSEDecoder(max_event_size)
        self._parser = parser_for(api)
        self._acc = Accumulator(turn, prompt_chars=prompt_chars)
        self.raw_events: list[ServerSentEvent] | None = [] if keep_raw_events else None
        if self.raw_events is not None:
            turn.raw_events = self.raw_events

    def feed(self, data: bytes, now: float) -> list[Event]:
        return self._events(self._decoder.feed(data), now)

    def close(self, now: float) -> list[Event]:
        out = self._events(self._decoder.close(), now)
        self._acc.finish(now)
        return out

    def abort(self, now: float) -> None:
        """The body did not end normally (stopped, failed): settle the turn as it is."""
        self._acc.finish(now)

    def _events(self, sses: list[ServerSentEvent], now: float) -> list[Event]:
        if not sses:
            return []
        self.turn.metrics.chunks += len(sses)
        if self.raw_events is not None:
            self.raw_events.extend(sses)
        parse, apply = self._parser.parse, self._acc.apply
        out: list[Event] = []
        for sse in sses:
            for ev in parse(sse):
                apply(ev, now)
                out.append(ev)
        return out
