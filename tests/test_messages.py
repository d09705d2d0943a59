"""The neutral message format, as each wire format receives it: images, tool calls and
tool results, and messages already written for one provider sent to the other."""

from __future__ import annotations

from typing import Any

from nbstream._core.providers import provider_for

IMAGE = {"type": "image", "media_type": "image/png", "data": "iVBORw0KGgo="}
CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "text", "text": "What is this?"}, IMAGE]},
    {
        "role": "assistant",
        "content": "Let me look it up.",
        "tool_calls": [
            {"id": "call_1", "name": "lookup", "arguments": '{"q": "png"}'},
            {"id": "call_2", "name": "size", "arguments": "{}"},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": "A logo."},
    {
        "role": "tool",
        "tool_call_id": "call_2",
        "name": "size",
        "content": "ValueError: no size",
        "is_error": True,
    },
]


def body(api: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = provider_for(api).body("m", messages, None, {})[
        "messages"
    ]  # type: ignore[arg-type]
    return out


def test_openai_gets_image_urls_function_calls_and_tool_messages() -> None:
    user, assistant, r1, r2 = body("openai", CONVERSATION)
    assert user["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }
    assert assistant["tool_calls"][0] == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "png"}'},
    }
    assert r1 == {"role": "tool", "tool_call_id": "call_1", "content": "A logo."}
    assert r2["content"] == "Error: ValueError: no size"


def test_anthropic_gets_image_blocks_tool_use_and_one_user_message_of_results() -> None:
    user, assistant, results = body("anthropic", CONVERSATION)
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert assistant["content"] == [
        {"type": "text", "text": "Let me look it up."},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "png"}},
        {"type": "tool_use", "id": "call_2", "name": "size", "input": {}},
    ]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "A logo."},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": "ValueError: no size",
                "is_error": True,
            },
        ],
    }


def test_messages_written_for_openai_reach_anthropic_in_its_form() -> None:
    written = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hi"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": "ok"},
    ]
    user, assistant, result = body("anthropic", written)
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://x.test/a.png"},
    }
    assert assistant["content"] == [
        {"type": "tool_use", "id": "c", "name": "f", "input": {}}
    ]
    assert result["content"][0]["tool_use_id"] == "c"
    # and the same messages go to OpenAI as they were written
    assert body("openai", written)[1]["tool_calls"] == written[1]["tool_calls"]
