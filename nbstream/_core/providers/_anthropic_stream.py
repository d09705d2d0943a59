"""Reading an Anthropic Messages stream: one SSE event → neutral events, the usage rules
(merged over ``message_start``), and error bodies."""

from __future__ import annotations

import json
from typing import Any

from ..events import (
    Done,
    ErrorEvent,
    Event,
    Finish,
    Meta,
    ReasoningDelta,
    StreamWarning,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    Usage,
    UsageEvent,
)
from ..secrets import Scrubber
from ..sse import ServerSentEvent
from . import clip, quote
from ._json import loads
from ._shape import count, dict_at, int_at, str_at, wrong

__all__ = ["Parser", "error_details", "normalize_usage"]

MAX_BLOCKS = 1 << 16
_DONE = Done()
# Usage fields that message_start reports before anything was generated: its
# ``output_tokens`` is a placeholder (1), not a count, so it is not taken.
_PLACEHOLDERS = frozenset({"output_tokens"})


def normalize_usage(u: dict[str, Any], out: list[Event]) -> Usage:
    """``input_tokens`` here counts every prompt token: uncached + cache write + read;
    ``reasoning_tokens`` the thinking tokens among the output, when the server says."""
    base = count(u, "input_tokens", "usage.input_tokens", out)
    write = count(u, "cache_creation_input_tokens", "usage.cache_creation", out) or 0
    read = count(u, "cache_read_input_tokens", "usage.cache_read", out) or 0
    inp = base + write + read if base is not None else None
    outp = count(u, "output_tokens", "usage.output_tokens", out)
    total = inp + outp if inp is not None and outp is not None else None
    details = dict_at(u, "output_tokens_details", "usage.output_details", out) or {}
    return Usage(
        input_tokens=inp,
        output_tokens=outp,
        total_tokens=total,
        reasoning_tokens=count(details, "thinking_tokens", "usage.thinking", out),
        cached_input_tokens=read if base is not None else None,
        cache_write_tokens=write if base is not None else None,
        raw=u,
    )


def error_details(body: Any) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from an error body or ``error`` event."""
    err = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(err, dict):
        return (err if isinstance(err, str) else None), None, None
    msg, etype = err.get("message"), err.get("type")
    return (
        str(msg) if msg is not None else None,
        etype if isinstance(etype, str) else None,
        None,
    )


class Parser:
    """One SSE event of a Messages stream → neutral events.

    Keeps the type of each content block by index, the merged usage (``message_start``
    then cumulative ``message_delta``), and the input of server-side tool blocks.
    """

    __slots__ = ("_blocks", "_scrubber", "_server_input", "_usage")

    def __init__(self, scrubber: Scrubber | None = None) -> None:
        self._blocks: dict[int, dict[str, Any]] = {}
        self._server_input: dict[int, list[str]] = {}
        self._usage: dict[str, Any] = {}
        self._scrubber = scrubber

    def parse(self, sse: ServerSentEvent) -> list[Event]:
        try:
            obj = loads(sse.data)
        except ValueError:
            return [
                StreamWarning(
                    "Skipped an event that is not JSON: "
                    + quote(self._scrubber, sse.data)
                )
            ]
        out: list[Event] = []
        if type(obj) is not dict:
            wrong("an event", obj, "a JSON object", out)
            return out
        kind = obj.get("type") or sse.event
        return self.event(kind, obj, out)

    def parse_data(self, data: bytes) -> list[Event]:
        return self.parse(ServerSentEvent("message", data.decode("utf-8", "replace")))

    def event(self, kind: Any, obj: dict[str, Any], out: list[Event]) -> list[Event]:
        if kind == "content_block_delta":
            index = self._index(obj, out)
            delta = dict_at(obj, "delta", "content_block_delta.delta", out)
            if index is not None and delta:
                self._delta(index, delta, out)
        elif kind == "content_block_start":
            index = self._index(obj, out)
            block = dict_at(obj, "content_block", "content_block", out)
            if index is not None and block:
                self._start(index, block, out)
        elif kind == "content_block_stop":
            index = self._index(obj, out)
            if index is not None:
                self._stop(index, out)
        elif kind == "message_start":
            msg = dict_at(obj, "message", "message_start.message", out) or {}
            rid = str_at(msg, "id", "message.id", out)
            if rid:
                out.append(Meta("response_id", rid))
            model = str_at(msg, "model", "message.model", out)
            if model:
                out.append(Meta("model", model))
            usage = dict_at(msg, "usage", "message.usage", out)
            if usage:
                out.append(self._merge_usage(usage, out, start=True))
        elif kind == "message_delta":
            self._message_delta(obj, out)
        elif kind == "message_stop":
            out.append(_DONE)
        elif kind == "error":
            msg_text, etype, code = error_details(obj)
            raw = json.dumps(obj, ensure_ascii=False)
            out.append(
                ErrorEvent(msg_text or clip(self._scrubber, raw, 500), code, etype, obj)
            )
        # ping, and event types added after this was written: nothing to do
        return out

    def _index(self, obj: dict[str, Any], out: list[Event]) -> int | None:
        index = int_at(obj, "index", "index", out)
        if index is None:
            return 0 if "index" not in obj else None
        if not 0 <= index < MAX_BLOCKS:
            wrong("index", index, "a small whole number", out)
            return None
        return index

    def _delta(self, index: int, d: dict[str, Any], out: list[Event]) -> None:
        kind = d.get("type")
        if kind == "text_delta":
            text = str_at(d, "text", "text_delta.text", out)
            if text:
                out.append(TextDelta(text))
        elif kind == "thinking_delta":
            text = str_at(d, "thinking", "thinking_delta.thinking", out)
            if text:
                out.append(ReasoningDelta(text))
        elif kind == "input_json_delta":
            part = str_at(d, "partial_json", "input_json_delta.partial_json", out)
            if part is None:
                return
            if index in self._server_input:
                self._server_input[index].append(part)
            else:
                out.append(ToolCallDelta(index, None, None, part))
        elif kind == "signature_delta":
            sig = str_at(d, "signature", "signature_delta.signature", out)
            if sig:
                out.append(Meta("reasoning_signature", sig, 0))
        elif kind == "citations_delta":
            out.append(Meta("citations", d.get("citation"), 0, "append"))

    def _start(self, index: int, block: dict[str, Any], out: list[Event]) -> None:
        kind = block.get("type")
        self._blocks[index] = block
        if kind == "text":
            text = str_at(block, "text", "content_block.text", out)
            if text:
                out.append(TextDelta(text))
        elif kind == "thinking":
            text = str_at(block, "thinking", "content_block.thinking", out)
            if text:
                out.append(ReasoningDelta(text))
            sig = str_at(block, "signature", "content_block.signature", out)
            if sig:
                out.append(Meta("reasoning_signature", sig, 0))
        elif kind == "tool_use":
            given = block.get("input")
            args = json.dumps(given, ensure_ascii=False) if given else ""
            tool_id = str_at(block, "id", "content_block.id", out)
            name = str_at(block, "name", "content_block.name", out)
            out.append(ToolCallDelta(index, tool_id, name, args))
        elif kind == "server_tool_use":
            self._server_input[index] = []
        elif kind == "fallback":
            # Anthropic's server-side fallback: a model declined and another one
            # writes what follows; the turn names the model that wrote the reply
            to = dict_at(block, "to", "fallback.to", out) or {}
            model = str_at(to, "model", "fallback.to.model", out)
            if model:
                out.append(Meta("model", model))
            out.append(Meta("fallbacks", block, None, "append"))

    def _stop(self, index: int, out: list[Event]) -> None:
        block = self._blocks.get(index)
        if block is None:
            return
        kind = block.get("type")
        if kind == "tool_use":
            out.append(ToolCallEnd(index))
            return
        if kind in ("text", "thinking", "fallback"):
            return
        if index in self._server_input:
            raw = "".join(self._server_input.pop(index)) or "{}"
            try:
                block = {**block, "input": json.loads(raw)}
            except ValueError:
                block = {**block, "input": raw}
        out.append(Meta("blocks", block, 0, "append"))

    def _message_delta(self, obj: dict[str, Any], out: list[Event]) -> None:
        d = dict_at(obj, "delta", "message_delta.delta", out) or {}
        reason = str_at(d, "stop_reason", "message_delta.stop_reason", out)
        if reason:
            out.append(Finish(reason))
        for key, value in d.items():
            if key != "stop_reason" and value is not None:
                out.append(Meta(key, value))
        usage = dict_at(obj, "usage", "message_delta.usage", out)
        if usage:
            out.append(self._merge_usage(usage, out))

    def _merge_usage(
        self, u: dict[str, Any], out: list[Event], *, start: bool = False
    ) -> UsageEvent:
        for key, value in u.items():
            if value is not None and not (start and key in _PLACEHOLDERS):
                self._usage[key] = value
        return UsageEvent(normalize_usage(dict(self._usage), out))
