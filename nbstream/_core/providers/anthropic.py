"""Anthropic ``/v1/messages`` streams."""

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
from ..sse import ServerSentEvent
from . import split_system

__all__ = [
    "PATH",
    "Parser",
    "build_body",
    "error_details",
    "headers",
    "normalize_usage",
]

PATH = "/messages"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_DONE = Done()


def build_body(
    model: str,
    messages: list[dict[str, Any]],
    system: str | None,
    params: dict[str, Any],
    *,
    stream_options: bool = True,
) -> dict[str, Any]:
    sys_text, rest = split_system(messages, system)
    body: dict[str, Any] = {
        "model": model,
        "messages": rest,
        "max_tokens": DEFAULT_MAX_TOKENS,
    }
    if sys_text:
        body["system"] = sys_text
    body.update(params)
    body["stream"] = True
    return body


def headers(api_key: str | None) -> dict[str, str]:
    h = {"anthropic-version": API_VERSION}
    if api_key:
        h["x-api-key"] = api_key
    return h


def normalize_usage(u: dict[str, Any]) -> Usage:
    """``input_tokens`` here counts every prompt token: uncached + cache write + read."""
    base = u.get("input_tokens")
    write = u.get("cache_creation_input_tokens") or 0
    read = u.get("cache_read_input_tokens") or 0
    inp = base + write + read if base is not None else None
    out = u.get("output_tokens")
    total = inp + out if inp is not None and out is not None else None
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=total,
        cached_input_tokens=read if base is not None else None,
        raw=u,
    )


def error_details(body: Any) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from an error body or ``error`` event."""
    err = body.get("error", body) if isinstance(body, dict) else body
    if not isinstance(err, dict):
        return (err if isinstance(err, str) else None), None, None
    msg = err.get("message")
    return (str(msg) if msg is not None else None), err.get("type"), None


class Parser:
    """One SSE event of a Messages stream → neutral events.

    Keeps the type of each content block by index, the merged usage (``message_start``
    then cumulative ``message_delta``), and the input of server-side tool blocks.
    """

    __slots__ = ("_blocks", "_server_input", "_usage")

    def __init__(self) -> None:
        self._blocks: dict[int, dict[str, Any]] = {}
        self._server_input: dict[int, list[str]] = {}
        self._usage: dict[str, Any] = {}

    def parse(self, sse: ServerSentEvent) -> list[Event]:
        try:
            obj = json.loads(sse.data)
        except ValueError:
            return [
                StreamWarning(f"Skipped an event that is not JSON: {sse.data[:120]!r}")
            ]
        if not isinstance(obj, dict):
            return [
                StreamWarning(
                    f"Skipped an event that is not a JSON object: {sse.data[:120]!r}"
                )
            ]
        kind = obj.get("type") or sse.event
        if kind == "content_block_delta":
            return self._delta(obj.get("index", 0), obj.get("delta") or {})
        if kind == "content_block_start":
            return self._start(obj.get("index", 0), obj.get("content_block") or {})
        if kind == "content_block_stop":
            return self._stop(obj.get("index", 0))
        if kind == "message_start":
            msg = obj.get("message") or {}
            out: list[Event] = []
            if msg.get("id"):
                out.append(Meta("response_id", msg["id"]))
            if msg.get("model"):
                out.append(Meta("model", msg["model"]))
            if msg.get("usage"):
                out.append(self._merge_usage(msg["usage"]))
            return out
        if kind == "message_delta":
            return self._message_delta(obj)
        if kind == "message_stop":
            return [_DONE]
        if kind == "error":
            msg_text, etype, code = error_details(obj)
            return [ErrorEvent(msg_text or sse.data[:500], code, etype, obj)]
        return []  # ping, and event types added after this was written

    def _delta(self, index: int, d: dict[str, Any]) -> list[Event]:
        kind = d.get("type")
        if kind == "text_delta":
            return [TextDelta(d.get("text", ""))]
        if kind == "thinking_delta":
            return [ReasoningDelta(d.get("thinking", ""))]
        if kind == "input_json_delta":
            part = d.get("partial_json", "")
            if index in self._server_input:
                self._server_input[index].append(part)
                return []
            return [ToolCallDelta(index, None, None, part)]
        if kind == "signature_delta":
            return [Meta("reasoning_signature", d.get("signature", ""), 0)]
        if kind == "citations_delta":
            return [Meta("citations", d.get("citation"), 0, "append")]
        return []

    def _start(self, index: int, block: dict[str, Any]) -> list[Event]:
        kind = block.get("type")
        self._blocks[index] = block
        if kind == "text":
            return [TextDelta(block["text"])] if block.get("text") else []
        if kind == "thinking":
            return [ReasoningDelta(block["thinking"])] if block.get("thinking") else []
        if kind == "tool_use":
            given = block.get("input")
            args = json.dumps(given) if given else ""
            return [ToolCallDelta(index, block.get("id"), block.get("name"), args)]
        if kind == "server_tool_use":
            self._server_input[index] = []
        return []

    def _stop(self, index: int) -> list[Event]:
        block = self._blocks.get(index)
        if block is None:
            return []
        kind = block.get("type")
        if kind == "tool_use":
            return [ToolCallEnd(index)]
        if kind in ("text", "thinking"):
            return []
        if index in self._server_input:
            raw = "".join(self._server_input.pop(index)) or "{}"
            try:
                block = {**block, "input": json.loads(raw)}
            except ValueError:
                block = {**block, "input": raw}
        return [Meta("blocks", block, 0, "append")]

    def _message_delta(self, obj: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        d = obj.get("delta") or {}
        if d.get("stop_reason"):
            out.append(Finish(d["stop_reason"]))
        if d.get("stop_sequence") is not None:
            out.append(Meta("stop_sequence", d["stop_sequence"]))
        for key, value in d.items():
            if key not in ("stop_reason", "stop_sequence") and value is not None:
                out.append(Meta(key, value))
        if obj.get("usage"):
            out.append(self._merge_usage(obj["usage"]))
        return out

    def _merge_usage(self, u: dict[str, Any]) -> UsageEvent:
        for key, value in u.items():
            if value is not None:
                self._usage[key] = value
        return UsageEvent(normalize_usage(dict(self._usage)))
