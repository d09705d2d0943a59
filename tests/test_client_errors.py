"""What a user sees when things go wrong: HTTP errors with the provider's words, bodies
that are not streams, errors mid-stream, truncated and malformed streams, drops."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nbstream import (
    APIConnectionError,
    APIStatusError,
    Conversation,
    EventTooLargeError,
    NotAStreamError,
    ProviderStreamError,
    Transcript,
)
from tests.clientkit import (
    MODES,
    chat,
    client_for,
    error_fixture,
    last,
    ok_reply,
    reply_from_error_fixture,
    stalling,
)
from tests.conftest import STREAMS, expected
from tests.loopback import DROP, LoopbackServer, Reply, openai_chunks

# every test here runs on nbstream's own HTTP/1.1 client and on httpx2
pytestmark = pytest.mark.usefixtures("http")

# -- non-2xx answers ----------------------------------------------------------------------

CASES = [
    # fixture, api, what the provider said, request id, a word of the fix
    (
        "openai_400_unsupported_value.json",
        "openai",
        "does not support 'system' with this model",
        None,
        "provider's message",
    ),
    (
        "groq_400_tool_use_failed.json",
        "openai",
        "Tool call validation failed",
        None,
        "provider's message",
    ),
    (
        "anthropic_404_not_found.json",
        "anthropic",
        "model: claude-does-not-exist",
        "req_011CVEA3SF7rnb3DuBZytqQa",
        "Check the model name",
    ),
    (
        "openrouter_429_upstream_rate_limited.json",
        "openai",
        "temporarily rate-limited upstream",
        None,
        "Rate limited",
    ),
]


@pytest.mark.parametrize(("name", "api", "said", "request_id", "fix"), CASES)
@pytest.mark.parametrize("mode", MODES)
def test_recorded_error_bodies(
    server: LoopbackServer,
    mode: str,
    name: str,
    api: str,
    said: str,
    request_id: str | None,
    fix: str,
) -> None:
    server.enqueue(reply_from_error_fixture(name))
    client = client_for(server, api=api, max_retries=0)
    with pytest.raises(APIStatusError) as info:
        chat(client, mode)
    exc = info.value
    status = error_fixture(name)["status"]["code"]
    assert exc.status_code == status
    assert exc.provider_message is not None and said in exc.provider_message
    assert exc.request_id == request_id
    msg = str(exc)
    assert f"HTTP {status}" in msg and said in msg and fix in msg
    assert server.base_url in msg
    # the turn is kept, marked failed, with the same facts
    turn = exc.turn
    assert turn is not None and turn.status == "error"
    assert turn.error is not None and turn.error.status_code == status
    assert turn.error.kind == "APIStatusError"
    assert len(server.requests) == 1


@pytest.mark.parametrize("header", ["x-request-id", "request-id"])
def test_request_id_from_headers(server: LoopbackServer, header: str) -> None:
    server.enqueue(
        Reply.json(401, {"error": {"message": "bad key"}}, {header: "rid-42"})
    )
    with pytest.raises(APIStatusError) as info:
        client_for(server).chat("Hi")
    assert info.value.request_id == "rid-42"
    assert "rid-42" in str(info.value)
    assert info.value.turn is not None and info.value.turn.error is not None
    assert info.value.turn.error.request_id == "rid-42"


def test_401_says_to_check_the_key(server: LoopbackServer) -> None:
    server.enqueue(
        Reply.json(401, {"error": {"message": "Incorrect API key provided"}})
    )
    with pytest.raises(APIStatusError) as info:
        client_for(server).chat("Hi")
    msg = str(info.value)
    assert "Incorrect API key provided" in msg
    assert "api_key=" in msg and "OPENAI_API_KEY" in msg


def test_429_reports_retry_after(server: LoopbackServer) -> None:
    server.enqueue(
        reply_from_error_fixture(
            "openrouter_429_upstream_rate_limited.json", **{"retry-after": "7"}
        )
    )
    with pytest.raises(APIStatusError) as info:
        client_for(server, max_retries=0).chat("Hi")
    assert info.value.retry_after == 7.0
    assert "retry after 7 s" in str(info.value)
    assert info.value.turn is not None and info.value.turn.error is not None
    assert info.value.turn.error.retry_after == 7.0


def test_a_non_json_error_body_is_shown_as_text(server: LoopbackServer) -> None:
    server.enqueue(
        Reply(
            status=502,
            headers={"content-type": "text/html"},
            chunks=[b"<html>upstream connect error</html>"],
            framing="length",
        )
    )
    with pytest.raises(APIStatusError) as info:
        client_for(server, max_retries=0).chat("Hi")
    assert info.value.status_code == 502
    assert "upstream connect error" in str(info.value)
    assert "try again later" in str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_a_200_that_is_not_an_event_stream(server: LoopbackServer, mode: str) -> None:
    server.enqueue(
        Reply(
            200,
            headers={"content-type": "text/html"},
            chunks=[b"<html><body>chatcmpl-1 login page</body></html>"],
        )
    )
    with pytest.raises(NotAStreamError) as info:
        chat(client_for(server), mode)
    msg = str(info.value)
    assert "text/html" in msg and "text/event-stream" in msg
    assert "chatcmpl-1" in msg  # shows what came instead
    assert "/v1" in msg  # and how to fix the base URL
    assert info.value.turn is not None and info.value.turn.status == "error"
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_server_that_ignores_stream_true_gives_its_whole_answer(
    server: LoopbackServer, mode: str, api: str
) -> None:
    """Many gateways answer ``stream: true`` with one JSON completion: that completion
    is the reply, marked as not streamed."""
    if api == "openai":
        body: dict[str, Any] = {
            "id": "chatcmpl-1",
            "model": "served-model",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hi there",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a": 1}'},
                            }
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }
    else:
        body = {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "served-model",
            "content": [
                {"type": "text", "text": "Hi there"},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 5, "output_tokens": 3},
        }
    server.enqueue(Reply.json(200, body))
    turn = chat(client_for(server, api=api), mode)
    assert turn.status == "complete" and turn.streamed is False
    assert turn.text == "Hi there" and turn.model == "served-model"
    assert [(c.id, c.name, c.input) for c in turn.tool_calls] == [
        ("call_1", "f", {"a": 1})
    ]
    assert turn.usage is not None and not turn.usage.estimated
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (5, 3)
    assert turn.finish_reason in ("tool_calls", "tool_use")
    assert Transcript.from_json(Transcript([turn]).to_json()).turns[0].streamed is False


# -- errors and oddities inside the stream --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_error_event_mid_stream_keeps_the_partial_reasoning(
    server: LoopbackServer, mode: str
) -> None:
    name = "groq_midstream_error_event.sse"
    server.enqueue(Reply.sse((STREAMS / name).read_bytes(), chunk_size=512))
    with pytest.raises(ProviderStreamError) as info:
        chat(client_for(server), mode)
    exc = info.value
    assert "Tool call validation failed" in str(exc)
    assert "partial reply is kept" in str(exc)
    turn = exc.turn
    assert turn is not None and turn.status == "error"
    assert turn.reasoning == expected()[name]["choices"]["0"]["reasoning"]
    assert turn.error is not None and turn.error.code == "tool_use_failed"
    assert turn.metrics.elapsed_s is not None


@pytest.mark.parametrize("mode", MODES)
def test_stream_that_just_ends_is_incomplete(server: LoopbackServer, mode: str) -> None:
    server.enqueue(Reply.events(openai_chunks(["Half", " a"], finish=None, done=False)))
    turn = chat(client_for(server), mode)  # no exception: the text is usable
    assert turn.status == "incomplete"
    assert turn.text == "Half a"
    assert any("cut short" in w for w in turn.warnings)


def test_last_event_without_its_blank_line_still_counts(
    server: LoopbackServer,
) -> None:
    datas = openai_chunks(["All", " here"], done=False)
    body = "".join(f"data: {d}\n\n" for d in datas).rstrip("\n").encode()
    server.enqueue(Reply.sse(body, chunk_size=40))
    turn = client_for(server).chat("Hi")
    assert turn.status == "complete"
    assert turn.finish_reason == "stop"
    assert turn.text == "All here"


@pytest.mark.parametrize("mode", MODES)
def test_malformed_chunk_is_a_warning_and_the_stream_goes_on(
    server: LoopbackServer, mode: str
) -> None:
    datas = openai_chunks(["before", " after"])
    datas.insert(2, '{"choices": [{"delta": {"content": "bro')  # cut-off JSON
    server.enqueue(Reply.events(datas))
    turn = chat(client_for(server), mode)
    assert turn.status == "complete"
    assert turn.text == "before after"
    assert len(turn.warnings) == 1 and "not JSON" in turn.warnings[0]


@pytest.mark.parametrize("mode", MODES)
def test_oversized_event(server: LoopbackServer, mode: str) -> None:
    big = json.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 5000}}]})
    reply = Reply.events([*openai_chunks(["ok"], finish=None, done=False), big])
    server.enqueue(reply)
    with pytest.raises(EventTooLargeError) as info:
        chat(client_for(server, max_event_size=1000), mode)
    assert "1000 bytes" in str(info.value)
    assert "max_event_size" in str(info.value)
    turn = info.value.turn
    assert turn is not None and turn.status == "error" and turn.text == "ok"

    # the same event is fine with a larger limit
    server.enqueue(Reply.events([big, "[DONE]"]))
    assert len(chat(client_for(server, max_event_size=10_000), mode).text) == 5000


@pytest.mark.parametrize("mode", MODES)
def test_connection_dropped_mid_stream(server: LoopbackServer, mode: str) -> None:
    reply = Reply.events(openai_chunks(["Some", " text"], finish=None, done=False))
    reply.chunks.append(DROP)
    server.enqueue(reply, ok_reply(["must not be asked"]))
    with pytest.raises(APIConnectionError) as info:
        chat(client_for(server), mode)
    msg = str(info.value)
    assert "broke" in msg and "partial reply is kept" in msg
    turn = info.value.turn
    assert turn is not None
    assert turn.status == "error" and turn.text == "Some text"
    assert turn.error is not None and turn.error.kind == "APIConnectionError"
    assert len(server.requests) == 1  # output had started: never retried


# -- the conversation keeps every turn -------------------------------------------------------


def test_conversation_records_failed_and_stopped_turns(server: LoopbackServer) -> None:
    conv = Conversation(client_for(server, max_retries=0), system="Be brief.")
    server.enqueue(ok_reply(["Paris."]))
    conv.send("Capital of France?")
    server.enqueue(Reply.json(400, {"error": {"message": "context too long"}}))
    with pytest.raises(APIStatusError):
        conv.send("A very long question")
    server.enqueue(stalling(["Ber", "lin"]))
    with conv.stream("Capital of Germany?") as s:
        for _ev in s:
            if s.turn.text == "Berlin":
                s.cancel()
    assert [t.status for t in conv.transcript] == ["complete", "error", "cancelled"]
    failed = conv.transcript[1]
    assert failed.error is not None and "context too long" in failed.error.message
    assert conv.transcript[2].text == "Berlin"

    # the failed turn is left out of the history; the stopped one is kept
    assert conv.transcript.to_messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Capital of Germany?"},
        {"role": "assistant", "content": "Berlin"},
    ]
    # and that is what the next request sends
    server.enqueue(ok_reply(["Rome."]))
    conv.send("And Italy?")
    sent = last(server).json["messages"]
    assert [m["content"] for m in sent] == [
        "Be brief.",
        "Capital of France?",
        "Paris.",
        "Capital of Germany?",
        "Berlin",
        "And Italy?",
    ]
    # the whole record survives a JSON round trip
    again = Transcript.from_json(conv.transcript.to_json())
    assert [t.status for t in again] == ["complete", "error", "cancelled", "complete"]


async def test_async_conversation_records_a_failed_turn(
    server: LoopbackServer,
) -> None:
    client = client_for(server, max_retries=0)
    conv = Conversation(client)
    server.enqueue(Reply.json(404, {"error": {"message": "no such model"}}))
    with pytest.raises(APIStatusError):
        await conv.asend("Hi")
    server.enqueue(ok_reply(["Hello"]))
    turn = await conv.asend("Hi again")
    assert [t.status for t in conv.transcript] == ["error", "complete"]
    assert turn.text == "Hello"
    assert last(server).json["messages"] == [{"role": "user", "content": "Hi again"}]
    await client.aclose()
