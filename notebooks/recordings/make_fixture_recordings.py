"""Build the replay recordings of notebooks/tool_calls_and_reasoning.ipynb and
notebooks/providers.ipynb from real provider streams.

SmolLM2 (the local model) cannot call tools or reason, and this project holds no API
keys, so these two notebooks replay HTTP response bodies that other projects recorded
from the real APIs and committed as test fixtures (see ATTRIBUTION.md beside this file).
Each body is wrapped as an nbstream recording exchange whose request body is exactly
what the notebook's code sends, and written to ``<fixture name>.jsonl`` here, so that
``Client(..., replay="recordings/<fixture name>.jsonl")`` answers it.

The response bytes are copied unchanged; they are cut into one chunk per SSE event.
The fixtures keep no timing, so the chunks are spaced PACE seconds apart (after a
HEADERS-second wait for the headers) only so that a replay at normal speed streams
visibly; those numbers are ours, not the provider's.

    python notebooks/recordings/make_fixture_recordings.py [FIXTURES_DIR]

FIXTURES_DIR defaults to $NBSTREAM_FIXTURES, then tests/fixtures in this repository.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from nbstream._http.replay import Exchange, Recording

HERE = Path(__file__).resolve().parent
HEADERS = 0.25  # seconds before the response headers (synthetic)
PACE = 0.03  # seconds between two SSE events (synthetic)


def openai_body(
    model: str, messages: list[dict[str, Any]], **params: Any
) -> dict[str, Any]:
    """What nbstream sends to /chat/completions."""
    return {
        "model": model,
        "messages": messages,
        **params,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def anthropic_body(
    model: str, messages: list[dict[str, Any]], **params: Any
) -> dict[str, Any]:
    """What nbstream sends to /messages (max_tokens defaults to 4096)."""
    return {
        "model": model,
        "messages": messages,
        "max_tokens": 4096,
        **params,
        "stream": True,
    }


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


# -- the requests the notebooks send, and the fixture that answers each --------------

WEATHER_AND_STOCK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "GetWeatherArgs",
            "description": "Get the temperature for the given country/city combo",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "country": {"type": "string"},
                    "units": {"type": "string", "enum": ["c", "f"]},
                },
                "required": ["city", "country"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_stock_price",
            "description": "Fetch the latest price for a given ticker",
            "parameters": {
                "type": "object",
                "properties": {
                    "ticker": {"type": "string"},
                    "exchange": {"type": "string"},
                },
                "required": ["ticker", "exchange"],
            },
        },
    },
]

FIXED_VERSION_TOOL = {
    "name": "fixed_version",
    "description": "Return the version number of the software.",
    "input_schema": {"type": "object", "properties": {}},
}

# (fixture, API path, request body); tool_calls_and_reasoning.ipynb first, then providers.ipynb
RECORDINGS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "openai_chat_parallel_tool_calls.sse",
        "/chat/completions",
        openai_body(
            "gpt-4o-2024-08-06",
            [
                user("What's the weather like in Edinburgh?"),
                user("What's the price of AAPL?"),
            ],
            tools=WEATHER_AND_STOCK_TOOLS,
        ),
    ),
    (
        "anthropic_thinking_then_tool_use.sse",
        "/messages",
        anthropic_body(
            "claude-haiku-4-5-20251001",
            [
                user(
                    "Use the fixed_version tool. Then tell me the version and make "
                    "one short joke about it. Think about it first."
                )
            ],
            tools=[FIXED_VERSION_TOOL],
            thinking={"type": "enabled", "budget_tokens": 1024},
        ),
    ),
    (
        "openrouter_reasoning_details.sse",
        "/chat/completions",
        openai_body(
            "anthropic/claude-sonnet-4.5",
            [user("What is 2+2?")],
            reasoning={"enabled": True},
        ),
    ),
    (
        "openai_chat_logprobs.sse",
        "/chat/completions",
        openai_body("gpt-4o-2024-08-06", [user("Say foo")], logprobs=True),
    ),
    (
        "anthropic_adaptive_thinking_text_first.sse",
        "/messages",
        anthropic_body(
            "claude-opus-4-6",
            [user("Two names for a pet pelican, be brief")],
            thinking={"type": "adaptive"},
        ),
    ),
    (
        "vllm_crusoe_llama33.sse",
        "/chat/completions",
        openai_body(
            "meta-llama/Llama-3.3-70B-Instruct",
            [user("Count from 1 to 5, comma separated.")],
        ),
    ),
    (
        "openrouter_comments_usage_cost.sse",
        "/chat/completions",
        openai_body("anthropic/claude-sonnet-4.6", [user("Say hello.")]),
    ),
]


def events(body: bytes) -> list[bytes]:
    """The body cut after each blank line (one SSE event, or comment, a piece)."""
    pieces, start = [], 0
    while True:
        end = body.find(b"\n\n", start)
        if end < 0:
            break
        pieces.append(body[start : end + 2])
        start = end + 2
    if start < len(body):
        pieces.append(body[start:])  # a last event with no blank line after it
    assert b"".join(pieces) == body
    return pieces


def exchange(fixture: Path, path: str, body: dict[str, Any]) -> Exchange:
    data = fixture.read_bytes()
    chunks = [(HEADERS, b"")] + [(PACE, piece) for piece in events(data)]
    return Exchange(path, body, 200, {"content-type": "text/event-stream"}, chunks)


def main(argv: list[str]) -> int:
    default = (
        os.environ.get("NBSTREAM_FIXTURES") or HERE.parents[1] / "tests" / "fixtures"
    )
    streams = Path(argv[1] if len(argv) > 1 else default) / "streams"
    for fixture, path, body in RECORDINGS:
        source = streams / fixture
        out = HERE / (source.name.removesuffix(".sse") + ".jsonl")
        out.write_text(exchange(source, path, body).to_json() + "\n", encoding="utf-8")
        (ex,) = Recording.load(out).exchanges  # the bytes come back unchanged
        assert b"".join(d for _, d in ex.chunks) == source.read_bytes()
        print(f"{out.relative_to(HERE.parent)}: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
