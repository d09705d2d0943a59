"""The tool calls of a reply as the views show them: one compact block per call (name,
arguments, status, result, time), placed in the reply's text at the offset where the
call was made. Plain data, no I/O, no IPython: the live views (``%%chat``'s and the
chat panel's) build blocks from events as they arrive; the final output and the panel's
saved messages build them from the finished turn, the same shape.

A block is a JSON-able dict::

    {"key": "0:1", "id": "call_1", "name": "lookup", "arguments": '{"city": …}',
     "status": "complete", "result": "21 C", "is_error": False, "elapsed_s": 0.012,
     "at": 14, "step": 0}

``at`` is the length of the reply's text (every step's text, joined) when the call
was made; ``status`` is ``"streaming"`` while the model writes the arguments, then a
``ToolResult`` status (``"approval"``, ``"running"``, ``"complete"``, ``"error"`` …).
Arguments and results are cut at ``SHOWN_CHARS`` for the view; the record keeps them
whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .._core.events import Event, StepStart, ToolCallDelta, ToolRun
from .._core.reply import ToolCall
from .._core.toolresult import ToolResult, cut
from .._core.transcript import Turn

__all__ = ["SHOWN_CHARS", "Approvals", "ToolBlocks", "ToolFeed", "loop_view"]

SHOWN_CHARS = 4_000


def _block(key: str, step: int, at: int) -> dict[str, Any]:
    return {
        "key": key,
        "id": "",
        "name": "",
        "arguments": "",
        "status": "streaming",
        "result": None,
        "is_error": False,
        "elapsed_s": None,
        "at": at,
        "step": step,
    }


class ToolBlocks:
    """The blocks of one reply, kept current from its events.

    ``add(event, at)`` returns the block it changed (a copy, ready to send) or
    ``None``; ``at`` is the length of the text shown so far."""

    def __init__(self) -> None:
        self.blocks: dict[str, dict[str, Any]] = {}
        self._step = 0
        self._args: dict[str, list[str]] = {}

    def all(self) -> list[dict[str, Any]]:
        return [self._shown(b) for b in self.blocks.values()]

    def add(self, ev: Event, at: int) -> dict[str, Any] | None:
        if isinstance(ev, ToolCallDelta):
            if ev.choice != 0:
                return None
            key = f"{self._step}:{ev.index}"
            b = self.blocks.get(key)
            if b is None:
                b = self.blocks[key] = _block(key, self._step, at)
                self._args[key] = []
            if ev.id and not b["id"]:
                b["id"] = ev.id
            if ev.name and not b["name"]:
                b["name"] = ev.name
            if ev.arguments:
                self._args[key].append(ev.arguments)
                b["arguments"] = "".join(self._args[key])
            return self._shown(b)
        if isinstance(ev, ToolRun):
            b = self._find(ev)
            if b is None:  # a call the view never saw stream (it started late)
                key = f"{ev.step}:{ev.call_id or len(self.blocks)}"
                b = self.blocks[key] = _block(key, ev.step, at)
            b.update(id=ev.call_id, name=ev.name, arguments=ev.arguments)
            b.update(status=ev.status, result=ev.result, is_error=ev.is_error)
            b["elapsed_s"] = ev.elapsed_s
            return self._shown(b)
        if isinstance(ev, StepStart):
            self._step = ev.step
        return None

    def _find(self, ev: ToolRun) -> dict[str, Any] | None:
        mine = [b for b in self.blocks.values() if b["step"] == ev.step]
        for b in mine:
            if ev.call_id and b["id"] == ev.call_id:
                return b
        for b in mine:  # a server that sends no ids: the first of that name not ended
            if not b["id"] and b["name"] == ev.name and b["result"] is None:
                return b
        return None

    @staticmethod
    def _shown(b: dict[str, Any]) -> dict[str, Any]:
        out = dict(b)
        out["arguments"] = cut(b["arguments"], SHOWN_CHARS)
        if b["result"] is not None:
            out["result"] = cut(b["result"], SHOWN_CHARS)
        return out


def loop_view(turn: Turn) -> tuple[str, list[dict[str, Any]]]:
    """A finished turn as the views show it: every model step's text joined, and a
    block per tool call at the offset where it was made. (A turn without tools: its
    text and no blocks.)"""
    text: list[str] = []
    at = 0
    blocks: list[dict[str, Any]] = []
    step = 0
    pending: list[dict[str, Any]] = []  # the calls of the last model step, in order
    for s in turn.steps:
        if isinstance(s, ToolResult):
            b = _match(pending, s)
            if b is None:
                b = _block(f"{step - 1}:{len(blocks)}", step - 1, at)
                blocks.append(b)
            _settle(b, s)
            continue
        pending.clear()
        piece = s.text
        text.append(piece)
        at += len(piece)
        for c in s.tool_calls:
            b = _block(f"{step}:{c.index}", step, at)
            b.update(id=c.id, name=c.name, arguments=c.arguments)
            if s is turn:  # the final step's calls never ran: it was stopped
                b["status"] = "cancelled" if turn.status == "cancelled" else "not run"
            blocks.append(b)
            pending.append(b)
        step += 1
    return "".join(text), [ToolBlocks._shown(b) for b in blocks]


def _match(pending: list[dict[str, Any]], r: ToolResult) -> dict[str, Any] | None:
    """The block of ``r``'s call: by id, else (a server that sends no ids) the first
    of that name still without a result."""
    for b in pending:
        if r.call_id and b["id"] == r.call_id and b["result"] is None:
            return b
    for b in pending:
        if b["result"] is None and b["name"] == r.name:
            return b
    return None


def _settle(b: dict[str, Any], r: ToolResult) -> None:
    b.update(
        id=r.call_id,
        name=r.name,
        arguments=r.arguments,
        status=r.status,
        result=r.result,
        is_error=r.is_error,
        elapsed_s=r.elapsed_s,
    )


class ToolFeed:
    """Tool events → block updates for a live view, at most ``frame_s`` apart for a
    block whose arguments stream (a call's first sight, and every change of status,
    go at once). The text before a call is flushed first, so that ``at`` is where the
    view's text ends."""

    def __init__(
        self,
        push: Callable[[dict[str, Any]], None],
        flush_text: Callable[[], None],
        text_len: Callable[[], int],
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        frame_s: float = 0.1,
    ) -> None:
        self.blocks = ToolBlocks()
        self._push, self._flush_text, self._text_len = push, flush_text, text_len
        self._loop, self._frame_s = loop, frame_s
        self._dirty: dict[str, dict[str, Any]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, ev: Event) -> bool:
        """Take ``ev`` if it is a tool event (True), else leave it (False)."""
        if not isinstance(ev, ToolCallDelta | ToolRun | StepStart):
            return False
        new = isinstance(ev, ToolCallDelta) and (
            f"{self.blocks._step}:{ev.index}" not in self.blocks.blocks
        )
        if new or isinstance(ev, ToolRun):
            self._flush_text()
        block = self.blocks.add(ev, self._text_len())
        if block is None:
            return True
        if new or isinstance(ev, ToolRun) or self._loop is None:
            self._dirty.pop(block["key"], None)
            self.flush()
            self._push(block)
        else:
            self._dirty[block["key"]] = block
            if self._timer is None:
                self._timer = self._loop.call_later(self._frame_s, self.flush)
        return True

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        dirty, self._dirty = self._dirty, {}
        for block in dirty.values():
            self._push(block)


class Approvals:
    """``approve=`` for a live view: each call waits for its block's Approve or Deny
    (``answer``); a stopped reply cancels the wait."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[bool]] = {}

    async def ask(self, call: ToolCall) -> bool:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[call.id] = fut
        try:
            return bool(await fut)
        finally:
            self._waiting.pop(call.id, None)

    def answer(self, call_id: Any, ok: Any) -> bool:
        """The view's answer for ``call_id``; False when nothing waits for it."""
        fut = self._waiting.get(call_id) if isinstance(call_id, str) else None
        if fut is None or fut.done():
            return False
        loop = fut.get_loop()
        loop.call_soon_threadsafe(_settle_future, fut, ok is True)
        return True

    @property
    def waiting(self) -> list[str]:
        return list(self._waiting)


def _settle_future(fut: asyncio.Future[bool], ok: bool) -> None:
    if not fut.done():
        fut.set_result(ok)
