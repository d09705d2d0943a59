"""A reply survives a broken stream: fallback before the first token, and recovery once
output has started (restart, prefill, user_turn), against real loopback servers, for
both wire formats and a mixed list (OpenAI-compatible → Anthropic).

Each test checks what a user would: the stitched ``turn.text`` (no repeated overlap, no
lost characters), ``turn.attempts``, the exact requests each strategy sent, and that no
connection was left open.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from nbstream import (
    APIConnectionError,
    APIStatusError,
    Client,
    ConfigurationError,
    Conversation,
    TextDelta,
    Timeouts,
)
from nbstream._core.events import AttemptStart
from nbstream._core.recovery import CONTINUE_PROMPT
from tests.clientkit import MODES, chat, collect, wait_stalled
from tests.loopback import (
    DROP,
    STALL,
    LoopbackServer,
    Reply,
    anthropic_chunks,
    openai_chunks,
)

KEY_A, KEY_B = "sk-test-AAAAAAAAAAAAAAAAAAAAAAAA", "sk-test-BBBBBBBBBBBBBBBBBBBBBBBB"
PART = ["The report", " covers", " three", " quarters", " of", " growth"]
PARTIAL = "".join(PART)
# a continuation restates the last words before it goes on
MORE = [" three quarters of growth", " and", " one", " loss."]
STITCHED = PARTIAL + " and one loss."
FRESH = ["A fresh", " answer."]


def chunks(api: str, words: list[str], **kw: Any) -> list[str]:
    return (anthropic_chunks if api == "anthropic" else openai_chunks)(words, **kw)


def broken(api: str, how: str) -> Reply:
    """A reply that says PART and then breaks ``how``."""
    datas = chunks(
        api,
        PART,
        **({"stop": None} if api == "anthropic" else {"finish": None}),
        done=False,
    )
    reply = Reply.events(datas)
    if how == "drop":
        reply.chunks.append(DROP)
    elif how == "stall":
        reply.chunks.append(STALL)
    elif how == "error_event":
        err = (
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }
            if api == "anthropic"
            else {"error": {"message": "upstream overloaded", "type": "server_error"}}
        )
        reply.chunks.append(f"data: {json.dumps(err)}\n\n".encode())
    # "incomplete": the body just ends (no finish reason, no end marker)
    return reply


def answer(api: str, words: list[str]) -> Reply:
    return Reply.events(chunks(api, words))


def sent(server: LoopbackServer, i: int) -> dict[str, Any]:
    body: dict[str, Any] = server.requests[i].json
    return body


def all_closed(*servers: LoopbackServer) -> bool:
    return all(
        srv.wait_for(
            lambda s=srv: all(r.finished_at is not None for r in s.requests), 5
        )
        for srv in servers
    )


# -- fallback before the first token ------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_failing_model_falls_back_to_the_next_before_any_output(
    server: LoopbackServer, mode: str
) -> None:
    server.enqueue(
        Reply.json(503, {"error": {"message": "overloaded"}}),
        Reply.json(503, {"error": {"message": "overloaded"}}),
        answer("openai", ["Hello from B"]),
    )
    client = Client(
        base_url=server.base_url,
        api_key=KEY_A,
        model="model-a",
        fallbacks=["model-b"],
        max_retries=1,
        retry_delay=0.0,
    )
    turn = chat(client, mode)
    assert turn.status == "complete" and turn.text == "Hello from B"
    assert [sent(server, i)["model"] for i in range(3)] == [
        "model-a",
        "model-a",
        "model-b",
    ]
    a, b = turn.attempts
    assert (a.model, a.status, a.strategy) == ("model-a", "error", "first")
    assert a.error is not None and "503" in a.error.message
    assert a.metrics.attempts == 2  # its retries are one attempt
    assert (b.model, b.status, b.strategy) == ("model-b", "complete", "fallback")
    assert b.span == (0, len("Hello from B")) and a.span is None
    assert not turn.recovered  # nothing had been shown before the fallback


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_client_error_does_not_fall_back_and_says_why(
    server: LoopbackServer, status: int
) -> None:
    server.enqueue(Reply.json(status, {"error": {"message": "no such thing"}}))
    client = Client(base_url=server.base_url, api_key=KEY_A, model="a", fallbacks=["b"])
    with pytest.raises(APIStatusError) as info:
        client.chat("Hi")
    assert len(server.requests) == 1
    assert "no fallback tried" in str(info.value)
    assert f"HTTP {status} is about the request itself" in str(info.value)


def test_a_long_retry_after_moves_to_the_next_entry_at_once(
    server: LoopbackServer,
) -> None:
    server.enqueue(
        Reply.json(429, {"error": {"message": "slow down"}}, {"retry-after": "600"}),
        answer("openai", ["B"]),
    )
    client = Client(base_url=server.base_url, model="a", fallbacks=["b"])
    turn = client.chat("Hi")
    assert turn.text == "B" and len(server.requests) == 2


def test_a_dead_server_falls_back_to_another_client_and_format() -> None:
    """A connection refused on the first server; the second speaks Anthropic. Each key
    goes only to its own server."""
    with LoopbackServer() as b:
        b.enqueue(answer("anthropic", ["Claude here"]))
        other = Client(
            base_url=b.base_url, api_key=KEY_B, model="claude", api="anthropic"
        )
        client = Client(
            base_url="http://127.0.0.1:9/v1",
            api_key=KEY_A,
            model="gpt",
            fallbacks=[other],
            max_retries=0,
        )
        turn = client.chat("Hi")
        assert turn.text == "Claude here" and turn.model == "test-model"
        (seen,) = b.requests
        assert seen.headers["x-api-key"] == KEY_B
        assert KEY_A not in json.dumps(seen.headers) + seen.body.decode()
        assert [a.api for a in turn.attempts] == ["openai", "anthropic"]
        assert turn.attempts[0].error is not None
        assert turn.attempts[0].error.kind == "APIConnectionError"


# -- recovery once output has started ---------------------------------------------------

BREAKS = ["drop", "error_event", "stall", "incomplete"]
STRATEGIES = ["restart", "prefill", "user_turn"]


def _expected_messages(strategy: str, api: str) -> list[dict[str, Any]]:
    first = [{"role": "user", "content": "Write the report"}]
    if strategy == "restart":
        return first
    said = PARTIAL.rstrip() if api == "anthropic" else PARTIAL
    out = [*first, {"role": "assistant", "content": said}]
    if strategy == "user_turn":
        out.append({"role": "user", "content": CONTINUE_PROMPT})
    return out


@pytest.mark.parametrize("how", BREAKS)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("api", ["openai", "anthropic", "mixed"])
def test_a_broken_reply_is_recovered(
    server: LoopbackServer, how: str, strategy: str, api: str
) -> None:
    first_api = "openai" if api == "mixed" else api
    second_api = "anthropic" if api == "mixed" else api
    with LoopbackServer() as other:
        server.enqueue(broken(first_api, how))
        words = FRESH if strategy == "restart" else MORE
        other.enqueue(answer(second_api, words))
        fallback = Client(
            base_url=other.base_url, api_key=KEY_B, model="model-b", api=second_api
        )
        client = Client(
            base_url=server.base_url,
            api_key=KEY_A,
            model="model-a",
            api=first_api,
            fallbacks=[fallback],
            recover=strategy,
            timeout=Timeouts(idle=0.3),
        )
        events, turn = collect(client, "sync", "Write the report")
        assert turn.status == "complete" and turn.recovered
        want = "".join(FRESH) if strategy == "restart" else STITCHED
        assert turn.text == want
        a, b = turn.attempts
        assert a.text == PARTIAL and a.status in ("error", "incomplete")
        assert b.strategy == strategy and b.status == "complete"
        if strategy == "restart":
            assert a.span is None and b.span == (0, len(want))
        else:
            assert a.span == (0, len(PARTIAL)) and b.span == (len(PARTIAL), len(want))
        assert sent(other, 0)["messages"] == _expected_messages(strategy, second_api)
        assert sent(other, 0)["model"] == "model-b"
        # the live view: text never taken back, one marker saying who took over and why
        (marker,) = [e for e in events if isinstance(e, AttemptStart)]
        assert marker.model == "model-b" and marker.superseded == (
            strategy == "restart"
        )
        assert f"at {len(PARTIAL):,} characters" in marker.reason
        shown = "".join(
            e.text for e in events[events.index(marker) :] if isinstance(e, TextDelta)
        )
        assert shown == (want if strategy == "restart" else want[len(PARTIAL) :])
        assert all_closed(server, other)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_break_at_any_byte_loses_no_character(
    server: LoopbackServer, seed: int, api: str
) -> None:
    """The stream breaks at a random byte; the same model continues from exactly what
    it was sent (prefill): the stitched reply is the whole reply, character for
    character."""
    words = [*PART, " and more", ".", " The end."]
    full = "".join(words)
    body = "".join(f"data: {d}\n\n" for d in chunks(api, words)).encode()
    cut = random.Random(seed).randrange(len(body) // 4, len(body) - 30)

    def resume(seen: Any) -> Reply:
        last = seen.json["messages"][-1]
        said = last["content"] if last["role"] == "assistant" else ""
        assert full.startswith(said)
        rest = full[len(said) :]
        return answer(api, [rest[: len(rest) // 2], rest[len(rest) // 2 :]])

    server.enqueue(Reply(chunks=[body[:cut], DROP]), resume)
    client = Client(
        base_url=server.base_url,
        model="m",
        api=api,
        fallbacks=["m"],  # the same model again: resume
        recover="prefill",
        retry_delay=0.0,
    )
    turn = client.chat("Write the report")
    assert turn.status == "complete"
    assert turn.text == full
    a, b = turn.attempts
    assert full.startswith(a.text)
    assert b.strategy == ("prefill" if a.text else "fallback")


def test_a_refused_prefill_is_asked_again_as_a_user_turn(
    server: LoopbackServer,
) -> None:
    server.enqueue(
        broken("openai", "drop"),
        Reply.json(
            400,
            {
                "error": {
                    "message": "The last message must be a user message, not assistant"
                }
            },
        ),
        answer("openai", MORE),
    )
    client = Client(
        base_url=server.base_url,
        model="m",
        fallbacks=["m"],
        recover="prefill",
        retry_delay=0,
    )
    turn = client.chat("Write the report")
    assert turn.text == STITCHED
    _, refused, asked = turn.attempts
    assert refused.strategy == "prefill" and refused.status == "error"
    assert refused.note is not None and "asked again as a user turn" in refused.note
    assert asked.strategy == "user_turn"
    assert sent(server, 2)["messages"][-1] == {
        "role": "user",
        "content": CONTINUE_PROMPT,
    }


def test_without_recover_a_break_keeps_the_partial_reply_as_an_error(
    server: LoopbackServer,
) -> None:
    server.enqueue(broken("openai", "drop"))
    client = Client(base_url=server.base_url, model="a", fallbacks=["b"])
    with pytest.raises(APIConnectionError) as info:
        client.chat("Hi")
    turn = info.value.turn
    assert turn is not None and turn.status == "error" and turn.text == PARTIAL
    assert len(server.requests) == 1
    assert "recover= is not set" in str(info.value)


def test_every_attempt_failing_keeps_every_partial_reply(
    server: LoopbackServer,
) -> None:
    server.enqueue(broken("openai", "drop"), broken("openai", "drop"))
    client = Client(
        base_url=server.base_url,
        model="a",
        fallbacks=["b"],
        recover="restart",
        retry_delay=0,
    )
    with pytest.raises(APIConnectionError) as info:
        client.chat("Hi")
    turn = info.value.turn
    assert turn is not None and turn.status == "error"
    assert [a.text for a in turn.attempts] == [PARTIAL, PARTIAL]
    assert "attempt 2 of 2" in str(info.value) and "no fallback was left" in str(
        info.value
    )


@pytest.mark.parametrize("mode", MODES)
def test_stop_in_the_middle_of_a_recovery_stops_every_attempt(
    server: LoopbackServer, mode: str
) -> None:
    second = Reply.events(
        openai_chunks([" three quarters of growth"], finish=None, done=False)
    )
    second.chunks.append(STALL)
    server.enqueue(broken("openai", "drop"), second)
    client = Client(
        base_url=server.base_url,
        model="a",
        fallbacks=["b"],
        recover="prefill",
        retry_delay=0,
    )

    def stop_in_second(s: Any, ev: Any) -> None:
        if len(server.requests) == 2 and wait_stalled(server):
            s.cancel()

    _, turn = collect(client, mode, "Hi", on_event=stop_in_second)
    assert turn.status == "cancelled"
    assert turn.text.startswith(PARTIAL)
    assert [a.status for a in turn.attempts] == ["error", "cancelled"]
    assert all_closed(server)
    assert server.requests[1].client_closed_at is not None


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fallbacks", "says"),
    [
        ([42], r"fallbacks\[0\] is int"),
        ([""], "empty model name"),
        ("recover", None),
    ],
)
def test_a_bad_fallback_entry_fails_when_configured(
    fallbacks: Any, says: str | None
) -> None:
    if fallbacks == "recover":
        with pytest.raises(ConfigurationError, match="'resume' is not a strategy"):
            Client(base_url="http://127.0.0.1:1/v1", recover="resume")
        return
    with pytest.raises(ConfigurationError, match=says):
        Client(base_url="http://127.0.0.1:1/v1", fallbacks=fallbacks)


def test_a_fallback_to_an_official_host_without_a_key_fails_when_configured() -> None:
    keyless = Client(
        base_url="https://api.anthropic.com/v1", api="anthropic", model="c"
    )
    with pytest.raises(ConfigurationError, match="ANTHROPIC_API_KEY"):
        Client(base_url="http://127.0.0.1:1/v1", fallbacks=[keyless])


def test_a_conversation_goes_on_after_a_recovered_turn(server: LoopbackServer) -> None:
    server.enqueue(
        broken("openai", "drop"), answer("openai", MORE), answer("openai", ["Sure."])
    )
    client = Client(
        base_url=server.base_url,
        model="m",
        fallbacks=["m"],
        recover="prefill",
        retry_delay=0,
    )
    conv = Conversation(client)
    assert conv.send("Write the report").text == STITCHED
    assert conv.send("Thanks").text == "Sure."
    history = sent(server, 2)["messages"]
    assert history[1] == {
        "role": "assistant",
        "content": STITCHED,
    }  # the stitched reply


def test_the_magic_takes_a_model_list_and_a_recovery(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.error import UsageError

    from nbstream._notebook.magics import ChatMagics

    monkeypatch.setenv("NBSTREAM_BASE_URL", server.base_url)
    magics = ChatMagics(shell=None)
    client = magics.client_for(magics.options("-m model-a,model-b --recover prefill"))
    assert client.model == "model-a" and client.recover == "prefill"
    assert [e.model for e in client.fallbacks] == ["model-b"]
    server.enqueue(broken("openai", "drop"), answer("openai", MORE))
    assert client.chat("Write the report").text == STITCHED
    assert sent(server, 1)["model"] == "model-b"
    with pytest.raises(UsageError, match="empty model name"):
        magics.client_for(magics.options("-m model-a,"))
