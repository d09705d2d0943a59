"""A server can send valid JSON of any shape. Whatever it sends, only ``NbstreamError``
escapes, a wrong field is a warning that names it, and the turn always reads, saves,
reloads and goes back into the history.

Named cases first (each one broke main before the redesign), then a property: random
wrong-shaped values spliced into recorded streams of both wire formats, fed at random
chunk boundaries.
"""

from __future__ import annotations

import copy
import json
import random
import tracemalloc
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbstream import Conversation, InternalError, NbstreamError, Transcript
from nbstream._core.pipeline import Pipeline
from nbstream._core.transcript import Api, Request, Turn
from nbstream._notebook.readout import readout, readout_text
from tests.clientkit import MODES, chat, client_for
from tests.conftest import STREAMS
from tests.loopback import LoopbackServer, Reply

BASE = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "model": "m"}


def oa(**chunk: Any) -> str:
    return json.dumps({**BASE, **chunk})


def text_chunk(text: str) -> str:
    return oa(choices=[{"index": 0, "delta": {"content": text}}])


def openai_stream(*bad: str) -> list[str]:
    """A good stream ("Hello world", stop, [DONE]) with ``bad`` chunks in the middle."""
    return [
        text_chunk("Hello"),
        *bad,
        text_chunk(" world"),
        oa(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        "[DONE]",
    ]


def ant(kind: str, **rest: Any) -> str:
    return json.dumps({"type": kind, **rest})


def anthropic_stream(*bad: str) -> list[str]:
    return [
        ant(
            "message_start",
            message={"id": "msg_1", "model": "claude", "usage": {"input_tokens": 7}},
        ),
        ant("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ant(
            "content_block_delta",
            index=0,
            delta={"type": "text_delta", "text": "Hello"},
        ),
        *bad,
        ant(
            "content_block_delta",
            index=0,
            delta={"type": "text_delta", "text": " world"},
        ),
        ant("content_block_stop", index=0),
        ant(
            "message_delta",
            delta={"stop_reason": "end_turn"},
            usage={"output_tokens": 2},
        ),
        ant("message_stop"),
    ]


def assert_usable(turn: Turn) -> None:
    """What a user does with a turn: read it, save it, reload it, send it back."""
    assert isinstance(turn.text, str) and isinstance(turn.reasoning, str)
    for call in turn.tool_calls:
        assert isinstance(call.arguments, str) and isinstance(call.name, str)
    assert turn.usage is None or all(
        v is None or (isinstance(v, int) and v >= 0)
        for v in (turn.usage.input_tokens, turn.usage.output_tokens)
    )
    tr = Transcript([turn])
    back = Transcript.from_json(tr.to_json())
    assert back.to_dict() == tr.to_dict()
    for api in ("openai", "anthropic"):
        json.dumps(tr.to_messages(cast(Api, api)))
    repr(turn)
    # its cost and readout (genai-prices is given whatever usage the server sent)
    cost = turn.cost
    assert cost is None or (isinstance(cost, float) and cost >= 0)
    assert isinstance(readout_text(readout(turn)), str)


OPENAI_CASES = {
    "choices [null]": (oa(choices=[None]), "choices[]"),
    "delta a string": (oa(choices=[{"index": 0, "delta": "hi"}]), "delta"),
    "index a string": (
        oa(choices=[{"index": "0", "delta": {"content": "!"}}]),
        "index",
    ),
    "content a number": (
        oa(choices=[{"index": 0, "delta": {"content": 5}}]),
        "content",
    ),
    "usage a string": (oa(choices=[], usage="lots"), "usage"),
    "token counts as strings": (
        oa(choices=[], usage={"prompt_tokens": "3", "completion_tokens": "2"}),
        "prompt_tokens",
    ),
    "tool function a string": (
        oa(
            choices=[
                {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}}
            ]
        ),
        "function",
    ),
    "tool arguments a number": (
        oa(
            choices=[
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c",
                                "function": {"name": "f", "arguments": 7},
                            }
                        ]
                    },
                }
            ]
        ),
        "arguments",
    ),
    "finish reason a list": (
        oa(choices=[{"index": 0, "delta": {}, "finish_reason": ["stop"]}]),
        "finish_reason",
    ),
    "a chunk that is a list": ("[1, 2]", "chunk"),
}

ANTHROPIC_CASES = {
    "delta a string": (ant("content_block_delta", index=0, delta="hi"), "delta"),
    "message a string": (ant("message_start", message="hi"), "message"),
    "content_block a string": (
        ant("content_block_start", index=1, content_block="hi"),
        "content_block",
    ),
    "output_tokens a string": (
        ant("message_delta", delta={}, usage={"output_tokens": "2"}),
        "output_tokens",
    ),
    "text a number": (
        ant("content_block_delta", index=0, delta={"type": "text_delta", "text": 5}),
        "text",
    ),
    "text null": (
        ant("content_block_delta", index=0, delta={"type": "text_delta", "text": None}),
        None,
    ),
    "index a string": (
        ant(
            "content_block_delta", index="0", delta={"type": "text_delta", "text": "!"}
        ),
        "index",
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("api", "case"),
    [("openai", c) for c in OPENAI_CASES] + [("anthropic", c) for c in ANTHROPIC_CASES],
)
def test_a_wrong_shape_is_a_warning_and_the_reply_goes_on(
    server: LoopbackServer, mode: str, api: str, case: str
) -> None:
    bad, field = (OPENAI_CASES if api == "openai" else ANTHROPIC_CASES)[case]
    stream = openai_stream(bad) if api == "openai" else anthropic_stream(bad)
    server.enqueue(Reply.events(stream), Reply.events(stream))
    client = client_for(server, api=api)
    conv = Conversation(client)
    turn = conv.send("Hi") if mode == "sync" else chat(client, mode)
    assert turn.status == "complete"
    assert turn.text == "Hello world"
    if field is not None:
        assert any(field in w for w in turn.warnings), turn.warnings
    assert_usable(turn)
    if mode == "sync":  # and the conversation goes on
        assert conv.send("Again").text == "Hello world"


@pytest.mark.parametrize("mode", MODES)
def test_events_after_the_end_marker_are_not_applied(
    server: LoopbackServer, mode: str
) -> None:
    body = "".join(
        f"data: {d}\n\n" for d in [*openai_stream(), text_chunk(" and more")]
    ).encode()
    server.enqueue(Reply(chunks=[body]))  # one read: [DONE] and what follows it
    turn = chat(client_for(server), mode)
    assert turn.status == "complete" and turn.text == "Hello world"
    assert any("after the end of the reply" in w for w in turn.warnings)


def test_a_huge_choice_index_allocates_nothing() -> None:
    turn = Turn(Request([], "m", "openai", "u"))
    pipe = Pipeline("openai", turn)
    tracemalloc.start()
    pipe.feed(b'data: {"choices":[{"index":200000,"delta":{"content":"x"}}]}\n\n', 0.1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(turn.choices) == 1 and turn.text == ""
    assert peak < 1_000_000, f"{peak} bytes for one 60-byte chunk"
    assert any("index 200000" in w for w in turn.warnings)


@pytest.mark.parametrize("mode", MODES)
def test_a_bug_of_ours_ends_the_turn_as_error_not_as_stopped(
    server: LoopbackServer, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbstream._core import accumulate

    real = accumulate.Accumulator.apply

    def flaky(self: Any, ev: Any, now: float) -> None:
        if getattr(ev, "text", None) == " world":
            raise RuntimeError("boom")
        real(self, ev, now)

    monkeypatch.setattr(accumulate.Accumulator, "apply", flaky)
    server.enqueue(Reply.events(openai_stream()))
    with pytest.raises(InternalError) as info:
        chat(client_for(server), mode)
    turn = info.value.turn
    assert turn is not None and turn.status == "error"
    assert turn.text == "Hello"  # the partial reply is kept
    assert "RuntimeError: boom" in str(info.value) and "bug" in str(info.value)


# -- the property ----------------------------------------------------------------------

SOURCES = {
    "openai": [
        "openai_chat_parallel_tool_calls.sse",
        "openai_chat_text_usage.sse",
        "openrouter_reasoning_details.sse",
        "openai_chat_n3_interleaved.sse",
        "mistral_magistral_content_parts_thinking.sse",
    ],
    "anthropic": [
        "anthropic_thinking_then_tool_use.sse",
        "anthropic_web_search_citations.sse",
        "anthropic_parallel_tool_use_empty_input.sse",
    ],
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["index", "type", "text", "delta", "x"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def corrupt(body: bytes, rnd: random.Random, values: list[Any]) -> bytes:
    """Replace random fields of random events of ``body`` with ``values``."""
    blocks = body.decode("utf-8").split("\n\n")
    for value in values:
        i = rnd.randrange(len(blocks))
        lines = blocks[i].split("\n")
        for j, line in enumerate(lines):
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                obj = json.loads(line[5:])
                paths = _paths(obj)
                if not paths:
                    continue
                obj = copy.deepcopy(obj)
                _set(obj, rnd.choice(paths), value)
                lines[j] = "data: " + json.dumps(obj)
                break
        blocks[i] = "\n".join(lines)
    return "\n\n".join(blocks).encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    api=st.sampled_from(["openai", "anthropic"]),
    which=st.integers(0, 10),
    values=st.lists(json_values, min_size=1, max_size=6),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_wrong_shape_leaves_a_turn_that_reads_saves_and_reloads(
    api: str, which: int, values: list[Any], seed: int
) -> None:
    names = SOURCES[api]
    body = (STREAMS / names[which % len(names)]).read_bytes()
    rnd = random.Random(seed)
    data = corrupt(body, rnd, values)
    turn = Turn(Request([], "m", cast(Api, api), "u"))
    pipe = Pipeline(cast(Api, api), turn)
    try:
        i = 0
        while i < len(data):
            n = rnd.randint(1, 200)
            pipe.feed(data[i : i + n], 0.0)
            i += n
        pipe.close(1.0)
    except NbstreamError:
        pipe.abort(1.0)
    assert turn.status != "cancelled"
    assert_usable(turn)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    api=st.sampled_from(["openai", "anthropic"]),
    values=st.lists(json_values, min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_through_the_client_only_nbstream_errors_escape(
    server: LoopbackServer, api: str, values: list[Any], seed: int
) -> None:
    body = (STREAMS / SOURCES[api][seed % len(SOURCES[api])]).read_bytes()
    data = corrupt(body, random.Random(seed), values)
    server.enqueue(Reply.sse(data, chunk_size=97))
    try:
        turn = client_for(server, api=api).chat("Hi")
    except NbstreamError as exc:
        assert exc.turn is not None
        turn = exc.turn
    assert turn.status in ("complete", "incomplete", "error")
    assert_usable(turn)


# -- the numbers a provider sends -----------------------------------------------------------


def test_anthropic_placeholder_output_tokens_are_not_shown_as_real(
    server: LoopbackServer,
) -> None:
    """message_start carries ``output_tokens: 1`` before anything is generated: while
    the reply streams and after a Stop, the output count is the deltas, estimated."""
    from tests.clientkit import wait_stalled
    from tests.loopback import STALL

    start = ant(
        "message_start",
        message={
            "id": "m",
            "model": "claude",
            "usage": {"input_tokens": 25, "output_tokens": 1},
        },
    )
    deltas = [
        ant("content_block_delta", index=0, delta={"type": "text_delta", "text": w})
        for w in ["a", " b", " c", " d", " e"]
    ]
    reply = Reply.events([start, *deltas])
    reply.chunks.append(STALL)
    server.enqueue(reply)
    with client_for(server, api="anthropic").stream("Hi") as s:
        for _ in s:
            if s.turn.text == "a b c d e":
                wait_stalled(server)
                usage = s.turn.usage
                assert usage is not None and usage.output_tokens is None
                assert usage.input_tokens == 25
                s.cancel()
    u = s.turn.usage
    assert s.turn.status == "cancelled"
    assert u is not None and u.output_tokens == 5 and u.estimated
    assert u.input_tokens == 25


def test_anthropic_server_fallback_names_the_model_that_wrote_the_reply() -> None:
    from tests.conftest import FIXTURES

    data = (FIXTURES / "extra" / "anthropic_server_fallback.sse").read_bytes()
    turn = Turn(Request([], "claude-opus-4-7", "anthropic", "u"))
    pipe = Pipeline("anthropic", turn)
    pipe.feed(data, 0.1)
    pipe.close(0.2)
    assert turn.text == "Hello there!" and turn.status == "complete"
    assert turn.model == "claude-sonnet-4-5"  # not the one asked for, which declined
    (handover,) = turn.extra["fallbacks"]
    assert handover["from"]["model"] == "claude-opus-4-7"
    assert handover["trigger"]["type"] == "refusal"
    assert turn.usage is not None and turn.usage.output_tokens == 8


usage_values = st.one_of(
    json_values,
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 10**9, 10**15, 2**63, 10**30]),
)
usage_keys = st.sampled_from(
    [
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "server_tool_use",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    api=st.sampled_from(["openai", "anthropic"]),
    usage=st.dictionaries(
        usage_keys,
        usage_values
        | st.dictionaries(
            st.sampled_from(
                ["cached_tokens", "reasoning_tokens", "ephemeral_1h_input_tokens"]
            ),
            usage_values,
        ),
        max_size=6,
    ),
)
def test_any_usage_a_server_reports_prices_to_a_finite_cost_or_none(
    api: str, usage: dict[str, Any]
) -> None:
    """A model the price dataset knows, and whatever usage the server reports (huge,
    negative, contradictory, of the wrong type): the cost is a finite dollar amount or
    unknown (None), and the readout reads; nothing raises."""
    if api == "openai":
        model = "gpt-4o-mini"
        events = openai_stream(oa(choices=[], usage=usage))
    else:
        model = "claude-3-5-haiku-latest"
        events = anthropic_stream(ant("message_delta", delta={}, usage=usage))
    turn = Turn(Request([], model, cast(Api, api), "http://127.0.0.1:9/v1"))
    pipe = Pipeline(cast(Api, api), turn)
    pipe.feed("".join(f"data: {e}\n\n" for e in events).encode(), 0.0)
    pipe.close(1.0)
    cost = turn.cost
    assert cost is None or (isinstance(cost, float) and 0 <= cost < float("inf"))
    assert isinstance(readout_text(readout(turn)), str)
    assert_usable(turn)
