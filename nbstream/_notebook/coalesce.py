"""Coalesce text deltas for a live view: at most 20 updates a second, fewer when slow.

A reply arrives a token at a time, and each message to the browser costs ~700 bytes of
envelope, so deltas are gathered and handed on when at least ``min_chars`` characters are
waiting (at most every ``frame_s``), or after ``max_wait_s`` whatever is waiting. A fast
model gets 20 updates a second; a slow one (100 tokens/s) about 8, so a 20k-token reply
costs ~1.2 MB instead of 3 MB (measured by bench/iopub.py). The first piece goes at once.
No I/O; the caller's ``push`` sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .._core.events import Event, ReasoningDelta, TextDelta

__all__ = ["FRAME_S", "MAX_WAIT_S", "MIN_CHARS", "READOUT_S", "Coalescer"]

FRAME_S = 0.05  # at most 20 updates per second
MAX_WAIT_S = 0.15  # nothing waits longer than this
MIN_CHARS = 48  # below this, a message would be mostly envelope: wait for more
READOUT_S = 1.0  # the live readout (tokens, tokens/s) needs one update a second

Push = Callable[[str, str, bool], None]  # (text, reasoning, with_readout)


class Coalescer:
    """``add(event)`` as events arrive; ``flush()`` at the end."""

    def __init__(
        self,
        push: Push,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        frame_s: float = FRAME_S,
        max_wait_s: float = MAX_WAIT_S,
        min_chars: int = MIN_CHARS,
        readout_s: float = READOUT_S,
    ) -> None:
        self._push = push
        self._loop = loop
        self._frame_s = frame_s
        self._max_wait_s = max_wait_s
        self._min_chars = min_chars
        self._readout_s = readout_s
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._pending = 0  # characters waiting
        self._first = True
        self._last = -max_wait_s
        self._last_readout = -readout_s
        self._timer: asyncio.TimerHandle | None = None

    def add(self, ev: Event) -> None:
        if isinstance(ev, TextDelta) and ev.choice == 0:
            self._text.append(ev.text)
        elif isinstance(ev, ReasoningDelta) and ev.choice == 0:
            self._reasoning.append(ev.text)
        else:
            return
        self._pending += len(ev.text)
        now = time.monotonic()
        since = now - self._last
        if (
            self._first
            or since >= self._max_wait_s
            or (since >= self._frame_s and self._pending >= self._min_chars)
        ):
            self.flush()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(
                self._last + self._max_wait_s - now, self.flush
            )

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._text and not self._reasoning:
            return
        now = time.monotonic()
        with_readout = now - self._last_readout >= self._readout_s
        if with_readout:
            self._last_readout = now
        text, reasoning = "".join(self._text), "".join(self._reasoning)
        self._text.clear()
        self._reasoning.clear()
        self._pending = 0
        self._first = False
        self._last = now
        self._push(text, reasoning, with_readout)
