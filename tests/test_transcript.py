"""The record a user keeps: ``Turn``, ``Transcript``, ``Conversation`` and the registry.

Turns are built the way the client builds them: recorded provider streams
(``../shared/fixtures/streams``) fed through ``Pipeline`` at known times, so every
expectation comes from ``EXPECTED.json``, from the raw stream, or from the times fed.
``Conversation`` runs against the real loopback HTTP server.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import types
from pathlib import Path
from typing import Any, cast

import pytest

import nbstream
from nbstream import (
    APIStatusError,
    Client,
    Conversation,
    ErrorInfo,
    ProviderStreamError,
    ReasoningDelta,
    Request,
    TextDelta,
    ToolCallDelta,
    Transcript,
    Turn,
)
from nbstream._core.pipeline import Pipeline
from nbstream._core.transcript import Api
from tests.conftest import STREAMS, api_of, expected
from tests.loopback import STALL, Gate, LoopbackServer, Reply, openai_chunks

EXP = expected()
KEY = "sk-test-TRANSCRIPTSECRET-0123456789"
T0 = 0.5  # the first event arrives at T0, each next one STEP later (exact in float32)
STEP = 0.25


# -- building turns from real streams -------------------------------------------------


def read(name: str) -> bytes:
    return (STREAMS / name).read_bytes()


def events_of(data: bytes) -> list[bytes]:
    """The SSE events of a stream, each with its blank line (fixtures are LF-only)."""
    parts = data.split(b"\n\n")
    out = [p + b"\n\n" for p in parts[:-1]]
    return out + ([parts[-1]] if parts[-1] else [])


def raw_objects(name: str) -> list[dict[str, Any]]:
    """The JSON payloads of a recorded stream, in order ([DONE] left out)."""
    out = []
    for block in read(name).decode().split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data:"):
                data = line[5:].strip()
                if data and data != "[DONE]":
                    out.append(json.loads(data))
    return out


def sse(datas: list[str]) -> bytes:
    return b"".join(f"data: {d}\n\n".encode() for d in datas)


def build(
    data: bytes,
    api: str = "openai",
    *,
    prompt: str = "Hi",
    end: str = "close",
    limit: int | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[Turn, list[Any], list[float]]:
    """Feed ``data`` one SSE event at a time (event i at ``T0 + i * STEP``).

    ``limit``: feed only that many events. ``end``: ``close`` (the body ended),
    ``cancel`` (Stop: the client marks the turn and settles it, as ``Stream`` does)
    or ``open`` (still streaming). Returns the turn, the events and the feed times.
    """
    the_api = cast(Api, api)
    request = Request(
        [{"role": "user", "content": prompt}],
        "test-model",
        the_api,
        "http://127.0.0.1:9/v1",
        params=dict(params or {"temperature": 0.5}),
    )
    turn = Turn(request)
    pipe = Pipeline(the_api, turn)
    events: list[Any] = []
    times: list[float] = []
    blocks = events_of(data)[:limit]
    for i, block in enumerate(blocks):
        now = T0 + i * STEP
        times.append(now)
        events.extend(pipe.feed(block, now))
    end_at = T0 + len(blocks) * STEP
    if end == "close":
        events.extend(pipe.close(end_at))
    elif end == "cancel":
        turn.status = "cancelled"
        pipe.abort(end_at)
    return turn, events, times


def turn_of(name: str, **kw: Any) -> Turn:
    return build(read(name), api_of(name), prompt=f"prompt of {name}", **kw)[0]


def http_failure() -> Turn:
    """A turn the server refused before any byte of a reply (a 429)."""
    turn = Turn(Request([{"role": "user", "content": "too fast"}], "m", "openai", "u"))
    turn.status = "error"
    turn.error = ErrorInfo(
        "APIStatusError",
        "Rate limited (429): slow down",
        status_code=429,
        request_id="req_123",
        retry_after=2.5,
        code="rate_limit_exceeded",
    )
    turn.metrics.elapsed_s = 0.125
    turn.metrics.attempts = 3
    return turn


SHORT = ["Once", " upon"]  # a reply cut short: role chunk, two words, then nothing


def short_turn(end: str, prompt: str = "Tell me a story") -> Turn:
    data = sse(openai_chunks(SHORT, finish=None, done=False))
    return build(data, prompt=prompt, end=end)[0]


FIXTURE_TURNS = [
    "openai_chat_n3_interleaved.sse",
    "openai_chat_parallel_tool_calls.sse",
    "anthropic_thinking_signature.sse",
    "anthropic_redacted_thinking.sse",
    "anthropic_thinking_then_tool_use.sse",
    "anthropic_max_tokens_tool_input_truncated.sse",
    "anthropic_web_search_citations.sse",
    "openai_chat_refusal.sse",
    "openai_chat_logprobs.sse",
    "deepseek_reasoner_reasoning_content.sse",
    "groq_midstream_error_event.sse",
]


def every_kind_of_turn() -> Transcript:
    """One transcript with every kind of turn a user can end up with."""
    turns = [turn_of(name) for name in FIXTURE_TURNS]
    half = len(events_of(read("openai_chat_text_usage.sse"))) // 2
    turns.append(turn_of("openai_chat_text_usage.sse", end="cancel", limit=half))
    turns.append(short_turn("close"))  # incomplete: no finish reason, no [DONE]
    turns.append(http_failure())
    turns.append(short_turn("open"))  # still streaming
    return Transcript(turns, system="You are terse. Ünïcödé ✓")


def by_prompt(tr: Transcript, name: str) -> Turn:
    (turn,) = [t for t in tr if t.request.messages[0]["content"] == f"prompt of {name}"]
    return turn


def assert_same_turns(a: Transcript, b: Transcript) -> None:
    assert len(a) == len(b)
    assert a.system == b.system
    for x, y in zip(a, b, strict=True):
        assert (x.id, x.status, x.model, x.provider) == (
            y.id,
            y.status,
            y.model,
            y.provider,
        )
        assert x.finish_reason == y.finish_reason
        assert [c.text for c in x.choices] == [c.text for c in y.choices]
        assert [c.reasoning for c in x.choices] == [c.reasoning for c in y.choices]
        assert [c.refusal for c in x.choices] == [c.refusal for c in y.choices]
        assert [c.extra for c in x.choices] == [c.extra for c in y.choices]
        assert [t.to_dict() for t in x.tool_calls] == [
            t.to_dict() for t in y.tool_calls
        ]
        assert [t.input for t in x.tool_calls] == [t.input for t in y.tool_calls]
        assert x.usage == y.usage
        assert (x.usage and x.usage.raw) == (y.usage and y.usage.raw)
        assert x.metrics.to_dict() == y.metrics.to_dict()
        assert x.metrics.arrivals.tolist() == y.metrics.arrivals.tolist()
        assert x.metrics.arrivals.typecode == y.metrics.arrivals.typecode == "f"
        assert x.metrics.tokens_per_s == y.metrics.tokens_per_s
        assert (x.error and x.error.to_dict()) == (y.error and y.error.to_dict())
        assert x.request.to_dict() == y.request.to_dict()
        assert (x.extra, x.warnings, x.done) == (y.extra, y.warnings, y.done)
    for api in ("openai", "anthropic"):
        assert a.to_messages(cast(Api, api)) == b.to_messages(cast(Api, api))


# -- the turns themselves are right (so the round trip below means something) -----------


def test_the_statuses_a_user_can_meet() -> None:
    tr = every_kind_of_turn()
    statuses = [t.status for t in tr]
    assert statuses.count("complete") == len(FIXTURE_TURNS) - 1
    assert statuses[-5:] == ["error", "cancelled", "incomplete", "error", "streaming"]
    assert by_prompt(tr, "groq_midstream_error_event.sse").status == "error"


# -- to_json / from_json, save / load ---------------------------------------------------


def test_json_round_trip_is_exact() -> None:
    tr = every_kind_of_turn()
    text = tr.to_json()
    back = Transcript.from_json(text)
    assert back.to_dict() == tr.to_dict()
    assert back.to_json() == text
    assert_same_turns(tr, back)


@pytest.mark.parametrize("as_path", [True, False])
def test_save_and_load_round_trip_exactly(tmp_path: Path, as_path: bool) -> None:
    tr = every_kind_of_turn()
    path = tmp_path / "chat.json"
    tr.save(path if as_path else str(path))
    back = Transcript.load(path if as_path else str(path))
    assert back.to_dict() == tr.to_dict()
    assert_same_turns(tr, back)
    # a plain UTF-8 JSON file anyone can read
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["format"] == "nbstream.transcript" and raw["version"] == 1
    assert "Ünïcödé ✓" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]


def test_what_the_loaded_turns_hold_matches_the_recordings(tmp_path: Path) -> None:
    tr = every_kind_of_turn()
    tr.save(tmp_path / "t.json")
    back = Transcript.load(tmp_path / "t.json")

    # n=3: every choice, with its text and finish reason
    name = "openai_chat_n3_interleaved.sse"
    e, turn = EXP[name], by_prompt(back, name)
    assert [c.text for c in turn.choices] == [
        e["choices"][k]["content"] for k in ("0", "1", "2")
    ]
    assert [c.finish_reason for c in turn.choices] == ["stop"] * 3
    assert turn.model == e["models"][0] and turn.provider == "openai"
    assert turn.usage is not None and turn.usage.raw == e["usage"]
    assert (turn.usage.input_tokens, turn.usage.output_tokens) == (79, 42)

    # parallel tool calls: id, name, raw arguments and the parsed input
    name = "openai_chat_parallel_tool_calls.sse"
    turn = by_prompt(back, name)
    assert [(c.id, c.name, c.arguments, c.input) for c in turn.tool_calls] == [
        (w["id"], w["name"], w["arguments"], json.loads(w["arguments"]))
        for w in EXP[name]["choices"]["0"]["tool_calls"]
    ]
    assert turn.finish_reason == "tool_calls"

    # Anthropic thinking, with the signature that must go back with it
    name = "anthropic_thinking_signature.sse"
    e, turn = EXP[name], by_prompt(back, name)
    thinking, text = e["content"]
    assert turn.reasoning == thinking["thinking"] and turn.text == text["text"]
    assert (
        len(turn.choices[0].extra["reasoning_signature"]) == thinking["signature_len"]
    )
    assert turn.provider == "anthropic" and turn.model == e["model"]
    assert turn.usage is not None and turn.usage.output_tokens == 282

    # redacted thinking: the blocks exactly as the server sent them
    name = "anthropic_redacted_thinking.sse"
    sent = [
        o["content_block"]
        for o in raw_objects(name)
        if o.get("type") == "content_block_start"
        and o["content_block"]["type"] == "redacted_thinking"
    ]
    assert len(sent) == 2
    kept = by_prompt(back, name).choices[0].extra["blocks"]
    assert [b for b in kept if b["type"] == "redacted_thinking"] == sent

    # a tool input cut off by max_tokens: the text as streamed, no input, and why
    name = "anthropic_max_tokens_tool_input_truncated.sse"
    (call,) = by_prompt(back, name).tool_calls
    want = EXP[name]["content"][1]
    assert (call.id, call.name, call.arguments) == (
        want["id"],
        want["name"],
        want["input"],
    )
    assert call.input is None and call.error and "max_tokens" in call.error

    # the UTF-8 of a web search answer survives
    name = "anthropic_web_search_citations.sse"
    assert "\u00b0F" in by_prompt(back, name).text

    # a refusal, and logprobs that spell out the reply
    name = "openai_chat_refusal.sse"
    turn = by_prompt(back, name)
    assert turn.refusal == EXP[name]["choices"]["0"]["refusal"] and turn.text == ""
    name = "openai_chat_logprobs.sse"
    entries = by_prompt(back, name).choices[0].extra["logprobs"]
    assert "".join(t["token"] for lp in entries for t in lp["content"]) == "Foo!"

    # reasoning_content (DeepSeek)
    name = "deepseek_reasoner_reasoning_content.sse"
    c = EXP[name]["choices"]["0"]
    turn = by_prompt(back, name)
    assert (turn.reasoning, turn.text) == (c["reasoning_content"], c["content"])

    # a provider error mid-stream: the message, and the reasoning so far, are kept
    name = "groq_midstream_error_event.sse"
    turn = by_prompt(back, name)
    assert turn.status == "error" and turn.error is not None
    assert EXP[name]["errors"][0]["message"] in turn.error.message
    assert turn.reasoning == EXP[name]["choices"]["0"]["reasoning"]

    # a failure before any reply: every HTTP fact is kept
    (failed,) = [t for t in back if t.request.messages[0]["content"] == "too fast"]
    assert failed.error is not None
    want = http_failure().error
    assert want is not None and failed.error.to_dict() == want.to_dict()

    # the stopped turn: its partial text, and one arrival per delta
    (stopped,) = [t for t in back if t.status == "cancelled"]
    full = EXP["openai_chat_text_usage.sse"]["choices"]["0"]["content"]
    assert stopped.text and full.startswith(stopped.text) and stopped.text != full
    assert len(stopped.metrics.arrivals) == stopped.metrics.deltas > 0

    # the reply cut short: incomplete, its text, and the time of each word
    (cut,) = [t for t in back if t.status == "incomplete"]
    assert cut.text == "".join(SHORT)
    assert cut.metrics.arrivals.tolist() == [T0 + STEP, T0 + 2 * STEP]
    assert cut.metrics.ttft_s == T0 + STEP
    assert cut.warnings  # the user is told it may be cut


def test_an_emoji_split_across_chunks_is_one_character_and_saves(
    tmp_path: Path,
) -> None:
    # Some servers escape non-ASCII as \uXXXX and split an emoji's surrogate pair
    # across two chunks: the text must still hold the emoji, and save and load.
    datas = [
        json.dumps({"choices": [{"index": 0, "delta": {"content": "smile \ud83d"}}]}),
        json.dumps({"choices": [{"index": 0, "delta": {"content": "\ude00 ok"}}]}),
        json.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        "[DONE]",
    ]
    assert "\\ud83d" in datas[0]  # on the wire as an escape, as such servers send it
    whole = build(sse(datas))[0]
    assert whole.text == "smile \U0001f600 ok"
    # stopped between the two halves: a lone surrogate, which UTF-8 cannot encode
    half = build(sse(datas), end="cancel", limit=1)[0]
    assert half.text == "smile \ud83d"
    tr = Transcript([whole, half])
    tr.save(tmp_path / "t.json")
    back = Transcript.load(tmp_path / "t.json")
    assert [t.text for t in back] == ["smile \U0001f600 ok", "smile \ud83d"]
    assert back.to_dict() == tr.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"version": 2}, "version 2"),
        ({"version": None}, "version"),
        ({"format": "something.else"}, "not an nbstream transcript"),
    ],
)
def test_a_format_or_version_mismatch_is_a_clear_value_error(
    tmp_path: Path, change: dict[str, Any], words: str
) -> None:
    d = {**every_kind_of_turn().to_dict(), **change}
    with pytest.raises(ValueError, match=words):
        Transcript.from_dict(d)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    with pytest.raises(ValueError, match=words):
        Transcript.load(path)


def test_a_format_key_missing_is_a_clear_value_error() -> None:
    d = every_kind_of_turn().to_dict()
    del d["format"]
    with pytest.raises(ValueError, match="not an nbstream transcript"):
        Transcript.from_dict(d)


def test_loading_a_saved_message_list_is_a_clear_value_error(tmp_path: Path) -> None:
    # An easy mistake: json.dump(transcript.to_messages(), f), then Transcript.load.
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(every_kind_of_turn().to_messages()), encoding="utf-8")
    with pytest.raises(ValueError, match="not an nbstream transcript"):
        Transcript.load(path)
    with pytest.raises(ValueError, match="not an nbstream transcript"):
        Transcript.from_json('"just a string"')


def test_a_failing_save_keeps_the_old_file_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    path = tmp_path / "chat.json"
    good = every_kind_of_turn()
    good.save(path)
    before = path.read_bytes()

    bad = every_kind_of_turn()
    bad[0].extra["not json"] = object()  # serialisation fails half-way through
    with pytest.raises(TypeError):
        bad.save(path)
    assert path.read_bytes() == before
    assert Transcript.load(path).to_dict() == good.to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]


def test_a_crash_before_the_rename_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "chat.json"
    good = every_kind_of_turn()
    good.save(path)
    before = path.read_bytes()
    newer = every_kind_of_turn()

    def crash(src: Any, dst: Any) -> None:
        # the new file is whole on disk before it takes the old one's place
        assert Transcript.load(src).to_dict() == newer.to_dict()
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        newer.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json"]


# -- to_messages --------------------------------------------------------------------------


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_openai_history_has_system_first_then_user_and_assistant_turns() -> None:
    text_turn = turn_of("openai_chat_text_usage.sse")
    tools_turn = turn_of("openai_chat_parallel_tool_calls.sse")
    tr = Transcript(
        [
            text_turn,
            turn_of("groq_midstream_error_event.sse"),  # failed: left out
            tools_turn,
            http_failure(),  # failed: left out
            short_turn("cancel", prompt="stopped one"),
            short_turn("close", prompt="cut one"),
            short_turn("open", prompt="still streaming"),  # left out
        ],
        system="Be terse.",
    )
    calls = EXP["openai_chat_parallel_tool_calls.sse"]["choices"]["0"]["tool_calls"]
    assert tr.to_messages("openai") == [
        {"role": "system", "content": "Be terse."},
        user("prompt of openai_chat_text_usage.sse"),
        {
            "role": "assistant",
            "content": EXP["openai_chat_text_usage.sse"]["choices"]["0"]["content"],
        },
        user("prompt of openai_chat_parallel_tool_calls.sse"),
        {
            "role": "assistant",
            "content": "",  # not null: several servers refuse null beside tool calls
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
        user("stopped one"),
        {"role": "assistant", "content": "Once upon"},
        user("cut one"),
        {"role": "assistant", "content": "Once upon"},
    ]
    # without the system prompt (a Conversation sends it on its own)
    assert tr.to_messages("openai", include_system=False) == tr.to_messages()[1:]


def test_a_refused_question_goes_back_with_its_refusal() -> None:
    # Leaving the refusal out would send the refused question as if unanswered.
    name = "openai_chat_refusal.sse"
    tr = Transcript([turn_of(name), short_turn("close", prompt="next")])
    refusal = EXP[name]["choices"]["0"]["refusal"]
    msgs = tr.to_messages("openai")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[1]["content"] == refusal
    assert tr.to_messages("anthropic")[1]["content"] in (
        refusal,
        [{"type": "text", "text": refusal}],
    )


def _blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """An Anthropic message's content as blocks (a plain string is one text block)."""
    content = msg["content"]
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return cast(list[dict[str, Any]], content)


def test_anthropic_history_sends_back_thinking_redacted_thinking_and_tool_use() -> None:
    names = [
        "anthropic_thinking_signature.sse",
        "anthropic_redacted_thinking.sse",
        "anthropic_thinking_then_tool_use.sse",
        "anthropic_tool_use_fragmented_padded.sse",
        "anthropic_text_minimal_padded.sse",
    ]
    tr = Transcript([turn_of(n) for n in names], system="Be terse.")
    msgs = tr.to_messages("anthropic")
    # no system message: Anthropic takes it as a separate parameter
    assert [m["role"] for m in msgs] == ["user", "assistant"] * len(names)
    assert [m["content"] for m in msgs[::2]] == [f"prompt of {n}" for n in names]

    def signature(name: str) -> str:
        return "".join(
            o["delta"]["signature"]
            for o in raw_objects(name)
            if o.get("delta", {}).get("type") == "signature_delta"
        )

    # thinking with its signature, then the text
    name = names[0]
    thinking, text = EXP[name]["content"]
    assert _blocks(msgs[1]) == [
        {
            "type": "thinking",
            "thinking": thinking["thinking"],
            "signature": signature(name),
        },
        {"type": "text", "text": text["text"]},
    ]
    assert len(signature(name)) == thinking["signature_len"]

    # redacted thinking blocks go back unchanged, before the text
    name = names[1]
    redacted = [
        o["content_block"]
        for o in raw_objects(name)
        if o.get("type") == "content_block_start"
        and o["content_block"]["type"] == "redacted_thinking"
    ]
    assert _blocks(msgs[3]) == [
        *redacted,
        {"type": "text", "text": EXP[name]["content"][2]["text"]},
    ]

    # thinking, then a tool_use whose empty input became {}
    name = names[2]
    thinking, tool = EXP[name]["content"]
    assert _blocks(msgs[5]) == [
        {
            "type": "thinking",
            "thinking": thinking["thinking"],
            "signature": signature(name),
        },
        {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}},
    ]

    # text, then a tool_use with its input assembled from five pieces and parsed
    name = names[3]
    text, tool = EXP[name]["content"]
    assert _blocks(msgs[7]) == [
        {"type": "text", "text": text["text"]},
        {
            "type": "tool_use",
            "id": tool["id"],
            "name": tool["name"],
            "input": {"location": "Paris"},
        },
    ]
    assert tool["input"] == {"location": "Paris"}

    # a plain text reply
    assert _blocks(msgs[9]) == [{"type": "text", "text": "2"}]


def test_failed_and_unfinished_turns_are_left_out_entirely() -> None:
    ok = turn_of("anthropic_text_minimal_padded.sse")
    failed_mid_stream = turn_of("groq_midstream_error_event.sse")
    assert failed_mid_stream.reasoning  # it did say something before failing
    tr = Transcript(
        [ok, failed_mid_stream, http_failure(), short_turn("open", prompt="live")]
    )
    for api in ("openai", "anthropic"):
        msgs = tr.to_messages(cast(Api, api))
        assert [m["content"] for m in msgs if m["role"] == "user"] == [
            "prompt of anthropic_text_minimal_padded.sse"
        ]
        assert len(msgs) == 2


def test_stopped_and_incomplete_turns_go_back_with_their_partial_text() -> None:
    tr = Transcript(
        [short_turn("cancel", prompt="a"), short_turn("close", prompt="b")],
        system="S",
    )
    assert [t.status for t in tr] == ["cancelled", "incomplete"]
    assert tr.to_messages("anthropic") == [
        user("a"),
        {"role": "assistant", "content": "Once upon"},
        user("b"),
        {"role": "assistant", "content": "Once upon"},
    ]


def test_changing_the_returned_history_does_not_change_the_transcript() -> None:
    # Users edit the history before sending it (add cache_control, fix a typo).
    tr = Transcript(
        [
            turn_of("anthropic_redacted_thinking.sse"),
            turn_of("anthropic_tool_use_fragmented_padded.sse"),
        ]
    )
    before = tr.to_json()
    for api in ("openai", "anthropic"):
        msgs = tr.to_messages(cast(Api, api))
        for m in msgs:
            if isinstance(m["content"], list):
                for block in m["content"]:
                    block["cache_control"] = {"type": "ephemeral"}
                    if isinstance(block.get("input"), dict):
                        block["input"]["location"] = "Rome"
            m["content"] = "edited"
    assert tr.to_json() == before


# -- to_pandas -------------------------------------------------------------------------


def test_to_pandas_has_one_row_per_turn_with_the_turns_numbers() -> None:
    pd = pytest.importorskip("pandas")
    usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    words = ["a", "b", "c", "d", "e"]
    complete = build(sse(openai_chunks(words, usage=usage)), prompt="count")[0]
    tr = Transcript(
        [
            complete,
            turn_of("groq_midstream_error_event.sse"),
            short_turn("cancel", prompt="stop me"),
            http_failure(),
        ]
    )
    df = tr.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 4
    assert df["status"].tolist() == ["complete", "error", "cancelled", "error"]
    assert df["text"].tolist() == ["abcde", "", "Once upon", ""]
    assert df["prompt"].tolist() == [
        "count",
        "prompt of groq_midstream_error_event.sse",
        "stop me",
        "too fast",
    ]

    row = df.iloc[0]
    # role chunk at T0, "a" … "e" one STEP apart from T0 + STEP; the body ends after
    # the finish, usage and [DONE] events
    ttft, elapsed = T0 + STEP, T0 + 9 * STEP
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (
        7,
        5,
        12,
    )
    assert row["ttft_s"] == ttft and row["elapsed_s"] == elapsed
    assert row["tokens_per_s"] == pytest.approx((5 - 1) / (elapsed - ttft))
    assert row["finish_reason"] == "stop" and row["model"] == "test-model"
    assert not row["usage_estimated"]
    assert pd.isna(row["error"])

    err = df.iloc[1]
    assert EXP["groq_midstream_error_event.sse"]["errors"][0]["message"] in err["error"]
    assert (
        err["reasoning"]
        == EXP["groq_midstream_error_event.sse"]["choices"]["0"]["reasoning"]
    )
    assert df.iloc[3]["error"] == "Rate limited (429): slow down"
    assert pd.isna(df.iloc[3]["ttft_s"]) and pd.isna(df.iloc[3]["tokens_per_s"])
    assert df.iloc[2]["usage_estimated"]  # no usage arrived: counted, and said so


def test_to_pandas_without_pandas_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    tr = Transcript([short_turn("close")])
    with pytest.raises(ImportError, match=r'pip install "nbstream\[pandas\]"'):
        tr.to_pandas()
    assert len(tr) == 1  # nothing else changed


# -- Turn.metrics ------------------------------------------------------------------------


def test_tokens_per_s_counts_output_tokens_after_the_first_one() -> None:
    # 9 tokens: the first at ttft, the other 8 over (elapsed - ttft) seconds
    usage = {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    turn, _, times = build(sse(openai_chunks(["x"] * 9, usage=usage)))
    m = turn.metrics
    assert m.ttft_s == times[1]
    assert m.elapsed_s == times[-1] + STEP
    assert m.output_tokens == 9 and not m.output_tokens_estimated
    assert m.tokens_per_s == pytest.approx(8 / (m.elapsed_s - m.ttft_s))


def test_tokens_per_s_is_live_while_streaming() -> None:
    # still streaming: the deltas so far, up to the last one (2 deltas, 0.25 s apart)
    live = short_turn("open")
    assert live.metrics.elapsed_s is None
    assert live.metrics.tokens_per_s == pytest.approx(1 / 0.25)


def test_tokens_per_s_is_none_when_it_cannot_be_computed() -> None:
    # failed before any token
    assert http_failure().metrics.tokens_per_s is None
    # a one-token reply has no rate
    one = build(sse(openai_chunks(["2"], usage={"completion_tokens": 1})))[0]
    assert one.metrics.output_tokens == 1 and one.metrics.tokens_per_s is None
    # every token in one read, the body ending at the same instant: no duration
    turn = Turn(Request([user("Hi")], "m", "openai", "u"))
    pipe = Pipeline("openai", turn)
    pipe.feed(sse(openai_chunks(["a", "b", "c"])), 1.0)
    pipe.close(1.0)
    assert turn.status == "complete" and turn.metrics.tokens_per_s is None


def test_arrivals_is_a_compact_float32_array_with_one_entry_per_delta() -> None:
    name = "anthropic_thinking_signature.sse"
    turn, events, _ = build(read(name), "anthropic")
    deltas = [e for e in events if isinstance(e, TextDelta | ReasoningDelta)]
    counts = [b["delta_counts"] for b in EXP[name]["content"]]
    # one thinking_delta of that stream is empty: it carries no token and is no delta
    assert len(deltas) == counts[0]["thinking_delta"] + counts[1]["text_delta"] - 1
    arrivals = turn.metrics.arrivals
    assert arrivals.typecode == "f" and arrivals.itemsize == 4
    assert len(arrivals) == len(deltas) == turn.metrics.deltas
    assert list(arrivals) == sorted(arrivals)
    assert arrivals[0] == turn.metrics.ttft_s

    name = "openai_chat_parallel_tool_calls.sse"
    turn, events, _ = build(read(name))
    tool_deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert len(turn.metrics.arrivals) == len(tool_deltas) > 0


# -- Conversation, against a real server ---------------------------------------------------


def client_for(server: LoopbackServer, **kw: Any) -> Client:
    kw.setdefault("model", "test-model")
    kw.setdefault("api_key", KEY)
    return Client(base_url=server.base_url, retry_delay=0.01, **kw)


def ok(words: list[str]) -> Reply:
    return Reply.events(openai_chunks(words, usage={"completion_tokens": len(words)}))


def sent(server: LoopbackServer, i: int) -> dict[str, Any]:
    return cast(dict[str, Any], server.requests[i].json)


def test_each_message_is_sent_with_the_system_prompt_and_the_history(
    server: LoopbackServer,
) -> None:
    server.enqueue(ok(["Hello", " there"]), ok(["Fine"]))
    client = client_for(server)
    conv = Conversation(client, system="Be terse.", temperature=0.25)
    first = conv.send("Hi")
    second = conv.send("How are you?", max_tokens=5)
    assert sent(server, 0)["messages"] == [
        {"role": "system", "content": "Be terse."},
        user("Hi"),
    ]
    body = sent(server, 1)
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        user("Hi"),
        {"role": "assistant", "content": "Hello there"},
        user("How are you?"),
    ]
    assert (body["temperature"], body["max_tokens"]) == (0.25, 5)
    assert server.requests[1].headers["authorization"] == f"Bearer {KEY}"
    # each turn records its own request: new messages, parameters, never the key
    assert list(conv.transcript) == [first, second]
    assert second.request.messages == [user("How are you?")]
    assert second.request.params == {"temperature": 0.25, "max_tokens": 5}
    assert second.request.system == "Be terse."
    assert (second.text, second.status, second.provider) == (
        "Fine",
        "complete",
        "openai",
    )
    assert KEY not in conv.transcript.to_json()
    client.close()


def test_anthropic_conversation_sends_the_system_prompt_as_a_parameter(
    server: LoopbackServer,
) -> None:
    name = "anthropic_text_minimal_padded.sse"
    server.enqueue(Reply.sse(read(name), chunk_size=64), Reply.sse(read(name)))
    client = client_for(server, api="anthropic")
    conv = Conversation(client, system="Answer with a digit.")
    conv.send("1+1?")
    conv.send("And 1+2?")
    body = sent(server, 1)
    assert server.requests[1].path == "/v1/messages"
    assert body["system"] == "Answer with a digit."
    assert [_blocks(m) for m in body["messages"]] == [
        [{"type": "text", "text": "1+1?"}],
        [{"type": "text", "text": EXP[name]["content"][0]["text"]}],
        [{"type": "text", "text": "And 1+2?"}],
    ]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    client.close()


def test_the_turn_is_in_the_transcript_while_it_streams(server: LoopbackServer) -> None:
    gate = Gate()
    reply = ok(["Hello", " world"])
    reply.chunks.insert(2, gate)  # role chunk, "Hello", then the server holds on
    server.enqueue(reply)
    client = client_for(server)
    conv = Conversation(client)
    live: list[tuple[str, str, int, list[dict[str, Any]]]] = []
    with conv.stream("Hi") as s:
        for ev in s:
            if isinstance(ev, TextDelta) and not live:
                assert server.wait_for(
                    lambda: server.requests[-1].stalled_at is not None, 5
                )
                t = conv.transcript[-1]
                assert t is s.turn
                live.append(
                    (
                        t.status,
                        t.text,
                        len(conv.transcript),
                        conv.transcript.to_messages(),
                    )
                )
                gate.open()
    assert live == [("streaming", "Hello", 1, [])]  # live, but not history yet
    assert conv.transcript[-1].status == "complete"
    assert conv.transcript[-1].text == "Hello world"
    client.close()


def test_a_failed_turn_is_kept_and_the_next_message_leaves_it_out(
    server: LoopbackServer,
) -> None:
    error = {"error": {"message": "Bad things", "type": "invalid_request_error"}}
    groq = "groq_midstream_error_event.sse"
    server.enqueue(
        ok(["One"]),
        Reply.json(400, error),
        Reply.sse(read(groq), chunk_size=500),
        ok(["Two"]),
    )
    client = client_for(server)
    conv = Conversation(client, system="S")
    conv.send("first")
    with pytest.raises(APIStatusError):
        conv.send("refused")
    with pytest.raises(ProviderStreamError):
        conv.send("broken")
    conv.send("last")

    statuses = [t.status for t in conv.transcript]
    assert statuses == ["complete", "error", "error", "complete"]
    refused, broken = conv.transcript[1], conv.transcript[2]
    assert refused.error is not None and refused.error.status_code == 400
    assert "Bad things" in refused.error.message
    assert broken.error is not None
    assert EXP[groq]["errors"][0]["message"] in broken.error.message
    assert broken.reasoning == EXP[groq]["choices"]["0"]["reasoning"]
    assert sent(server, 3)["messages"] == [
        {"role": "system", "content": "S"},
        user("first"),
        {"role": "assistant", "content": "One"},
        user("last"),
    ]
    client.close()


def test_a_stopped_turn_is_sent_back_with_its_partial_reply(
    server: LoopbackServer,
) -> None:
    stalling = Reply.events(openai_chunks(["Once", " upon"], finish=None, done=False))
    stalling.chunks.append(STALL)
    server.enqueue(stalling, ok(["Sure"]))
    client = client_for(server)
    conv = Conversation(client)
    with conv.stream("Tell a story") as s:
        for _ in s:
            if s.turn.text == "Once upon":
                s.cancel()
    assert conv.transcript[-1].status == "cancelled"
    conv.send("Go on")
    assert sent(server, 1)["messages"] == [
        user("Tell a story"),
        {"role": "assistant", "content": "Once upon"},
        user("Go on"),
    ]
    client.close()


# -- the registry of named conversations ---------------------------------------------------


@pytest.fixture
def registry() -> Any:
    """The live mapping, restored afterwards (it is shared by the whole session)."""
    live = nbstream.conversations()
    saved = dict(live)
    yield live
    live.clear()
    live.update(saved)


def test_conversation_by_name_is_the_same_object(registry: dict[str, Any]) -> None:
    a = nbstream.conversation("test-registry-a")
    assert nbstream.conversation("test-registry-a") is a
    assert nbstream.conversation("test-registry-b") is not a
    assert nbstream.conversation() is nbstream.conversation(None)
    assert registry["test-registry-a"] is a


def test_new_conversation_replaces_the_named_one(registry: dict[str, Any]) -> None:
    old = nbstream.conversation("test-registry-c")
    old.transcript.append(short_turn("close"))
    new = nbstream.new_conversation("test-registry-c", system="Fresh start")
    assert new is not old
    assert nbstream.conversation("test-registry-c") is new
    assert len(new.transcript) == 0 and new.system == "Fresh start"
    assert len(old.transcript) == 1  # kept by whoever still holds it
    default = nbstream.conversation()
    assert nbstream.new_conversation() is not default
    assert nbstream.conversation() is not default


# -- the public API and secrets ------------------------------------------------------------


def _names_bound_by(stmts: list[ast.stmt]) -> set[str]:
    """Names a module's own statements bind: its definitions, assignments, and what
    it imports from nbstream (imports from elsewhere, like ``typing``, are not its)."""
    names: set[str] = set()
    for node in stmts:
        if isinstance(node, ast.ImportFrom):
            if node.level > 0 or (node.module or "").startswith("nbstream"):
                names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.If | ast.Try):
            for block in (node.body, node.orelse, getattr(node, "finalbody", [])):
                names |= _names_bound_by(block)
    return names


def test_all_lists_every_public_name_and_only_names_that_exist() -> None:
    listed = nbstream.__all__
    assert len(set(listed)) == len(listed)  # no duplicates
    missing = [name for name in listed if not hasattr(nbstream, name)]
    assert missing == []
    source = Path(nbstream.__file__).read_text(encoding="utf-8")
    public = {n for n in _names_bound_by(ast.parse(source).body) if n[0] != "_"}
    public -= {n for n, v in vars(nbstream).items() if isinstance(v, types.ModuleType)}
    assert sorted(public - set(listed)) == []
    # and at run time: every nbstream object in the package namespace
    ours = [
        name
        for name, value in vars(nbstream).items()
        if name[0] != "_"
        and not isinstance(value, types.ModuleType)
        and getattr(value, "__module__", "").startswith("nbstream")
    ]
    assert ours and sorted(set(ours) - set(listed)) == []
    for must in ("Transcript", "Turn", "Conversation", "Client", "conversation"):
        assert must in listed


def test_no_repr_shows_the_api_key(server: LoopbackServer) -> None:
    secret = "sk-test-REPRSECRET-0123456789"
    error = {"error": {"message": f"Incorrect API key provided: {secret}"}}
    server.enqueue(ok(["Hi"]), Reply.json(401, error))
    client = Client(base_url=server.base_url, api_key=secret, model="m")
    conv = Conversation(client, system="S")
    conv.send("Hello")
    with pytest.raises(APIStatusError) as info:
        conv.send("Again")
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    turn = conv.transcript[0]
    for obj in (client, conv, conv.transcript, turn, turn.request, conv.transcript[1]):
        assert secret not in repr(obj) and secret not in str(obj)
    assert secret not in str(info.value)
    assert secret not in conv.transcript.to_json()
    assert repr(client).endswith("api_key=***)")
    client.close()
