"""OpenAI-compatible ``/chat/completions`` (OpenAI, Azure, Ollama, vLLM, llama.cpp,
OpenRouter, Groq, Mistral, DeepSeek, Together …)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..events import Done, Event
from ..messages import image, neutral_calls, text_of
from ..secrets import Scrubber
from . import history_turns, split_system, turn_messages
from ._openai_stream import Parser, error_details
from ._schema import openai_strict
from ._shape import wrong

if TYPE_CHECKING:
    from ..transcript import Api, Turn

__all__ = ["PROVIDER", "OpenAIProvider", "Parser"]

_DONE = Done()


class OpenAIProvider:
    """The OpenAI chat-completions format."""

    api: Api = "openai"
    path = "/chat/completions"

    def headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

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
        msgs = ([{"role": "system", "content": sys_text}] if sys_text else []) + [
            _wire(m) for m in rest
        ]
        body: dict[str, Any] = {"model": model, "messages": msgs}
        if tools:
            body["tools"] = [_tool(t) for t in tools]
        if tool_choice:
            body["tool_choice"] = _CHOICE.get(tool_choice) or {
                "type": "function",
                "function": {"name": tool_choice},
            }
        body.update(params)
        body["stream"] = True
        if "response_format" in params:
            body["response_format"] = response_format(params["response_format"])
        if stream_options:
            body["stream_options"] = {"include_usage": True}
        return body

    def parser(self, scrubber: Scrubber | None = None) -> Parser:
        return Parser(scrubber)

    def completion(self, obj: Any, scrubber: Scrubber | None = None) -> list[Event]:
        out: list[Event] = []
        if type(obj) is not dict:
            wrong("the answer", obj, "a JSON object", out)
            return out
        choices = obj.get("choices")
        if type(choices) is list:  # message → delta: the streaming code reads it
            obj = dict(obj)
            obj["choices"] = [
                {**c, "delta": _indexed(c.get("message"))} if type(c) is dict else c
                for c in choices
            ]
        Parser(scrubber).chunk(obj, out)
        out.append(_DONE)
        return out

    def error_details(self, body: Any) -> tuple[str | None, str | None, str | None]:
        return error_details(body)

    def rejects_stream_options(self, status: int, body: str) -> bool:
        return status in (400, 422) and "stream_options" in body

    def reply_message(self, turn: Turn) -> dict[str, Any] | None:
        ch = turn.choices[0]
        # a refusal is the reply: without it the refused question looks unanswered
        text, calls = ch.text or ch.refusal or "", ch.tool_calls
        if not text and not calls:
            return None
        # "" rather than null beside tool calls: OpenAI takes either, but llama.cpp's
        # server, llama-cpp-python's and SGLang refuse null, so a tool loop broke there
        msg: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or calls else None,
        }
        if calls:
            msg["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments or "{}"},
                }
                for c in calls
            ]
        return msg

    def history(
        self, turns: Sequence[Turn], system: str | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if system:
            out.append({"role": "system", "content": system})
        for turn in history_turns(turns):
            out += turn_messages(self, turn)
        return out

    def tool_messages(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [_wire(m) for m in results]


_CHOICE = {"auto": "auto", "none": "none", "required": "required"}


def _tool(spec: dict[str, Any]) -> dict[str, Any]:
    fn = {"name": spec["name"]}
    if spec.get("description"):
        fn["description"] = spec["description"]
    fn["parameters"] = spec["parameters"]
    return {"type": "function", "function": fn}


def response_format(fmt: Any) -> Any:
    """The neutral response format (``_core/structured.py``) in chat-completions form:
    ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``, the schema
    made strict-compatible when ``strict``. JSON mode and the wire form pass as they
    are."""
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return fmt
    if "json_schema" in fmt or not isinstance(fmt.get("schema"), dict):
        return fmt
    strict = fmt.get("strict") is not False
    inner: dict[str, Any] = {
        "name": fmt.get("name") or "response",
        "schema": openai_strict(fmt["schema"]) if strict else fmt["schema"],
        "strict": strict,
    }
    if fmt.get("description"):
        inner["description"] = fmt["description"]
    return {"type": "json_schema", "json_schema": inner}


def _wire(m: dict[str, Any]) -> dict[str, Any]:
    """A neutral message in chat-completions form (others pass as they are)."""
    role, content = m.get("role"), m.get("content")
    if role == "tool":
        text = content if isinstance(content, str) else text_of(content)
        if m.get("is_error"):
            text = f"Error: {text}"
        return {
            "role": "tool",
            "tool_call_id": m.get("tool_call_id", ""),
            "content": text,
        }
    out = dict(m)
    if isinstance(content, list):
        out["content"] = [_part(p) for p in content]
    if role == "assistant" and m.get("tool_calls"):
        neutral = any(
            isinstance(c, dict) and "function" not in c for c in m["tool_calls"]
        )
        if neutral and out.get("content") is None:
            out["content"] = ""  # see reply_message (OpenAI's own form goes as written)
        out["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in neutral_calls(m["tool_calls"])
        ]
    return out


def _part(p: Any) -> Any:
    img = image(p) if isinstance(p, dict) else None
    if img is None:
        return p
    media, data, url = img
    return {
        "type": "image_url",
        "image_url": {"url": url if url else f"data:{media};base64,{data}"},
    }


def _indexed(message: Any) -> Any:
    """A whole message's tool calls carry no ``index``: give them their position."""
    if type(message) is not dict or type(message.get("tool_calls")) is not list:
        return message
    calls = [
        {"index": i, **tc} if type(tc) is dict else tc
        for i, tc in enumerate(message["tool_calls"])
    ]
    return {**message, "tool_calls": calls}


PROVIDER = OpenAIProvider()
