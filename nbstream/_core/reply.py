"""The reply being built: its text buffers, tool calls and choices. Plain data.

A ``Choice`` is written by the stream under its turn's lock and read under the same
lock, so a reader on another thread never sees half a batch.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Choice", "TextBuffer", "ToolCall"]

_SURROGATE = re.compile("[\ud800-\udfff]")


class TextBuffer:
    """Appends in O(1); joins once per read, and compacts so memory stays ~ the text."""

    __slots__ = ("_blocks", "_cache", "_parts")

    _COMPACT_AT = 512

    def __init__(self, text: str = "") -> None:
        self._blocks: list[str] = [text] if text else []
        self._parts: list[str] = []
        self._cache: str | None = text

    def append(self, piece: str) -> None:
        parts = self._parts
        parts.append(piece)
        self._cache = None
        if len(parts) >= self._COMPACT_AT:
            self._blocks.append("".join(parts))
            parts.clear()

    @property
    def value(self) -> str:
        if self._cache is None:
            if self._parts:
                self._blocks.append("".join(self._parts))
                self._parts.clear()
            # one join, and the result replaces the blocks: the text is held once
            text = "".join(self._blocks)
            if _SURROGATE.search(text):  # an emoji's UTF-16 halves in two chunks
                b = text.encode("utf-16-le", "surrogatepass")
                text = b.decode("utf-16-le", "surrogatepass")
            self._blocks = [text] if text else []
            self._cache = text
        return self._cache

    def __bool__(self) -> bool:
        return bool(self._blocks or self._parts)


@dataclass(eq=False)
class ToolCall:
    """A tool call the model asked for. ``arguments`` is the JSON text as streamed;
    ``input`` is it parsed (once, when the call ended), or ``None`` if it is not valid
    JSON, in which case ``error`` says why (e.g. cut off by ``max_tokens``)."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""
    input: Any = None
    error: str | None = None
    complete: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "input": self.input,
            "error": self.error,
            "complete": self.complete,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(**d)


class Choice:
    """One of the ``n`` replies of a turn (almost always just one)."""

    __slots__ = (
        "_args",
        "_lock",
        "_reasoning",
        "_refusal",
        "_text",
        "extra",
        "finish_reason",
        "index",
        "tool_calls_by_index",
    )

    def __init__(self, index: int = 0, lock: threading.RLock | None = None) -> None:
        self.index = index
        # the turn's lock: the stream writes under it, every read takes it
        self._lock = lock if lock is not None else threading.RLock()
        self._text = TextBuffer()
        self._reasoning = TextBuffer()
        self._refusal: TextBuffer | None = None
        self.finish_reason: str | None = None
        self.tool_calls_by_index: dict[int, ToolCall] = {}
        self._args: dict[int, list[str]] = {}
        self.extra: dict[str, Any] = {}

    @property
    def text(self) -> str:
        with self._lock:
            return self._text.value

    @property
    def reasoning(self) -> str:
        with self._lock:
            return self._reasoning.value

    @property
    def refusal(self) -> str | None:
        with self._lock:
            return self._refusal.value if self._refusal is not None else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        with self._lock:
            calls = sorted(self.tool_calls_by_index.values(), key=lambda c: c.index)
            for c in calls:
                parts = self._args.get(c.index)
                if parts:
                    c.arguments = "".join(parts)
            return calls

    def scrub(self, scrub: Callable[[str], str]) -> None:
        """Pass every text of the reply through ``scrub`` (the key's last check)."""
        with self._lock:
            for name in ("_text", "_reasoning", "_refusal"):
                buf = getattr(self, name)
                if buf:
                    clean = scrub(buf.value)
                    if clean != buf.value:
                        setattr(self, name, TextBuffer(clean))
            for call in self.tool_calls:
                args = scrub(call.arguments)
                if args != call.arguments:
                    call.arguments = args
                    self._args[call.index] = [args]
                    if call.complete:
                        with contextlib.suppress(ValueError):
                            call.input = json.loads(args)

    # -- mutation, used by the accumulator -------------------------------------
    def add_text(self, s: str) -> None:
        self._text.append(s)

    def add_reasoning(self, s: str) -> None:
        self._reasoning.append(s)

    def add_refusal(self, s: str) -> None:
        if self._refusal is None:
            self._refusal = TextBuffer()
        self._refusal.append(s)

    def add_tool_delta(
        self, index: int, id: str | None, name: str | None, args: str
    ) -> None:
        call = self.tool_calls_by_index.get(index)
        if call is None:
            call = self.tool_calls_by_index[index] = ToolCall(index)
            self._args[index] = []
        # id and name: the first non-empty value wins; a provider that re-sends them
        # must not get "llm_versionllm_version".
        if id and not call.id:
            call.id = id
        if name and not call.name:
            call.name = name
        if args:
            self._args[index].append(args)

    def end_tool_call(self, index: int) -> None:
        call = self.tool_calls_by_index.get(index)
        if call is None or call.complete or call.error:
            return
        args = "".join(self._args.get(index, ())) or "{}"  # no input means no arguments
        call.arguments = args
        self._args[index] = [args]
        try:
            call.input = json.loads(args)
        except ValueError as exc:
            call.input = None
            call.error = f"the arguments are not valid JSON ({exc})"
        else:
            call.error = None
            call.complete = True

    def end_all_tool_calls(self) -> None:
        for index in list(self.tool_calls_by_index):
            self.end_tool_call(index)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return self._to_dict()

    def _to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "text": self.text,
            "reasoning": self.reasoning,
            "refusal": self.refusal,
            "finish_reason": self.finish_reason,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], lock: threading.RLock | None = None
    ) -> Choice:
        c = cls(d["index"], lock)
        c._text = TextBuffer(d["text"])
        c._reasoning = TextBuffer(d["reasoning"])
        if d["refusal"] is not None:
            c._refusal = TextBuffer(d["refusal"])
        c.finish_reason = d["finish_reason"]
        for tc in d["tool_calls"]:
            call = ToolCall.from_dict(tc)
            c.tool_calls_by_index[call.index] = call
            c._args[call.index] = [call.arguments] if call.arguments else []
        c.extra = d["extra"]
        return c
