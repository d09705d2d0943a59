"""Reading an OpenAI-compatible chat-completions stream: one SSE event → neutral events,
the usage rules, and error bodies."""

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
from ..secrets import Scrubber
from ..sse import ServerSentEvent
from . import MAX_CHOICES, clip, quote
from ._json import loads
from ._shape import count, dict_at, str_at, wrong

__all__ = ["Parser", "error_details", "normalize_usage"]

_DONE = Done()
# Top-level chunk keys that are handled, or noise (``obfuscation`` is random padding).
_HANDLED = frozenset(
    {"id", "object", "created", "model", "choices", "usage", "obfuscation", "error"}
)


def normalize_usage(u: dict[str, Any], out: list[Event], where: str = "usage") -> Usage:
    inp = count(u, "prompt_tokens", f"{where}.prompt_tokens", out)
    if inp is None:
        inp = count(u, "input_tokens", f"{where}.input_tokens", out)
    outp = count(u, "completion_tokens", f"{where}.completion_tokens", out)
    if outp is None:
        outp = count(u, "output_tokens", f"{where}.output_tokens", out)
    total = count(u, "total_tokens", f"{where}.total_tokens", out)
    if total is None and inp is not None and outp is not None:
        total = inp + outp
    details = dict_at(u, "completion_tokens_details", f"{where}.details", out) or {}
    prompt = dict_at(u, "prompt_tokens_details", f"{where}.prompt_details", out) or {}
    return Usage(
        input_tokens=inp,
        output_tokens=outp,
        total_tokens=total,
        reasoning_tokens=count(details, "reasoning_tokens", f"{where}.reasoning", out),
        cached_input_tokens=count(prompt, "cached_tokens", f"{where}.cached", out),
        # OpenRouter's, for the models it bills cache writes of (Anthropic, Gemini)
        cache_write_tokens=count(
            prompt, "cache_write_tokens", f"{where}.cache_write", out
        ),
        raw=u,
    )


class Parser:
    """One SSE event of a chat-completions stream → neutral events."""

    __slots__ = ("_extras", "_id", "_model", "_scrubber")

    def __init__(self, scrubber: Scrubber | None = None) -> None:
        self._id: str | None = None
        self._model: str | None = None
        self._extras: dict[str, Any] = {}
        self._scrubber = scrubber

    def parse(self, sse: ServerSentEvent) -> list[Event]:
        return self.parse_data(sse.data, is_error=sse.event == "error")

    def parse_data(self, data: str | bytes, *, is_error: bool = False) -> list[Event]:
        """One event's data (bytes from the pipeline's fast path, or the decoder's
        text); ``is_error``: sent as ``event: error``."""
        try:
            obj = loads(data)
        except ValueError:  # [DONE] too: not JSON, so no test of every chunk for it
            if data == b"[DONE]" or data == "[DONE]":
                return [_DONE]
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            return [
                StreamWarning(
                    f"Skipped a chunk that is not JSON: {quote(self._scrubber, text)}"
                )
            ]
        out: list[Event] = []
        if type(obj) is not dict:
            wrong("a chunk", obj, "a JSON object", out)
            return out
        # per chunk: no keyword argument passed on the usual path
        return self.chunk(obj, out, is_error=True) if is_error else self.chunk(obj, out)

    def chunk(
        self, obj: dict[str, Any], out: list[Event], *, is_error: bool = False
    ) -> list[Event]:
        # Most chunks of a reply carry one piece of text and nothing new: the same id
        # and model, one choice, a delta that is only content. Taken in one go.
        choices = obj.get("choices")
        if (
            type(choices) is list
            and len(choices) == 1
            and not is_error
            and obj.get("id") == self._id
            and obj.get("model") == self._model
            and not obj.get("usage")
            and not obj.get("error")
        ):
            ch = choices[0]
            if (
                type(ch) is dict
                and ch.get("index", 0) == 0
                and not ch.get("finish_reason")
                and not ch.get("logprobs")
            ):
                delta = ch.get("delta")
                if type(delta) is dict and len(delta) == 1:
                    content = delta.get("content")
                    if type(content) is str:
                        if content:
                            out.append(TextDelta(content, 0))
                        if not _HANDLED.issuperset(obj):
                            self._extra_keys(obj, out)
                        return out
        err = obj.get("error")
        if err or is_error:
            msg, etype, code = error_details(obj)
            raw = json.dumps(obj, ensure_ascii=False)
            out.append(
                ErrorEvent(msg or clip(self._scrubber, raw, 500), code, etype, obj)
            )
            if is_error:
                return out
        rid = obj.get("id")
        if rid and rid != self._id:
            if type(rid) is str:
                self._id = rid
                out.append(Meta("response_id", rid))
            else:
                wrong("id", rid, "a string", out)
        model = obj.get("model")
        if model and model != self._model:
            if type(model) is str:
                self._model = model
                out.append(Meta("model", model))
            else:
                wrong("model", model, "a string", out)
        if choices:
            if type(choices) is list:
                for pos, ch in enumerate(choices):
                    if type(ch) is dict:
                        self._choice(ch, pos, out)
                    else:
                        wrong("choices[]", ch, "an object", out)
            else:
                wrong("choices", choices, "a list", out)
        usage = obj.get("usage")
        if usage:
            if type(usage) is dict:
                out.append(UsageEvent(normalize_usage(usage, out)))
            else:
                wrong("usage", usage, "an object", out)
        if not _HANDLED.issuperset(obj):
            self._extra_keys(obj, out)
        return out

    def _choice(self, ch: dict[str, Any], pos: int, out: list[Event]) -> None:
        ci = ch.get("index", pos)
        if type(ci) is not int or not 0 <= ci < MAX_CHOICES:
            if type(ci) is int:
                out.append(
                    StreamWarning(
                        f"Ignored a choice with index {ci}: nbstream keeps choices 0 "
                        f"to {MAX_CHOICES - 1}."
                    )
                )
            else:
                wrong("choices[].index", ci, "a whole number", out)
            return
        delta = ch.get("delta")
        if delta:
            if type(delta) is dict:
                self._delta(delta, ci, out)
            else:
                wrong("choices[].delta", delta, "an object", out)
        logprobs = ch.get("logprobs")
        if logprobs:
            out.append(Meta("logprobs", logprobs, ci, "append"))
        reason = ch.get("finish_reason")
        if reason:
            if type(reason) is str:
                out.append(Finish(reason, ci))
            else:
                wrong("choices[].finish_reason", reason, "a string", out)

    def _delta(self, delta: dict[str, Any], ci: int, out: list[Event]) -> None:
        content = delta.get("content")
        if len(delta) == 1 and type(content) is str:  # most chunks: only text
            if content:
                out.append(TextDelta(content, ci))
            return
        if content:
            if type(content) is str:
                out.append(TextDelta(content, ci))
            elif type(content) is list:
                _content_parts(content, ci, out)
            else:
                wrong("delta.content", content, "a string", out)
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning:
            if type(reasoning) is str:
                out.append(ReasoningDelta(reasoning, ci))
            else:
                wrong("delta.reasoning", reasoning, "a string", out)
                reasoning = None
        details = delta.get("reasoning_details")
        if details:
            if type(details) is list:
                _reasoning_details(details, ci, out, text=not reasoning)
            else:
                wrong("delta.reasoning_details", details, "a list", out)
        refusal = delta.get("refusal")
        if refusal is not None:
            if type(refusal) is str:
                out.append(RefusalDelta(refusal, ci))
            else:
                wrong("delta.refusal", refusal, "a string", out)
        calls = delta.get("tool_calls")
        if calls:
            if type(calls) is list:
                for pos, tc in enumerate(calls):
                    _tool_call(tc, pos, ci, out)
            else:
                wrong("delta.tool_calls", calls, "a list", out)

    def _extra_keys(self, obj: dict[str, Any], out: list[Event]) -> None:
        extras = self._extras
        for key, value in obj.items():
            if key in _HANDLED or value is None:
                continue
            if key == "x_groq" and type(value) is dict and "usage" in value:
                usage = dict_at(value, "usage", "x_groq.usage", out)
                if usage is not None:
                    out.append(UsageEvent(normalize_usage(usage, out, "x_groq.usage")))
            if extras.get(key) != value:
                extras[key] = value
                out.append(Meta(key, value))


def _tool_call(tc: Any, pos: int, ci: int, out: list[Event]) -> None:
    if type(tc) is not dict:
        wrong("delta.tool_calls[]", tc, "an object", out)
        return
    index = tc.get("index", pos)
    if type(index) is not int or not 0 <= index < MAX_CHOICES:
        wrong("delta.tool_calls[].index", index, "a small whole number", out)
        return
    fn = dict_at(tc, "function", "delta.tool_calls[].function", out) or {}
    args = fn.get("arguments")
    if args is not None and type(args) is not str:
        if type(args) is dict:
            args = json.dumps(args, ensure_ascii=False)  # some gateways send an object
        else:
            wrong("delta.tool_calls[].function.arguments", args, "a string", out)
            args = None
    out.append(
        ToolCallDelta(
            index,
            str_at(tc, "id", "delta.tool_calls[].id", out),
            str_at(fn, "name", "delta.tool_calls[].function.name", out),
            args or "",
            ci,
        )
    )


def _content_parts(parts: list[Any], ci: int, out: list[Event]) -> None:
    """Mistral-style content parts: ``[{"type": "thinking", "thinking": [...]}, …]``."""
    for part in parts:
        if type(part) is not dict:
            continue
        kind = part.get("type")
        if kind == "text":
            text = str_at(part, "text", "delta.content[].text", out)
            if text:
                out.append(TextDelta(text, ci))
        elif kind == "thinking":
            inner = part.get("thinking")
            if type(inner) is str:
                out.append(ReasoningDelta(inner, ci))
            elif type(inner) is list:
                for p in inner:
                    if type(p) is dict and type(p.get("text")) is str and p["text"]:
                        out.append(ReasoningDelta(p["text"], ci))


def _reasoning_details(
    details: list[Any], ci: int, out: list[Event], *, text: bool
) -> None:
    """OpenRouter ``reasoning_details``: text (when no ``reasoning`` string carried it
    already), and signed or encrypted entries kept to send back."""
    for d in details:
        if type(d) is not dict:
            continue
        kind = d.get("type")
        if text and kind == "reasoning.text":
            t = str_at(d, "text", "reasoning_details[].text", out)
            if t:
                out.append(ReasoningDelta(t, ci))
        elif text and kind == "reasoning.summary":
            t = str_at(d, "summary", "reasoning_details[].summary", out)
            if t:
                out.append(ReasoningDelta(t, ci))
        if d.get("signature") or d.get("data") or kind == "reasoning.encrypted":
            out.append(Meta("reasoning_details", d, ci, "append"))


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
        # OpenRouter's upstream text
        msg = f"{msg} ({meta['raw']})" if msg else meta["raw"]
    code, etype = err.get("code"), err.get("type")
    return (
        str(msg) if msg is not None else None,
        etype if isinstance(etype, str) else None,
        str(code) if code is not None else None,
    )
