"""Client against a real loopback server: live streaming, metrics, the request sent,
optional usage, and wire variations (gzip, framing). Sync and async alike."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from nbstream import Client, Event, TextDelta, Turn
from tests.clientkit import KEY, MODES, chat, client_for, collect, last, ok_reply
from tests.conftest import STREAMS
from tests.loopback import Gate, LoopbackServer, Reply, openai_chunks

# every test here runs on nbstream's own HTTP/1.1 client and on httpx2
pytestmark = pytest.mark.usefixtures("http")

# -- events arrive live ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_first_delta_arrives_while_the_server_still_waits(
    server: LoopbackServer, mode: str
) -> None:
    gate = Gate()
    datas = openai_chunks(["Hello", " world", "!"], usage={"completion_tokens": 3})
    reply = Reply.events(datas)
    reply.chunks.insert(2, gate)  # role chunk, "Hello", then wait for the test
    server.enqueue(reply)
    seen_live: list[tuple[str, str, bool]] = []

    def on_event(s: Any, ev: Event) -> None:
        if isinstance(ev, TextDelta) and not seen_live:
            held = server.wait_for(lambda: last(server).stalled_at is not None, 5)
            # the server is still holding the rest of the reply
            seen_live.append((s.turn.text, s.turn.status, held and not gate.is_open))
            gate.open()

    events, turn = collect(client_for(server), mode, on_event=on_event)
    assert seen_live == [("Hello", "streaming", True)]
    assert [e.text for e in events if isinstance(e, TextDelta)] == [
        "Hello",
        " world",
        "!",
    ]
    assert turn.text == "Hello world!"
    assert turn.status == "complete"
    assert turn.finish_reason == "stop"


@pytest.mark.parametrize("mode", MODES)
def test_metrics_are_plausible_and_ordered(server: LoopbackServer, mode: str) -> None:
    words = ["a", "b", "c", "d", "e"]
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    server.enqueue(Reply.events(openai_chunks(words, usage=usage), delay=0.03))
    turn = chat(client_for(server), mode)
    m = turn.metrics
    assert m.ttfb_s is not None and m.ttft_s is not None and m.elapsed_s is not None
    assert 0 < m.ttfb_s <= m.ttft_s <= m.elapsed_s < 5
    # causal lower bounds: the server sends the first word one pause after the role
    # chunk, and the end four pauses after that; the client cannot see them sooner
    assert m.ttft_s >= 0.03 * 0.95
    assert m.elapsed_s >= 5 * 0.03 * 0.95
    assert m.chunks == len(words) + 4  # role, words, finish, usage, [DONE]
    assert m.deltas == len(words) == len(m.arrivals)
    assert list(m.arrivals) == sorted(m.arrivals)
    assert m.arrivals[0] == pytest.approx(m.ttft_s, abs=1e-3)
    assert m.attempts == 1
    assert m.output_tokens == 5 and m.output_tokens_estimated is False
    tps = m.tokens_per_s  # about 33/s here; bounds loose enough for a loaded machine
    assert tps is not None and 1 < tps < 1000
    assert turn.usage is not None and turn.usage.input_tokens == 7
    assert turn.usage.estimated is False


@pytest.mark.parametrize("mode", MODES)
def test_stream_yields_every_event_and_the_turn_matches(
    server: LoopbackServer, mode: str
) -> None:
    body = (STREAMS / "openai_chat_tool_call.sse").read_bytes()
    server.enqueue(Reply.sse(body, chunk_size=37))
    events, turn = collect(client_for(server), mode)
    assert turn.status == "complete"
    assert turn.tool_calls and turn.tool_calls[0].complete
    assert any(e.type == "tool_call" for e in events)
    assert events[-1].type == "done"


# -- the request ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_openai_request_body_and_headers(server: LoopbackServer, mode: str) -> None:
    server.enqueue(ok_reply())
    client = client_for(server, headers={"x-extra": "1"})
    chat(client, mode, "What is 2+2?", system="Be terse.", temperature=0.2, seed=7)
    seen = last(server)
    assert seen.method == "POST" and seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert "text/event-stream" in seen.headers["accept"]
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-extra"] == "1"
    assert seen.json == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "temperature": 0.2,
        "seed": 7,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_model_can_be_chosen_per_request(server: LoopbackServer) -> None:
    server.enqueue(ok_reply())
    client_for(server).chat("Hi", model="other-model")
    assert last(server).json["model"] == "other-model"


@pytest.mark.parametrize("mode", MODES)
def test_anthropic_request_body_and_headers(server: LoopbackServer, mode: str) -> None:
    body = (STREAMS / "anthropic_text_minimal_padded.sse").read_bytes()
    server.enqueue(Reply.sse(body, chunk_size=50))
    client = client_for(server, api="anthropic", model="claude-test")
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
    ]
    turn = chat(client, mode, messages, temperature=0.5)
    assert turn.status == "complete" and turn.text
    seen = last(server)
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen.headers
    assert seen.json == {
        "model": "claude-test",
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "You are terse.",
        "max_tokens": 4096,
        "temperature": 0.5,
        "stream": True,
    }


def test_anthropic_max_tokens_can_be_overridden(server: LoopbackServer) -> None:
    body = (STREAMS / "anthropic_text_minimal_padded.sse").read_bytes()
    server.enqueue(Reply.sse(body))
    client_for(server, api="anthropic").chat("Hi", max_tokens=50)
    assert last(server).json["max_tokens"] == 50


def test_no_key_sends_no_authorization(server: LoopbackServer) -> None:
    server.enqueue(ok_reply())
    Client(base_url=server.base_url, model="m").chat("Hi")
    assert "authorization" not in last(server).headers


@pytest.mark.parametrize("mode", MODES)
def test_stream_options_rejected_then_remembered_for_the_base_url(
    server: LoopbackServer, mode: str
) -> None:
    rejected = Reply.json(
        400,
        {
            "error": {
                "message": "Unrecognized request argument supplied: stream_options",
                "type": "invalid_request_error",
            }
        },
    )
    server.enqueue(rejected, ok_reply(["one"]))
    turn = chat(client_for(server, max_retries=0), mode)
    assert turn.text == "one" and turn.status == "complete"
    first, second = server.requests
    assert first.json["stream_options"] == {"include_usage": True}
    assert "stream_options" not in second.json
    assert second.json["stream"] is True

    # A new request to the same base URL (even from a new client) leaves it out at once.
    server.enqueue(ok_reply(["two"]))
    assert chat(client_for(server), mode).text == "two"
    assert len(server.requests) == 3
    assert "stream_options" not in server.requests[2].json


def test_other_400s_do_not_drop_stream_options(server: LoopbackServer) -> None:
    from nbstream import APIStatusError

    server.enqueue(Reply.json(400, {"error": {"message": "bad temperature"}}))
    with pytest.raises(APIStatusError):
        client_for(server).chat("Hi")
    server.enqueue(ok_reply())
    client_for(server).chat("Hi")
    assert "stream_options" in last(server).json


# -- usage is optional --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_server_that_never_sends_usage_still_completes(
    server: LoopbackServer, mode: str
) -> None:
    # like llama.cpp's server: `: ping` comments, no usage chunk, [DONE]
    datas = openai_chunks(["The", " sky", " is", " blue"])
    body = b": ping\n\n" + b"".join(f"data: {d}\n\n".encode() for d in datas)
    server.enqueue(Reply.sse(body, chunk_size=23))
    turn = chat(client_for(server), mode)
    assert turn.status == "complete"
    assert turn.text == "The sky is blue"
    assert turn.usage is not None and turn.usage.estimated is True
    assert turn.usage.output_tokens == 4
    assert turn.usage.input_tokens and turn.usage.input_tokens > 0
    assert turn.metrics.output_tokens_estimated is True


# -- wire variations ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_gzip_encoded_stream(server: LoopbackServer, mode: str) -> None:
    body = (STREAMS / "openai_chat_text_usage.sse").read_bytes()
    server.enqueue(Reply.sse(body, gzip=True))
    turn = chat(client_for(server), mode)
    assert turn.status == "complete"
    assert turn.text
    assert turn.usage is not None and turn.usage.estimated is False


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_every_body_framing_gives_the_same_turn(
    server: LoopbackServer, framing: Any
) -> None:
    body = (STREAMS / "openai_chat_text_usage.sse").read_bytes()
    server.enqueue(Reply.sse(body, chunk_size=64, framing=framing))
    turn: Turn = client_for(server).chat("Hi")
    assert turn.status == "complete"
    expected = json.loads((STREAMS.parent / "EXPECTED.json").read_text())
    assert (
        turn.text == expected["openai_chat_text_usage.sse"]["choices"]["0"]["content"]
    )


@pytest.mark.parametrize("mode", MODES)
def test_iterating_a_finished_stream_again_ends_at_once(
    server: LoopbackServer, mode: str
) -> None:
    server.enqueue(ok_reply(["once"]))
    client = client_for(server)
    if mode == "sync":
        with client.stream("Hi") as s:
            first = list(s)
            second = list(s)  # must not wait for events that will never come
    else:

        async def go() -> tuple[list[Event], list[Event]]:
            async with client.astream("Hi") as s:
                first = [ev async for ev in s]
                second = [ev async for ev in s]
            await client.aclose()
            return first, second

        first, second = asyncio.run(asyncio.wait_for(go(), 5))
    assert any(isinstance(e, TextDelta) for e in first)
    assert second == []


async def test_sync_chat_works_inside_a_running_event_loop(
    server: LoopbackServer,
) -> None:
    """As in a notebook cell, where the kernel's loop is running in this thread."""
    server.enqueue(ok_reply(["from", " a", " cell"]))
    turn = client_for(server).chat("Hi")
    assert turn.text == "from a cell" and turn.status == "complete"


def test_a_single_number_sets_every_timeout(server: LoopbackServer) -> None:
    from nbstream import APITimeoutError

    server.enqueue(Reply(delay_headers=30.0))
    with pytest.raises(APITimeoutError) as info:
        client_for(server, timeout=0.3).chat("Hi")
    assert info.value.phase == "first_byte"
    assert "within 0.3 s" in str(info.value)


def test_raw_events_are_kept_only_when_asked(server: LoopbackServer) -> None:
    body = (STREAMS / "openrouter_comments_usage_cost.sse").read_bytes()
    server.enqueue(Reply.sse(body), Reply.sse(body))
    plain = Client(base_url=server.base_url, model="m").chat("Hi")
    assert plain.raw_events is None  # nothing per chunk is kept by default
    debug = Client(base_url=server.base_url, model="m", keep_raw_events=True).chat("Hi")
    assert debug.raw_events is not None
    datas = [e.data for e in debug.raw_events]
    assert datas[-1] == "[DONE]"
    # every data event of the body, in order (comments are not events)
    expected = [
        line[6:] for line in body.decode().splitlines() if line.startswith("data: ")
    ]
    assert datas == expected
    assert debug.text == plain.text
