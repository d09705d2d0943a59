"""Where a ``Client()`` gets its settings from, and the API key never leaking out."""

from __future__ import annotations

import json
import logging
import socket
import traceback
from typing import Any

import pytest

from nbstream import (
    APIConnectionError,
    APIStatusError,
    Client,
    ConfigurationError,
    NbstreamError,
    Transcript,
)
from nbstream._http.settings import LOCAL_BASE_URL, LOCAL_MODEL, LOCAL_PORT
from tests.clientkit import KEY, MODES, chat, client_for, last, ok_reply
from tests.conftest import STREAMS
from tests.loopback import LoopbackServer, Reply, openai_chunks

# -- the environment ------------------------------------------------------------------------


def test_nbstream_variables(server: LoopbackServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("NBSTREAM_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("NBSTREAM_MODEL", "env-model")
    monkeypatch.setenv("NBSTREAM_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-loses")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    client = Client()
    assert (client.api, client.base_url, client.model) == (
        "openai",
        server.base_url,
        "env-model",
    )
    server.enqueue(ok_reply(["env"]))
    assert client.chat("Hi").text == "env"
    seen = last(server)
    assert seen.path == "/v1/chat/completions"
    assert seen.json["model"] == "env-model"
    assert seen.headers["authorization"] == "Bearer sk-from-env"


def test_nbstream_api_anthropic(server: LoopbackServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("NBSTREAM_API", "Anthropic")
    monkeypatch.setenv("NBSTREAM_BASE_URL", server.base_url)
    monkeypatch.setenv("NBSTREAM_API_KEY", "sk-ant-for-this-server")
    client = Client()
    assert client.api == "anthropic" and client.model == "claude-sonnet-4-5"
    body = (STREAMS / "anthropic_text_minimal_padded.sse").read_bytes()
    server.enqueue(Reply.sse(body))
    assert client.chat("Hi").status == "complete"
    assert last(server).path == "/v1/messages"
    assert last(server).headers["x-api-key"] == "sk-ant-for-this-server"


@pytest.mark.parametrize(
    ("var", "api", "header"),
    [
        ("OPENAI_API_KEY", "openai", "authorization"),
        ("ANTHROPIC_API_KEY", "anthropic", "x-api-key"),
    ],
)
def test_a_provider_key_is_not_sent_to_another_server(
    server: LoopbackServer, monkeypatch: Any, var: str, api: str, header: str
) -> None:
    # A key set in the shell for OpenAI/Anthropic must not reach a third-party server
    # that NBSTREAM_BASE_URL (or %%chat -u) points at.
    monkeypatch.setenv(var, "sk-provider-only-0123")
    monkeypatch.setenv("NBSTREAM_BASE_URL", server.base_url)
    client = Client(api=api)
    assert client.api_key is None
    server.enqueue(Reply.json(401, {"error": {"message": "Missing API key."}}))
    with pytest.raises(APIStatusError) as err:
        client.chat("Hi")
    assert header not in last(server).headers
    assert f"{var} is set" in str(err.value) and "NBSTREAM_API_KEY" in str(err.value)
    # ...while the provider's own base URL variable still takes its key
    monkeypatch.delenv("NBSTREAM_BASE_URL")
    own = "ANTHROPIC_BASE_URL" if api == "anthropic" else "OPENAI_BASE_URL"
    monkeypatch.setenv(own, server.base_url)
    assert Client(api=api).api_key is not None


def test_openai_variables(server: LoopbackServer, monkeypatch: Any) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env")
    client = Client()
    assert client.api == "openai" and client.base_url == server.base_url
    assert client.model == "gpt-4o-mini"
    server.enqueue(ok_reply())
    client.chat("Hi")
    assert last(server).headers["authorization"] == "Bearer sk-openai-env"


def test_openai_key_alone_means_openai(monkeypatch: Any) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env")
    client = Client()
    assert (client.api, client.base_url) == ("openai", "https://api.openai.com/v1")


def test_anthropic_key_alone_means_anthropic(monkeypatch: Any) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    client = Client()
    assert (client.api, client.base_url) == (
        "anthropic",
        "https://api.anthropic.com/v1",
    )
    assert client.api_key is not None and client.api_key.get() == "sk-ant-env"


def test_arguments_win_over_the_environment(
    server: LoopbackServer, monkeypatch: Any
) -> None:
    monkeypatch.setenv("NBSTREAM_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("NBSTREAM_MODEL", "env-model")
    monkeypatch.setenv("NBSTREAM_API_KEY", "sk-env")
    client = Client(base_url=server.base_url, model="arg-model", api_key="sk-arg")
    server.enqueue(ok_reply())
    client.chat("Hi")
    assert last(server).json["model"] == "arg-model"
    assert last(server).headers["authorization"] == "Bearer sk-arg"


def test_empty_variables_count_as_unset(monkeypatch: Any) -> None:
    monkeypatch.setenv("NBSTREAM_BASE_URL", "")
    monkeypatch.setenv("NBSTREAM_API", "")
    assert Client().base_url == LOCAL_BASE_URL


@pytest.mark.parametrize("where", ["env", "argument"])
def test_unknown_api_says_what_is_known(monkeypatch: Any, where: str) -> None:
    if where == "env":
        monkeypatch.setenv("NBSTREAM_API", "gemini")
        make = Client
    else:

        def make() -> Client:
            return Client(api="gemini")

    with pytest.raises(ConfigurationError) as info:
        make()
    msg = str(info.value)
    assert "'gemini'" in msg and "api='openai'" in msg and "api='anthropic'" in msg
    if where == "env":
        assert "NBSTREAM_API" in msg


def test_base_url_without_scheme(monkeypatch: Any) -> None:
    monkeypatch.setenv("NBSTREAM_BASE_URL", "localhost:8000/v1")
    with pytest.raises(ConfigurationError) as info:
        Client()
    assert "NBSTREAM_BASE_URL" in str(info.value) and "http://" in str(info.value)


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("mode", MODES)
def test_nothing_configured_means_the_local_model(mode: str) -> None:
    client = Client()
    assert (client.api, client.base_url, client.model) == (
        "openai",
        LOCAL_BASE_URL,
        LOCAL_MODEL,
    )
    assert client.api_key is None
    if _port_in_use(LOCAL_PORT):
        pytest.skip(f"something listens on the local model's port {LOCAL_PORT}")
    client.retry_delay = 0.01  # the same settings, quicker retries
    with pytest.raises(APIConnectionError) as info:
        chat(client, mode)
    msg = str(info.value)
    assert "python -m nbstream.local" in msg
    assert LOCAL_BASE_URL in msg


# -- the API key never leaks ------------------------------------------------------------------


def test_the_key_is_not_in_the_client_repr() -> None:
    client = Client(base_url="http://127.0.0.1:9/v1", model="m", api_key=KEY)
    for text in (repr(client), str(client), repr(client.settings), repr(vars(client))):
        assert KEY not in text
    assert "api_key=***" in repr(client)
    assert client.api_key is not None and client.api_key.get() == KEY


def _echo_401(seen: Any) -> Reply:
    """A 401 that quotes the key it was sent (as real providers partly do)."""
    sent = seen.headers.get("authorization", seen.headers.get("x-api-key", ""))
    return Reply.json(
        401,
        {"error": {"message": f"Incorrect API key provided: {sent}", "key": sent}},
        {"x-request-id": "req-1"},
    )


def _echo_503(seen: Any) -> Reply:
    sent = seen.headers["authorization"]
    return Reply.json(503, {"error": {"message": f"overloaded for {sent}"}})


def _echo_not_a_stream(seen: Any) -> Reply:
    return Reply.json(200, {"you_sent": seen.headers["authorization"]})


def _echo_in_stream(seen: Any) -> Reply:
    sent = seen.headers["authorization"]
    datas = openai_chunks(["Partial"], finish=None, done=False)
    err = {"error": {"message": f"invalid key {sent}", "code": "auth"}}
    reply = Reply.events(datas)
    reply.chunks.append(f"event: error\ndata: {json.dumps(err)}\n\n".encode())
    return reply


def _echo_bad_chunk(seen: Any) -> Reply:
    sent = seen.headers["authorization"]
    datas = openai_chunks(["ok"])
    datas.insert(1, f"not json {sent}")
    return Reply.events(datas)


ECHOES = {
    "401-body": (_echo_401, "openai"),
    "401-anthropic": (_echo_401, "anthropic"),
    "503-retried": (_echo_503, "openai"),
    "200-not-a-stream": (_echo_not_a_stream, "openai"),
    "error-event": (_echo_in_stream, "openai"),
    "malformed-chunk": (_echo_bad_chunk, "openai"),
}


def _exception_texts(exc: BaseException) -> list[str]:
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    texts.append(repr({k: v for k, v in vars(exc).items() if k != "turn"}))
    return texts


@pytest.mark.parametrize("case", list(ECHOES))
@pytest.mark.parametrize("mode", MODES)
def test_the_key_never_leaks_even_when_the_server_echoes_it(
    server: LoopbackServer, caplog: Any, mode: str, case: str, http: str
) -> None:
    reply, api = ECHOES[case]
    server.enqueue(reply, reply, reply)
    for name in ("nbstream", "httpx2", "httpcore2"):
        caplog.set_level(logging.DEBUG, logger=name)
    client = client_for(server, api=api, max_retries=1)
    texts = [repr(client)]
    turn: Any = None
    try:
        turn = chat(client, mode)
    except NbstreamError as exc:
        texts += _exception_texts(exc)
        turn = exc.turn
    assert turn is not None
    texts.append(Transcript([turn]).to_json())
    texts.append(repr(turn))
    texts += [r.getMessage() for r in caplog.records]
    texts.append(caplog.text)

    # the key was really sent and echoed: the test is not vacuous
    assert KEY in last(server).headers.get("authorization", "") + last(
        server
    ).headers.get("x-api-key", "")
    # the HTTP layer logged the echoing headers (and they were scrubbed)
    layer = "httpcore2" if http == "httpx2" else "nbstream.http"
    assert any(r.name.startswith(layer) for r in caplog.records)
    for text in texts:
        assert KEY not in text
        assert KEY[8:] not in text  # nor a recognisable part of it


def test_a_scrubbed_error_still_tells_the_story(server: LoopbackServer) -> None:
    server.enqueue(_echo_401)
    with pytest.raises(APIStatusError) as info:
        client_for(server).chat("Hi")
    assert "Incorrect API key provided: Bearer ***" in str(info.value)
    assert info.value.status_code == 401 and info.value.request_id == "req-1"


@pytest.mark.parametrize("mode", MODES)
def test_events_handed_to_the_consumer_do_not_carry_the_key(
    server: LoopbackServer, mode: str
) -> None:
    from nbstream import ProviderStreamError
    from tests.clientkit import collect

    server.enqueue(_echo_in_stream)
    got: list[Any] = []
    with pytest.raises(ProviderStreamError):
        collect(client_for(server), mode, on_event=lambda s, ev: got.append(ev))
    kinds = [ev.type for ev in got]
    assert "error" in kinds and "text" in kinds
    assert KEY not in repr(got)
    error = next(ev for ev in got if ev.type == "error")
    assert "invalid key Bearer ***" in error.message
