"""Anthropic ``/v1/messages``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..events import Done, Event
from ..messages import image, neutral_calls, text_of
from ..secrets import Scrubber
from . import history_turns, split_system, turn_messages
from ._anthropic_stream import Parser, error_details
from ._schema import anthropic_schema
from ._shape import wrong

if TYPE_CHECKING:
    from ..transcript import Api, Turn

__all__ = ["PROVIDER", "AnthropicProvider", "Parser"]

_DONE = Done()
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096


class AnthropicProvider:
    """The Anthropic Messages format."""

    api: Api = "anthropic"
    path = "/messages"

    def headers(self, api_key: str | None) -> dict[str, str]:
        h = {"anthropic-version": API_VERSION}
        if api_key:
            h["x-api-key"] = api_key
        return h

    def body(
        self,
        model: str,
        messages: list[dict[str, Any]],
        system: str | None,
        params: dict[str, Any],
        *,
        stream_options: bool = True,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str | None = None,
    ) -> dict[str, Any]:
        sys_text, rest = split_system(messages, system)
        body: dict[str, Any] = {
            "model": model,
            "messages": wire(rest),
            "max_tokens": DEFAULT_MAX_TOKENS,
        }
        if sys_text:
            body["system"] = sys_text
        if tools:
            body["tools"] = [_tool(t) for t in tools]
        if tool_choice:
            body["tool_choice"] = _CHOICE.get(tool_choice) or {
                "type": "tool",
                "name": tool_choice,
            }
        body.update(params)
        if "response_format" in body:
            fmt = output_format(body.pop("response_format"))
            if fmt is not None:
                body["output_config"] = {
                    **(body.get("output_config") or {}),
                    "format": fmt,
                }
        body["stream"] = True
        return body

    def parser(self, scrubber: Scrubber | None = None) -> Parser:
        return Parser(scrubber)

    def completion(self, obj: Any, scrubber: Scrubber | None = None) -> list[Event]:
        out: list[Event] = []
        if type(obj) is not dict:
            wrong("the answer", obj, "a JSON object", out)
            return out
        p = Parser(scrubber)
        p.event("message_start", {"message": {**obj, "usage": None}}, out)
        blocks = obj.get("content")
        if type(blocks) is list:
            for i, block in enumerate(blocks):
                p.event(
                    "content_block_start", {"index": i, "content_block": block}, out
                )
                p.event("content_block_stop", {"index": i}, out)
        elif blocks is not None:
            wrong("content", blocks, "a list", out)
        delta = {"stop_reason": obj.get("stop_reason")}
        if obj.get("stop_sequence") is not None:
            delta["stop_sequence"] = obj["stop_sequence"]
        p.event("message_delta", {"delta": delta, "usage": obj.get("usage")}, out)
        out.append(_DONE)
        return out

    def error_details(self, body: Any) -> tuple[str | None, str | None, str | None]:
        return error_details(body)

    def rejects_stream_options(self, status: int, body: str) -> bool:
        return False  # never sent

    def reply_message(self, turn: Turn) -> dict[str, Any] | None:
        ch = turn.choices[0]
        text, calls = ch.text or ch.refusal or "", ch.tool_calls
        blocks: list[dict[str, Any]] = []
        sig = ch.extra.get("reasoning_signature")
        if ch.reasoning and isinstance(sig, str):
            blocks.append(
                {"type": "thinking", "thinking": ch.reasoning, "signature": sig}
            )
        blocks.extend(
            b
            for b in ch.extra.get("blocks", [])
            if isinstance(b, dict) and b.get("type") == "redacted_thinking"
        )
        if text:
            blocks.append({"type": "text", "text": text})
        for c in calls:
            blocks.append(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.input or {}}
            )
        if not blocks:
            return None
        if len(blocks) == 1 and blocks[0]["type"] == "text":
            return {"role": "assistant", "content": text}
        return {"role": "assistant", "content": blocks}

    def history(
        self, turns: Sequence[Turn], system: str | None = None
    ) -> list[dict[str, Any]]:
        # the system prompt is a separate parameter here, never a message
        out: list[dict[str, Any]] = []
        for turn in history_turns(turns):
            out += turn_messages(self, turn)
        return out

    def tool_messages(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return wire(results)


_CHOICE: dict[str, dict[str, str]] = {
    "auto": {"type": "auto"},
    "none": {"type": "none"},
    "required": {"type": "any"},
}


def _tool(spec: dict[str, Any]) -> dict[str, Any]:
    out = {"name": spec["name"]}
    if spec.get("description"):
        out["description"] = spec["description"]
    out["input_schema"] = spec["parameters"]
    return out


def output_format(fmt: Any) -> dict[str, Any] | None:
    """The neutral response format (``_core/structured.py``) as Anthropic's structured
    outputs take it, in ``output_config.format`` (no beta header since they became
    generally available): ``{"type": "json_schema", "schema": …}``. ``None`` for what
    has no native form here (JSON without a schema, plain text)."""
    if not isinstance(fmt, dict):
        return None
    schema = fmt.get("schema")
    inner = fmt.get("json_schema")  # OpenAI's chat-completions form, given as it is
    if isinstance(inner, dict):
        schema = inner.get("schema")
    if fmt.get("type") in ("json_schema", "json_object") and isinstance(schema, dict):
        return {"type": "json_schema", "schema": anthropic_schema(schema)}
    return None


def wire(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral messages in Messages form: tool results become ``tool_result`` blocks of
    one user message (consecutive results together), tool calls ``tool_use`` blocks,
    images ``image`` blocks. Messages already in this form pass as they are."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m.get("role"), m.get("content")
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id", ""),
                "content": content if isinstance(content, str) else text_of(content),
            }
            if m.get("is_error"):
                block["is_error"] = True
            last = out[-1] if out else None
            if (
                last is not None
                and last["role"] == "user"
                and isinstance(last["content"], list)
                and all(b.get("type") == "tool_result" for b in last["content"])
            ):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if role == "assistant" and m.get("tool_calls"):
            blocks: list[dict[str, Any]] = []
            text = content if isinstance(content, str) else text_of(content)
            if text:
                blocks.append({"type": "text", "text": text})
            for c in neutral_calls(m["tool_calls"]):
                try:
                    args = json.loads(c["arguments"] or "{}")
                except ValueError:
                    args = {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": c["id"],
                        "name": c["name"],
                        "input": args,
                    }
                )
            out.append({"role": "assistant", "content": blocks})
            continue
        if isinstance(content, list):
            m = {**m, "content": [_part(p) for p in content]}
        out.append(
            {k: v for k, v in m.items() if k in ("role", "content")}
            if role in ("user", "assistant")
            else m
        )
    return out


def _part(p: Any) -> Any:
    if isinstance(p, dict) and p.get("type") == "image_url":  # OpenAI's own form
        url = (p.get("image_url") or {}).get("url", "")
        if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
            kind, b64 = url[5:].split(";base64,", 1)
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": kind, "data": b64},
            }
        return {"type": "image", "source": {"type": "url", "url": url}}
    img = image(p) if isinstance(p, dict) else None
    if img is None:
        return p
    media, data, link = img
    if data is not None:
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": link}}


PROVIDER = AnthropicProvider()
