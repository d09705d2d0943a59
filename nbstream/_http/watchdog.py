"""The timer of a streaming body: gives up on a reply when a wait of ``Timeouts``
runs out, by cancelling the task that reads it.

One timer per stream, re-armed only when it fires or the stream changes phase (first
byte, first piece of the reply), rather than a timeout around every read: that cost ~5 µs
a chunk (bench/engine.py). Per chunk there is only ``data()``: a compare, and a clock
read when a piece of the reply arrived.

- before the first byte: ``first_byte``, from when the request was sent;
- before the first piece of the reply (text, reasoning, a tool call): ``first_token``,
  also from the send: keep-alive comments and pings do not reset it;
- after it: ``idle``, the longest gap between two pieces of the reply;
- throughout: ``total``, from the first attempt, if set.
"""

from __future__ import annotations

import asyncio
import time

from .._core.errors import TimeoutPhase
from .settings import Timeouts

__all__ = ["Watchdog"]


class Watchdog:
    __slots__ = (
        "_deltas",
        "_first_byte",
        "_first_token",
        "_handle",
        "_idle",
        "_loop",
        "_task",
        "_total",
        "expired",
        "got_byte",
        "got_token",
        "last",
        "phase",
    )

    def __init__(self, t: Timeouts, *, sent_at: float, started_at: float) -> None:
        """``sent_at`` / ``started_at``: ``time.perf_counter()`` of this attempt's send
        and of the first attempt's."""
        loop = self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        now = loop.time()
        ago = time.perf_counter()
        sent, started = now - (ago - sent_at), now - (ago - started_at)
        self._first_byte = None if t.first_byte is None else sent + t.first_byte
        self._first_token = None if t.first_token is None else sent + t.first_token
        self._total = None if t.total is None else started + t.total
        self._idle = t.idle
        self._handle: asyncio.TimerHandle | None = None
        self._deltas = 0
        self.got_byte = False
        self.got_token = False
        self.last = now
        self.phase: TimeoutPhase = "first_byte"
        self.expired = False
        self._arm()

    def _next(self) -> tuple[float, TimeoutPhase] | None:
        due: list[tuple[float, TimeoutPhase]] = []
        if not self.got_byte and self._first_byte is not None:
            due.append((self._first_byte, "first_byte"))
        if not self.got_token and self._first_token is not None:
            due.append((self._first_token, "first_token"))
        if self.got_token and self._idle is not None:
            due.append((self.last + self._idle, "idle"))
        if self._total is not None:
            due.append((self._total, "total"))
        return min(due) if due else None

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        nxt = self._next()
        if nxt is not None:
            self._handle = self._loop.call_at(nxt[0], self._check)

    def _check(self) -> None:
        self._handle = None
        nxt = self._next()
        if nxt is None:
            return
        if self._loop.time() >= nxt[0]:
            self.expired, self.phase = True, nxt[1]
            if self._task is not None:
                self._task.cancel()
        else:
            self._arm()

    def data(self, deltas: int) -> None:
        """Body bytes came; ``deltas`` is how many pieces of the reply there are now."""
        if deltas != self._deltas:
            self._deltas = deltas
            self.last = self._loop.time()
            if not self.got_token:
                self.got_token = self.got_byte = True
                self._arm()
        elif not self.got_byte:
            self.got_byte = True
            self._arm()

    def fired(self) -> bool:
        """True if this watchdog (and nothing else) cancelled the task."""
        return self.expired and self._task is not None and self._task.uncancel() == 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
