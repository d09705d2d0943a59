"""Coalesce text deltas for a live view: at most one update per frame (20 Hz).

A reply arrives a token at a time; each message to the browser costs ~550 bytes of
envelope, so deltas are gathered and handed on at most every ``frame_s`` seconds, with a
timer so the last piece is never held back. No I/O; the caller's ``push`` sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .events import Event, ReasoningDelta, TextDelta

__all__ = ["FRAME_S", "READOUT_S", "Coalescer"]

FRAME_S = 0.05  # at most 20 updates per second
READOUT_S = 0.25  # the live readout needs no more than 4 updates per second

Push = Callable[[str, str, bool], None]  # (text, reasoning, with_readout)


class Coalescer:
    """``add(event)`` as events arrive; ``flush()`` at the end."""

    def __init__(
        self,
        push: Push,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        frame_s: float = FRAME_S,
        readout_s: float = READOUT_S,
    ) -> None:
        self._push = push
        self._loop = loop
        self._frame_s = frame_s
        self._readout_s = readout_s
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._last = -frame_s
        self._last_readout = -readout_s
        self._timer: asyncio.TimerHandle | None = None

    def add(self, ev: Event) -> None:
        if isinstance(ev, TextDelta) and ev.choice == 0:
            self._text.append(ev.text)
        elif isinstance(ev, ReasoningDelta) and ev.choice == 0:
            self._reasoning.append(ev.text)
        else:
            return
        now = time.monotonic()
        if now - self._last >= self._frame_s:
            self.flush()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(
                self._last + self._frame_s - now, self.flush
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
        self._last = now
        self._push(text, reasoning, with_readout)
