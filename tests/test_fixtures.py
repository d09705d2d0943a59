"""The 41 recorded provider streams, through the whole core, against EXPECTED.json.

Each stream is fed to ``Pipeline`` whole, byte by byte and at random chunk boundaries,
and the turn it builds must match the result ``EXPECTED.json`` computed independently
from the same bytes. Then one test per quirk named in TESTING.md section 1.

Where a test needs facts about the raw stream (which chunk carried what), it reads
them with ``raw_events`` below, a plain second reader of the bytes: every recorded
stream is LF-only with ``\\n\\n`` between events (SSE_EDGE_CASES.md section 4).
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterator
from typing import Any, cast

import pytest

from nbstream._core.pipeline import Pipeline
from nbstream._core.transcript import Api, Request, Turn
from tests.conftest import STREAMS, api_of, expected, stream_names

EXP = expected()
NAMES = stream_names()
FEEDS = ["whole", "bytewise", "random"]


def test_every_recorded_stream_has_an_expected_result() -> None:
    assert len(NAMES) == 41
    assert sorted(EXP) == NAMES


# -- helpers ------------------------------------------------------------------------


def read(name: str) -> bytes:
    return (STREAMS / name).read_bytes()


def split(data: bytes, feed: str, seed: int = 0) -> list[bytes]:
    if feed == "whole":
        return [data]
    if feed == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    rnd = random.Random(seed)
    chunks, i = [], 0
    while i < len(data):
        n = rnd.randint(1, 48)
        chunks.append(data[i : i + n])
        i += n
    return chunks


def new_turn(api_name: str) -> tuple[Turn, Pipeline]:
    api = cast(Api, api_name)
    turn = Turn(Request([], "m", api, "u"))
    return turn, Pipeline(api, turn)


def run(name: str, feed: str = "whole", data: bytes | None = None) -> Turn:
    """Feed a recorded stream (or ``data`` in its place) and close it."""
    turn, p = new_turn(api_of(name))
    body = read(name) if data is None else data
    for chunk in split(body, feed, seed=zlib.crc32(name.encode())):
        p.feed(chunk, 0.0)
    p.close(1.0)
    return turn


def raw_events(data: bytes) -> Iterator[tuple[str, str]]:
    """(event name, data) of every block that has data, in order."""
    for block in data.decode("utf-8").split("\n\n"):
        name, lines = "message", []
        for line in block.split("\n"):
            if line.startswith("data:"):
                lines.append(line[5:].removeprefix(" "))
            elif line.startswith("event:"):
                name = line[6:].strip() or "message"
        if lines:
            yield name, "\n".join(lines)


def raw_chunks(name: str) -> list[dict[str, Any]]:
    """The JSON objects of a recorded stream, in order ([DONE] left out)."""
    return [json.loads(d) for _, d in raw_events(read(name)) if d != "[DONE]"]


# -- every stream, every feed, against EXPECTED.json --------------------------------


def check_openai(turn: Turn, e: dict[str, Any]) -> None:
    # n=3: every choice is kept, and the turn's text is choice 0's
    assert len(turn.choices) == len(e["choices"])
    for key, c in e["choices"].items():
        ch = turn.choices[int(key)]
        assert ch.index == int(key)
        assert ch.text == (c.get("content") or "")
        reasoning = (
            c.get("reasoning") or c.get("reasoning_content") or c.get("thinking_parts")
        )
        assert ch.reasoning == (reasoning or "")
        # no refusal at all is None; a provider that sends refusal "" gets ""
        assert ch.refusal == c.get("refusal")
        assert ch.finish_reason == c.get("finish_reason")
        want = [
            (t["index"], t["id"], t["name"], t["arguments"])
            for t in c.get("tool_calls", [])
        ]
        got = [(t.index, t.id, t.name, t.arguments) for t in ch.tool_calls]
        assert got == want
        for call in ch.tool_calls:
            assert call.error is None
            assert call.input == json.loads(call.arguments)
        logprobs = ch.extra.get("logprobs", [])
        for kind in ("content", "refusal"):
            count = c.get(
                "logprob_tokens" if kind == "content" else f"{kind}_logprob_tokens"
            )
            if count is not None:
                assert sum(len(lp.get(kind) or []) for lp in logprobs) == count
    assert turn.text == (e["choices"]["0"].get("content") or "")

    usage = e["usage"]
    if usage is None:
        # nothing from the server: nbstream may count, but must say it counted
        assert turn.usage is None or turn.usage.estimated
    else:
        assert turn.usage is not None and not turn.usage.estimated
        assert turn.usage.raw == usage
        assert turn.usage.input_tokens == usage["prompt_tokens"]
        assert turn.usage.output_tokens == usage["completion_tokens"]
        assert turn.usage.total_tokens == usage["total_tokens"]

    models = [m for m in e["models"] if m]
    ids = [i for i in e["ids"] if i]
    assert turn.model == (models[-1] if models else None)
    assert turn.response_id == (ids[-1] if ids else None)


def check_anthropic(turn: Turn, e: dict[str, Any]) -> None:
    blocks = e["content"]
    ch = turn.choices[0]
    assert len(turn.choices) == 1
    assert turn.text == "".join(b["text"] for b in blocks if b["type"] == "text")
    assert turn.reasoning == "".join(
        b["thinking"] for b in blocks if b["type"] == "thinking"
    )
    assert turn.finish_reason == e["stop_reason"]
    if e["stop_sequence"] is not None:
        assert turn.extra["stop_sequence"] == e["stop_sequence"]

    uses = [b for b in blocks if b["type"] == "tool_use"]
    assert [(t.id, t.name) for t in turn.tool_calls] == [
        (b["id"], b["name"]) for b in uses
    ]
    for call, b in zip(turn.tool_calls, uses, strict=True):
        if b.get("input_is_incomplete_json"):
            # cut off by max_tokens in the middle of the input: no guessed input,
            # the text as streamed, and an error that says what happened
            assert call.input is None
            assert call.arguments == b["input"]
            assert call.error is not None
            assert "not valid JSON" in call.error
            assert "cut off" in call.error and e["stop_reason"] in call.error
        else:
            assert call.error is None
            assert call.input == b["input"]  # {} for a tool with no input
            assert json.loads(call.arguments) == b["input"]

    signed = [b for b in blocks if b.get("signature_len")]
    if signed:
        assert len(ch.extra["reasoning_signature"]) == signed[-1]["signature_len"]
    kept = ch.extra.get("blocks", [])
    assert [len(b["data"]) for b in kept if b["type"] == "redacted_thinking"] == [
        b["data_len"] for b in blocks if b["type"] == "redacted_thinking"
    ]
    assert [b["input"] for b in kept if b["type"] == "server_tool_use"] == [
        b["input"] for b in blocks if b["type"] == "server_tool_use"
    ]
    assert [
        len(b["content"]) for b in kept if b["type"] == "web_search_tool_result"
    ] == [b["results"] for b in blocks if b["type"] == "web_search_tool_result"]
    assert len(ch.extra.get("citations", [])) == sum(
        b.get("citations", 0) for b in blocks
    )

    assert turn.model == e["model"]
    assert turn.response_id == e["message_id"]

    usage = e["usage"]
    if not usage:
        # the 2023 stream has no usage at all (EXPECTED merges nothing into {})
        assert turn.usage is None or turn.usage.estimated
        return
    assert turn.usage is not None and not turn.usage.estimated
    assert turn.usage.raw == usage
    assert turn.usage.output_tokens == usage["output_tokens"]
    # input_tokens counts every prompt token: uncached + cache writes + cache reads
    assert turn.usage.input_tokens == usage["input_tokens"] + usage.get(
        "cache_creation_input_tokens", 0
    ) + usage.get("cache_read_input_tokens", 0)


def stream_says_it_ended(name: str) -> bool:
    """[DONE] or message_stop is in the bytes, counting an unterminated last event:
    nbstream dispatches that one at end of stream (see sse.py)."""
    for event, data in raw_events(read(name)):
        if data == "[DONE]" or event == "message_stop":
            return True
    return False


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("name", NAMES)
def test_stream_assembles_to_expected(name: str, feed: str) -> None:
    e = EXP[name]
    turn = run(name, feed)
    if e["kind"] == "anthropic":
        check_anthropic(turn, e)
    else:
        check_openai(turn, e)
    assert turn.done == stream_says_it_ended(name)
    if e.get("done_sentinel"):
        assert turn.done
    if e["errors"]:
        assert turn.status == "error"
        assert turn.error is not None
        for err in e["errors"]:
            assert err["message"] in turn.error.message
    else:
        assert turn.status == "complete"
        assert turn.error is None
        assert turn.warnings == []  # a clean stream raises no false alarm
    # every content delta has its arrival time
    assert len(turn.metrics.arrivals) == turn.metrics.deltas


# -- the quirks of TESTING.md section 1, one test each ------------------------------


def test_repeated_tool_name_and_id_are_not_concatenated() -> None:
    # OpenRouter/Kimi re-sends the tool call's id "0" and name with the same index;
    # joining the pieces naively gives "llm_versionllm_version" and id "00".
    name = "openrouter_kimi_tool_call_repeated_name.sse"
    sent = [
        tc["function"].get("name")
        for c in raw_chunks(name)
        for ch in c.get("choices", [])
        for tc in (ch.get("delta") or {}).get("tool_calls") or []
    ]
    assert sent.count("llm_version") >= 2  # the quirk is really in the recording
    want = EXP[name]["choices"]["0"]["tool_calls"][0]
    (call,) = run(name, "bytewise").tool_calls
    assert (call.id, call.name, call.arguments) == (
        want["id"],
        want["name"],
        want["arguments"],
    )
    assert call.input == json.loads(want["arguments"])


def test_repeated_id_and_name_still_join_the_arguments() -> None:
    # The same quirk with arguments in pieces: id and name are kept once, the
    # argument pieces are all kept, in order.
    def chunk(args: str) -> bytes:
        tc = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": args}}
        body = {"choices": [{"index": 0, "delta": {"tool_calls": [tc]}}]}
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    turn, p = new_turn("openai")
    for piece in ['{"a"', ": 1", "}"]:
        p.feed(chunk(piece), 0.0)
    p.feed(b"data: [DONE]\n\n", 0.0)
    p.close(0.0)
    (call,) = turn.tool_calls
    assert (call.id, call.name, call.input) == ("c1", "f", {"a": 1})


def test_later_null_finish_reason_does_not_erase_the_finish_reason() -> None:
    # OpenRouter sends finish_reason "tool_calls", then a usage chunk whose choice
    # has finish_reason null: the reply still finished because of the tool call.
    name = "openrouter_kimi_tool_call_usage_chunk_with_choice.sse"
    reasons = [
        ch.get("finish_reason") for c in raw_chunks(name) for ch in c.get("choices", [])
    ]
    first = next(i for i, r in enumerate(reasons) if r)
    assert None in reasons[first + 1 :]  # the quirk is really in the recording
    for feed in FEEDS:
        assert (
            run(name, feed).finish_reason == EXP[name]["choices"]["0"]["finish_reason"]
        )


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("openrouter_comments_usage_cost.sse", "provider"),
        ("openai_chat_moderation_chunk.sse", "moderation"),
        ("openai_chat_obfuscation_text.sse", "service_tier"),
        ("snowflake_cortex_no_finish_reason.sse", "service_tier"),
        ("groq_tool_call_x_groq_usage.sse", "x_groq"),
        ("azure_openai_prompt_filter_results.reframed.sse", "prompt_filter_results"),
        ("hf_router_novita_sla_metrics.sse", "sla_metrics"),
    ],
)
def test_extra_provider_fields_are_kept(name: str, key: str) -> None:
    # Fields a provider adds beyond the OpenAI schema end up in turn.extra (their
    # latest value), so a user can still read a moderation verdict or Groq's ids.
    assert key in EXP[name]["extra_top_level_keys"]
    values = [c[key] for c in raw_chunks(name) if c.get(key) is not None]
    assert run(name, "random").extra[key] == values[-1]


def test_logprobs_are_kept_per_choice() -> None:
    # The logprob entries of each chunk are kept on the choice: their tokens spell
    # out the reply (and, for a refusal, the refusal).
    for name, kind, field in [
        ("openai_chat_logprobs.sse", "content", "content"),
        ("openai_chat_refusal_logprobs.sse", "refusal", "refusal"),
    ]:
        turn = run(name, "random")
        entries = turn.choices[0].extra["logprobs"]
        tokens = "".join(t["token"] for lp in entries for t in lp.get(kind) or [])
        assert tokens == EXP[name]["choices"]["0"][field]


def test_anthropic_citations_are_kept() -> None:
    # Web-search citations arrive as citations_delta events; each is kept, in order,
    # on the choice, so a notebook can show the sources under the reply.
    name = "anthropic_web_search_citations.sse"
    sent = [
        obj["delta"]["citation"]
        for obj in raw_chunks(name)
        if obj.get("delta", {}).get("type") == "citations_delta"
    ]
    assert sent
    turn = run(name, "bytewise")
    assert turn.choices[0].extra["citations"] == sent
    assert "\u00b0F" in turn.text  # the UTF-8 degree sign survived byte-by-byte feeding


def test_anthropic_redacted_thinking_blocks_are_kept() -> None:
    # Redacted thinking must be sent back unchanged in the next request, so the
    # blocks are kept whole, in order.
    name = "anthropic_redacted_thinking.sse"
    sent = [
        obj["content_block"]
        for obj in raw_chunks(name)
        if obj.get("type") == "content_block_start"
        and obj["content_block"]["type"] == "redacted_thinking"
    ]
    assert len(sent) == 2
    kept = run(name, "random").choices[0].extra["blocks"]
    assert [b for b in kept if b["type"] == "redacted_thinking"] == sent


def test_anthropic_server_tool_blocks_are_kept() -> None:
    # A server-side tool (web search) is not a tool call for the user to run; its
    # call, with the input assembled from input_json_delta, and its result are kept.
    name = "anthropic_web_search_citations.sse"
    want = {b["type"]: b for b in EXP[name]["content"]}
    turn = run(name, "random")
    assert turn.tool_calls == []
    kept = {b["type"]: b for b in turn.choices[0].extra["blocks"]}
    assert kept["server_tool_use"]["input"] == want["server_tool_use"]["input"]
    assert kept["server_tool_use"]["id"] == want["server_tool_use"]["id"]
    results = kept["web_search_tool_result"]["content"]
    assert len(results) == want["web_search_tool_result"]["results"]


def test_anthropic_thinking_signature_is_kept() -> None:
    # The signature of a thinking block must go back with it in the next request.
    name = "anthropic_thinking_signature.sse"
    sent = "".join(
        obj["delta"]["signature"]
        for obj in raw_chunks(name)
        if obj.get("delta", {}).get("type") == "signature_delta"
    )
    (thinking,) = [b for b in EXP[name]["content"] if b["type"] == "thinking"]
    assert len(sent) == thinking["signature_len"]
    turn = run(name, "bytewise")
    assert turn.choices[0].extra["reasoning_signature"] == sent
    assert turn.reasoning == thinking["thinking"]


UNTERMINATED = [n for n in NAMES if EXP[n]["undispatched_at_eof"]]


@pytest.mark.parametrize("name", UNTERMINATED)
def test_stream_without_final_blank_line_still_completes(name: str) -> None:
    # These recordings end without the blank line after their last event, which is
    # the [DONE] or message_stop. A strict SSE parser drops it; nbstream keeps it,
    # so the turn is complete, exactly as if the blank line had been there.
    assert len(UNTERMINATED) == 4
    data = read(name)
    assert not data.endswith(b"\n\n")
    cut, whole = run(name, "random"), run(name, data=data + b"\n\n")
    assert cut.status == "complete" and cut.done
    assert cut.warnings == []
    assert cut.to_dict()["choices"] == whole.to_dict()["choices"]
    assert cut.usage == whole.usage


OBFUSCATED = [
    n for n in NAMES if "obfuscation" in EXP[n].get("extra_top_level_keys", {})
]


@pytest.mark.parametrize("name", OBFUSCATED)
def test_obfuscation_padding_is_not_kept(name: str) -> None:
    # OpenAI's "obfuscation" is random padding against side channels: noise that
    # must not fill up a saved transcript.
    assert len(OBFUSCATED) >= 3
    turn = run(name, "random")
    assert "obfuscation" not in turn.extra
    assert all("obfuscation" not in ch.extra for ch in turn.choices)
    assert '"obfuscation"' not in json.dumps(turn.to_dict())


@pytest.mark.parametrize(
    "name",
    [
        "openai_chat_text_usage.sse",
        "zai_glm47_reasoning_content.sse",
        "anthropic_thinking_signature.sse",
        "openai_chat_tool_call.sse",
    ],
)
def test_stream_cut_before_its_end_is_incomplete(name: str) -> None:
    # The connection dropped mid-reply (in the middle of an event): no [DONE], no
    # finish reason. The partial reply is kept, and the user is told it may be cut.
    data = read(name)
    cut = data[: len(data) // 2]
    for marker in (
        b"[DONE]",
        b'"finish_reason":"',
        b'"stop_reason":"',
        b"message_stop",
    ):
        assert marker not in cut
    assert not cut.endswith(b"\n\n")
    e = EXP[name]
    turn = run(name, "random", data=cut)
    assert turn.status == "incomplete"
    assert turn.finish_reason is None
    assert any("cut" in w for w in turn.warnings)
    if e["kind"] == "anthropic":
        text = "".join(b.get("text", "") for b in e["content"] if b["type"] == "text")
        reasoning = "".join(b.get("thinking", "") for b in e["content"])
    else:
        c = e["choices"]["0"]
        text = c.get("content") or ""
        reasoning = c.get("reasoning") or c.get("reasoning_content") or ""
    assert text.startswith(turn.text) and reasoning.startswith(turn.reasoning)
    assert turn.text or turn.reasoning or turn.tool_calls
    if e["kind"] != "anthropic":
        want_calls = e["choices"]["0"].get("tool_calls", [])
        for call, want in zip(turn.tool_calls, want_calls, strict=False):
            # arguments cut in half: kept as streamed, not valid JSON, and said so
            assert want["arguments"].startswith(call.arguments)
            assert call.arguments != want["arguments"]
            assert call.input is None and call.error


@pytest.mark.parametrize(
    ("name", "broken"),
    [
        (
            "openai_chat_text_usage.sse",
            b'data: {"choices":[{"index":0,"delta":{"content":"BROK\n\n',
        ),
        (
            "anthropic_text_minimal_padded.sse",
            b"event: content_block_delta\n"
            b'data: {"type":"content_block_delta","index":0,"delta":{"type":"te\n\n',
        ),
    ],
)
def test_malformed_json_chunk_warns_and_the_stream_goes_on(
    name: str, broken: bytes
) -> None:
    data = read(name)
    at = [i for i in range(len(data)) if data.startswith(b"\n\n", i)][2] + 2
    clean = run(name)
    turn = run(name, "random", data=data[:at] + broken + data[at:])
    assert len(turn.warnings) == 1
    assert "JSON" in turn.warnings[0]
    assert turn.status == "complete"
    assert turn.text == clean.text and turn.text
    assert clean.finish_reason is not None
    assert turn.finish_reason == clean.finish_reason
    assert turn.usage == clean.usage


def _is_content_delta(api: str, obj: dict[str, Any]) -> bool:
    if api == "anthropic":  # an empty delta carries no token: it is not counted
        delta = obj.get("delta", {})
        return obj.get("type") == "content_block_delta" and bool(
            delta.get("text") or delta.get("thinking")
        )
    return any(
        (ch.get("delta") or {}).get("content") for ch in obj.get("choices") or []
    )


@pytest.mark.parametrize(
    "name", ["openai_chat_text_usage.sse", "anthropic_thinking_signature.sse"]
)
def test_arrival_times(name: str) -> None:
    # Each event is fed at its own time. Time to first token is when the first
    # content arrived (not the first byte: both streams open with events that carry
    # no content), and every content delta has its arrival time for a timeline.
    api = api_of(name)
    turn, p = new_turn(api)
    want: list[float] = []
    blocks = read(name).split(b"\n\n")
    for i, block in enumerate(blocks):
        now = 0.25 * (i + 1)  # exact in float32, like the stored arrivals
        p.feed(block + b"\n\n", now)
        for _, data in raw_events(block):
            if data != "[DONE]" and _is_content_delta(api, json.loads(data)):
                want.append(now)
    p.close(0.25 * (len(blocks) + 1))
    assert want and want[0] > 0.25
    assert turn.metrics.ttft_s == want[0]
    assert turn.metrics.deltas == len(want)
    assert turn.metrics.arrivals.tolist() == want
    assert turn.metrics.elapsed_s == 0.25 * (len(blocks) + 1)
