"""Helpers for the tool-loop tests (not a test module): a model's streamed reply that
says some text and asks for tool calls, in either wire format, as the loopback server
sends it.

``Call("lookup", {"city": "Paris"})`` is one call; its arguments stream in pieces of
``piece`` characters, as providers send them. ``arguments=`` gives the raw JSON text
instead (to send JSON that is not valid).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tests.loopback import Reply, anthropic_chunks, openai_chunks


@dataclass
class Call:
    name: str
    input: Any = field(default_factory=dict)
    id: str | None = None
    arguments: str | None = None  # raw JSON text, when it must not be json.dumps(input)

    def text(self) -> str:
        return self.arguments if self.arguments is not None else json.dumps(self.input)


def _pieces(text: str, piece: int) -> list[str]:
    return [text[i : i + piece] for i in range(0, len(text), piece)] or [""]


def openai_call_chunks(
    calls: list[Call], *, text: str = "", piece: int = 7, usage: bool = True
) -> list[str]:
    """An OpenAI chat-completions stream: ``text``, then ``calls`` (ids ``call_N``
    unless given), finish reason ``tool_calls``."""
    base = {
        "id": "chatcmpl-t",
        "object": "chat.completion.chunk",
        "model": "test-model",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return json.dumps(
            {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        )

    out = [chunk({"role": "assistant", "content": text or None})]
    for i, c in enumerate(calls):
        head = {
            "index": i,
            "id": c.id or f"call_{i}",
            "type": "function",
            "function": {"name": c.name, "arguments": ""},
        }
        out.append(chunk({"tool_calls": [head]}))
        for p in _pieces(c.text(), piece):
            out.append(
                chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]})
            )
    out.append(chunk({}, "tool_calls"))
    if usage:
        u = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
        out.append(json.dumps({**base, "choices": [], "usage": u}))
    out.append("[DONE]")
    return out


def anthropic_call_chunks(
    calls: list[Call], *, text: str = "", piece: int = 7
) -> list[str]:
    """An Anthropic Messages stream: a text block (if ``text``), then one ``tool_use``
    block per call (ids ``toolu_N`` unless given), stop reason ``tool_use``."""
    out = [
        json.dumps(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_t",
                    "model": "test-model",
                    "usage": {"input_tokens": 20},
                },
            }
        )
    ]
    index = 0
    if text:
        out += [
            json.dumps(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
            json.dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                }
            ),
            json.dumps({"type": "content_block_stop", "index": 0}),
        ]
        index = 1
    for i, c in enumerate(calls):
        block = {
            "type": "tool_use",
            "id": c.id or f"toolu_{i}",
            "name": c.name,
            "input": {},
        }
        out.append(
            json.dumps(
                {"type": "content_block_start", "index": index, "content_block": block}
            )
        )
        for p in _pieces(c.text(), piece):
            delta = {"type": "input_json_delta", "partial_json": p}
            out.append(
                json.dumps(
                    {"type": "content_block_delta", "index": index, "delta": delta}
                )
            )
        out.append(json.dumps({"type": "content_block_stop", "index": index}))
        index += 1
    out += [
        json.dumps(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 10},
            }
        ),
        json.dumps({"type": "message_stop"}),
    ]
    return out


def calls_reply(api: str, calls: list[Call], **kw: Any) -> Reply:
    chunks = anthropic_call_chunks if api == "anthropic" else openai_call_chunks
    return Reply.events(chunks(calls, **kw))


def text_reply(api: str, words: list[str]) -> Reply:
    if api == "anthropic":
        return Reply.events(anthropic_chunks(words))
    usage = {"prompt_tokens": 30, "completion_tokens": len(words), "total_tokens": 40}
    return Reply.events(openai_chunks(words, usage=usage))


def call_id(api: str, i: int) -> str:
    return f"toolu_{i}" if api == "anthropic" else f"call_{i}"
