"""The API key appears nowhere: not in errors, reprs, tracebacks with locals, logs, the
transcript, recordings, cell outputs or widget state, whatever the server echoes and
wherever it cuts. And a key HTTP cannot carry is refused when it is configured.

The echo server below puts the key it received back into every place a server can:
each response header, error bodies (message, type, code, unknown fields), unknown chunk
fields, the reply text split across chunks, a non-JSON chunk long enough to be quoted
and cut in the middle of the key.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import string
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbstream import Client, ConfigurationError, NbstreamError, Transcript, Turn
from nbstream._core.secrets import MIN_SLICE, Redactor, Scrubber, check_key
from nbstream._notebook.render import final_bundle
from tests.loopback import LoopbackServer, Reply, Seen

SCENARIOS = [
    "status_400",
    "status_429_then_400",
    "error_event",
    "text",
    "unknown_fields",
    "not_json_chunk",
    "tool_arguments",
    "model_and_ids",
]


def slices(key: str) -> list[str]:
    return [key[i : i + MIN_SLICE] for i in range(len(key) - MIN_SLICE + 1)]


def assert_nowhere(key: str, *texts: str) -> None:
    for text in texts:
        for piece in slices(key):
            assert piece not in text, f"{piece!r} of the key found in: {text[:2000]}"


def received_key(seen: Seen, api: str) -> str:
    if api == "anthropic":
        return seen.headers["x-api-key"]
    return seen.headers["authorization"].removeprefix("Bearer ")


def echo_reply(scenario: str, api: str, cut: int) -> Any:
    """A reply function: the key the server received, everywhere ``scenario`` puts it."""

    def reply(seen: Seen) -> Reply:
        key = received_key(seen, api)
        long = "x" * cut + key + "y" * 40  # cut somewhere in or around the key
        headers = {
            "x-request-id": f"req-{key}",
            "request-id": key,
            "x-echo": long,
        }
        if scenario.startswith("status"):
            status = 429 if scenario == "status_429_then_400" and seen.path else 400
            body = {
                "error": {
                    "message": f"Incorrect API key provided: {long}",
                    "type": key,
                    "code": key,
                    "param": long,
                },
                "request_id": key,
            }
            return Reply.json(status, body, {**headers, "retry-after": "0"})
        chunks = stream_with_key(scenario, api, key, long)
        r = Reply.sse("".join(chunks).encode(), chunk_size=7)
        r.headers.update(headers)
        return r

    return reply


def stream_with_key(scenario: str, api: str, key: str, long: str) -> list[str]:
    def ev(d: Any) -> str:
        data = d if isinstance(d, str) else json.dumps(d)
        return f"data: {data}\n\n"

    if api == "openai":
        base = {"id": "c1", "model": "m"}
        if scenario == "model_and_ids":
            base = {"id": f"id-{key}", "model": long}
        text = ["Your key is ", key[:5], key[5:13], key[13:], " ok"]
        if scenario != "text":
            text = ["Hello"]
        out = [
            ev({**base, "choices": [{"index": 0, "delta": {"content": t}}]})
            for t in text
        ]
        if scenario == "unknown_fields":
            out.append(ev({**base, "choices": [], "x_debug": {"auth": long}, "k": key}))
        if scenario == "not_json_chunk":
            out.append(f"data: {long}\n\n")
        if scenario == "tool_arguments":
            args = json.dumps({"key": key})
            out.append(
                ev(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {
                                    "tool_calls": [
                                        {
                                            "index": 0,
                                            "id": key,
                                            "function": {"name": "f", "arguments": a},
                                        }
                                        for a in (args[:20], args[20:])
                                    ]
                                },
                            }
                        ],
                    }
                )
            )
        if scenario == "error_event":
            out.append(ev({"error": {"message": long, "code": key, "type": key}}))
            return out
        out.append(
            ev(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
            )
        )
        out.append(ev("[DONE]"))
        return out
    msg: dict[str, Any] = {
        "id": "msg_1",
        "model": "claude",
        "usage": {"input_tokens": 3},
    }
    if scenario == "model_and_ids":
        msg = {"id": f"id-{key}", "model": long, "usage": {"input_tokens": 3}}
    out = [ev({"type": "message_start", "message": msg})]
    out.append(
        ev(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        )
    )
    text = ["Your key is ", key[:9], key[9:], "."] if scenario == "text" else ["Hello"]
    for t in text:
        out.append(
            ev(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": t},
                }
            )
        )
    if scenario == "unknown_fields":
        out.append(ev({"type": "message_delta", "delta": {"echo": long}, "usage": {}}))
    if scenario == "not_json_chunk":
        out.append(f"data: {long}\n\n")
    if scenario == "tool_arguments":
        out.append(
            ev(
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {
                        "type": "tool_use",
                        "id": key,
                        "name": "f",
                        "input": {},
                    },
                }
            )
        )
        args = json.dumps({"key": key})
        for a in (args[:20], args[20:]):
            out.append(
                ev(
                    {
                        "type": "content_block_delta",
                        "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": a},
                    }
                )
            )
        out.append(ev({"type": "content_block_stop", "index": 1}))
    if scenario == "error_event":
        out.append(ev({"type": "error", "error": {"type": key, "message": long}}))
        return out
    out.append(
        ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 5},
            }
        )
    )
    out.append(ev({"type": "message_stop"}))
    return out


def everything_a_user_can_see(
    turn: Turn, err: BaseException | None, tmp: Path, records: Path
) -> list[str]:
    out = [repr(turn), json.dumps(turn.to_dict())]
    tr = Transcript([turn])
    out.append(tr.to_json())
    path = tmp / "t.json"
    tr.save(path)
    out.append(path.read_text())
    out.append(tr.to_pandas().to_csv())
    out += [tr.to_markdown(), tr.to_html()]  # the documents a user shares
    out.append(
        json.dumps(tr.to_messages("openai")) + json.dumps(tr.to_messages("anthropic"))
    )
    out += list(final_bundle(turn).values())
    out.append(json.dumps(turn.extra) + repr(turn.warnings) + repr(turn.error))
    out.append(pickle.dumps(turn).decode("latin-1"))
    if err is not None:
        out += [str(err), repr(err), "".join(traceback.format_exception(err))]
        # nbstream's frames with their locals (the test's own frames hold the key)
        tb = err.__traceback__
        while tb is not None and "/tests/" in tb.tb_frame.f_code.co_filename:
            tb = tb.tb_next
        te = traceback.TracebackException(type(err), err, tb, capture_locals=True)
        out.append("".join(te.format()))
        out.append(json.dumps(getattr(err, "body", None)))
        out.append(repr(vars(err)))
    if records.exists():
        out.append(records.read_text())
    # the chat panel's saved state (its messages and totals)
    from nbstream import ChatWidget, Conversation

    client = Client(base_url="http://127.0.0.1:1/v1", model="m")
    panel = ChatWidget(conversation=Conversation(client, transcript=Transcript([turn])))
    state = panel.get_state()
    out.append(json.dumps({k: v for k, v in state.items() if not k.startswith("_")}))
    return out


def run_echo(
    server: LoopbackServer,
    key: str,
    api: str,
    scenario: str,
    cut: int,
    tmp: Path,
    caplog: pytest.LogCaptureFixture,
) -> list[str]:
    server.reset()
    server.enqueue(echo_reply(scenario, api, cut), echo_reply(scenario, api, cut))
    records = tmp / "rec.jsonl"
    client = Client(
        base_url=server.base_url,
        api_key=key,
        model="m",
        api=api,
        retry_delay=0.0,
        max_retries=1,
        record=records,
    )
    err: NbstreamError | None = None
    with caplog.at_level(logging.DEBUG):
        try:
            turn = client.chat("Hi")
        except NbstreamError as exc:
            err = exc
            assert exc.turn is not None
            turn = exc.turn
        client.close()
    logs = "\n".join(r.getMessage() for r in caplog.records)
    seen = [received_key(s, api) for s in server.requests]
    assert seen and all(k == key for k in seen)  # the key did reach the server
    return [*everything_a_user_can_see(turn, err, tmp, records), logs, repr(client)]


KEY = "sk-proj-FAKE0123456789notARealKeyXyZ"  # key-shaped, not a key


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_an_echoed_key_is_found_nowhere(
    server: LoopbackServer,
    api: str,
    scenario: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for cut in (100, 110, 290, 480):  # around the lengths messages are cut to
        texts = run_echo(server, KEY, api, scenario, cut, tmp_path, caplog)
        assert_nowhere(KEY, *texts)
        caplog.clear()


def _key(prefix: str, n: int, seed: int) -> str:
    """A key as providers make them: random characters (a key spelled from words
    would match the field names of the very outputs it is looked for in)."""
    rnd = random.Random(seed)
    return prefix + "".join(
        rnd.choice(string.ascii_letters + string.digits + "-_") for _ in range(n)
    )


keys = st.builds(
    _key,
    st.sampled_from(["sk-", "sk-ant-api03-", "", "key_"]),
    st.integers(16, 60),
    st.integers(0, 2**32 - 1),
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    key=keys,
    api=st.sampled_from(["openai", "anthropic"]),
    scenario=st.sampled_from(SCENARIOS),
    cut=st.integers(0, 520),
)
def test_property_an_echoed_key_is_found_nowhere(
    server: LoopbackServer,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
    key: str,
    api: str,
    scenario: str,
    cut: int,
) -> None:
    tmp = tmp_path_factory.mktemp("echo")
    caplog.clear()
    texts = run_echo(server, key, api, scenario, cut, tmp, caplog)
    assert_nowhere(key, *texts)


# -- refused when configured ---------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (KEY + "\n", "ends with a newline"),
        (KEY + "\r\n", "a carriage return"),
        (" " + KEY, "starts with a space"),
        (KEY[:10] + "\x00" + KEY[10:], "a control character"),
        (KEY[:10] + "é" + KEY[10:], "a non-ASCII character"),
        (KEY[:10] + " " + KEY[10:], "a space"),
    ],
)
def test_a_key_http_cannot_carry_is_refused_without_echoing_it(
    bad: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Client(base_url="http://127.0.0.1:1/v1", api_key=bad)
    msg = str(info.value)
    assert says in msg and "api_key" in msg
    assert_nowhere(KEY, msg, repr(info.value))
    if "\x00" in bad:
        return  # an environment variable cannot hold it at all
    monkeypatch.setenv("OPENAI_API_KEY", bad)
    with pytest.raises(ConfigurationError) as info:
        Client()
    assert "OPENAI_API_KEY" in str(info.value)
    assert_nowhere(KEY, str(info.value))


def test_a_key_read_from_a_file_says_how_to_fix_it(tmp_path: Path) -> None:
    f = tmp_path / "key.txt"
    f.write_text(KEY + "\n")
    with pytest.raises(ConfigurationError, match=r"\.strip\(\)"):
        Client(base_url="http://127.0.0.1:1/v1", api_key=f.read_text())


def test_extra_headers_that_carry_secrets_are_scrubbed_too(
    server: LoopbackServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Azure takes its key in ``api-key``; a gateway may take a token in a header."""
    token = "azure-SECRET-TOKEN-0123456789"

    def reply(seen: Seen) -> Reply:
        return Reply.json(
            401, {"error": {"message": f"bad api-key {seen.headers['api-key']}"}}
        )

    server.enqueue(reply)
    client = Client(base_url=server.base_url, model="m", headers={"api-key": token})
    with pytest.raises(NbstreamError) as info:
        client.chat("Hi")
    assert server.requests[0].headers["api-key"] == token
    turn = info.value.turn
    assert turn is not None
    assert_nowhere(token, str(info.value), Transcript([turn]).to_json())
    with pytest.raises(ConfigurationError) as bad:
        Client(base_url=server.base_url, headers={"api-key": token + "\n"})
    assert_nowhere(token, str(bad.value))


# -- the scrubber itself ----------------------------------------------------------------


@given(
    key=keys,
    before=st.text(max_size=60),
    after=st.text(max_size=60),
    limit=st.integers(1, 200),
)
def test_scrub_then_cut_leaves_no_slice_of_the_key(
    key: str, before: str, after: str, limit: int
) -> None:
    s = Scrubber([key])
    for form in (key, json.dumps(key)[1:-1], repr(key)[1:-1]):
        text = before + form + after
        assert_nowhere(key, s.scrub(text), s.cut(text, limit))


@given(key=keys, text=st.text(max_size=80), seed=st.integers(0, 2**32 - 1))
def test_a_key_split_across_pieces_never_shows(key: str, text: str, seed: int) -> None:
    rnd = random.Random(seed)
    whole = text[: len(text) // 2] + key + text[len(text) // 2 :]
    r = Redactor(Scrubber([key]))
    shown: list[str] = []
    i = 0
    while i < len(whole):
        n = rnd.randint(1, 12)
        shown.append(r.feed("text", whole[i : i + n]))
        i += n
    shown.append(r.flush("text"))
    out = "".join(shown)
    # held back while it could be the key's start, then masked whole
    assert key not in out and key[:MIN_SLICE] not in out
    # and what came before it was shown as it came
    assert out.startswith(text[: len(text) // 2].split(key[0])[0])


def test_check_key_accepts_a_normal_key() -> None:
    assert check_key(KEY, "x") == KEY


def test_no_repr_holds_a_header(server: LoopbackServer) -> None:
    client = Client(base_url=server.base_url, api_key=KEY, model="m")
    spec, _turn = client._request("Hi", None, None, {})
    assert_nowhere(KEY, repr(spec), str(spec), repr(client), repr(client.settings))
    assert_nowhere(KEY, repr(vars(client)))
    with pytest.raises(TypeError):
        pickle.dumps(client.settings.api_key)
