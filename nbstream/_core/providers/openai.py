"""OpenAI-compatible ``/chat/completions`` streams (OpenAI, Azure, Ollama, vLLM,
llama.cpp, OpenRouter, Groq, Mistral, DeepSeek, Together …)."""

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
    RefusalDelta,
    StreamWarning,
    TextDelta,
    ToolCallDelta,
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

PATH = "/chat/completions"
_DONE = Done()
# Top-level chunk keys that are handled, or noise (``obfuscation`` is random padding).
_HANDLED = frozenset(
    {"id", "object", "created", "model", "choices", "usage", "obfuscation", "error"}
)


def build_body(
    model: str,
    messages: list[dict[str, Any]],
    system: str | None,
    params: dict[str, Any],
    *,
    stream_options: bool = True,
) -> dict[str, Any]:
    sys_text, rest = split_system(messages, system)
    msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + rest
    body: dict[str, Any] = {"model": model, "messages": msgs, **params, "stream": True}
    if stream_options:
        body["stream_options"] = {"include_usage": True}
    return body


def headers(api_key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"} if api_key else {}


def normalize_usage(u: dict[str, Any]) -> Usage:
    inp = u.get("prompt_tokens", u.get("input_tokens"))
    out = u.get("completion_tokens", u.get("output_tokens"))
    total = u.get("total_tokens")
    if total is None and inp is not None and out is not None:
        total = inp + out
    details = u.get("completion_tokens_details") or {}
    prompt_details = u.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=inp,
        output_tokens=out,
        total_tokens=total,
        reasoning_tokens=details.get("reasoning_tokens"),
        cached_input_tokens=prompt_details.get("cached_tokens"),
        raw=u,
    )


def error_details(body: Any) -> tuple[str | None, str | None, str | None]:
    """(message, type, code) from an error body or error object."""
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, str):
        return err, None, None
    if not isinstance(err, dict):
        return None, None, None
    msg = err.get("message")
    meta = err.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("raw"), str):
        msg = (
            f"{msg} ({meta['raw']})" if msg else meta["raw"]
        )  # OpenRouter's upstream text
    code = err.get("code")
    return (
        str(msg) if msg is not None else None,
        err.get("type"),
        str(code) if code is not None else None,
    )


class Parser:
    """One SSE event of a chat-completions stream → neutral events."""

    __slots__ = ("_extras", "_id", "_model")

    def __init__(self) -> None:
        self._id: str | None = None
        self._model: str | None = None
        self._extras: dict[str, Any] = {}

    def parse(self, sse: ServerSentEvent) -> list[Event]:
        data = sse.data
        if data == "[DONE]":
            return [_DONE]
        try:
            obj = json.loads(data)
        except ValueError:
            return [StreamWarning(f"Skipped a chunk that is not JSON: {data[:120]!r}")]
        if not isinstance(obj, dict):
            return [
                StreamWarning(
                    f"Skipped a chunk that is not a JSON object: {data[:120]!r}"
                )
            ]
        out: list[Event] = []
        err = obj.get("error")
        if err or sse.event == "error":
            msg, etype, code = error_details(obj)
            out.append(ErrorEvent(msg or data[:500], code, etype, obj))
            if sse.event == "error":
                return out
        rid = obj.get("id")
        if rid and rid != self._id:
            self._id = rid
            out.append(Meta("response_id", rid))
        model = obj.get("model")
        if model and model != self._model:
            self._model = model
            out.append(Meta("model", model))
        choices = obj.get("choices")
        if choices:
            for ch in choices:
                self._choice(ch, out)
        usage = obj.get("usage")
        if usage:
            out.append(UsageEvent(normalize_usage(usage)))
        if not _HANDLED.issuperset(obj):
            self._extra_keys(obj, out)
        return out

    def _choice(self, ch: dict[str, Any], out: list[Event]) -> None:
        ci = ch.get("index", 0)
        delta = ch.get("delta")
        if delta:
            content = delta.get("content")
            if content:
                if isinstance(content, str):
                    out.append(TextDelta(content, ci))
                else:
                    _content_parts(content, ci, out)
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out.append(ReasoningDelta(reasoning, ci))
            details = delta.get("reasoning_details")
            if details:
                _reasoning_details(details, ci, out, text=not reasoning)
            refusal = delta.get("refusal")
            if refusal is not None:
                out.append(RefusalDelta(refusal, ci))
            calls = delta.get("tool_calls")
            if calls:
                for pos, tc in enumerate(calls):
                    fn = tc.get("function") or {}
                    out.append(
                        ToolCallDelta(
                            tc.get("index", pos),
                            tc.get("id"),
                            fn.get("name"),
                            fn.get("arguments") or "",
                            ci,
                        )
                    )
        logprobs = ch.get("logprobs")
        if logprobs:
            out.append(Meta("logprobs", logprobs, ci, "append"))
        reason = ch.get("finish_reason")
        if reason:
            out.append(Finish(reason, ci))

    def _extra_keys(self, obj: dict[str, Any], out: list[Event]) -> None:
        extras = self._extras
        for key, value in obj.items():
            if key in _HANDLED or value is None:
                continue
            if key == "x_groq" and isinstance(value, dict) and "usage" in value:
                out.append(UsageEvent(normalize_usage(value["usage"])))
            if extras.get(key) != value:
                extras[key] = value
                out.append(Meta(key, value))


def _content_parts(parts: list[Any], ci: int, out: list[Event]) -> None:
    """Mistral-style content parts: ``[{"type": "thinking", "thinking": [...]}, …]``."""
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            out.append(TextDelta(part["text"], ci))
        elif kind == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, str):
                out.append(ReasoningDelta(inner, ci))
            elif isinstance(inner, list):
                for p in inner:
                    if isinstance(p, dict) and p.get("text"):
                        out.append(ReasoningDelta(p["text"], ci))


def _reasoning_details(
    details: list[Any], ci: int, out: list[Event], *, text: bool
) -> None:
    """OpenRouter ``reasoning_details``: text (when no ``reasoning`` string carried it
    already), and signed or encrypted entries kept to send back."""
    for d in details:
        if not isinstance(d, dict):
            continue
        kind = d.get("type")
        if text and kind == "reasoning.text" and d.get("text"):
            out.append(ReasoningDelta(d["text"], ci))
        elif text and kind == "reasoning.summary" and d.get("summary"):
            out.append(ReasoningDelta(d["summary"], ci))
        if d.get("signature") or d.get("data") or kind == "reasoning.encrypted":
            out.append(Meta("reasoning_details", d, ci, "append"))
