"""Which HTTP client sends a request: nbstream's own HTTP/1.1 client unless something
needs httpx2 — a proxy (decided exactly as httpx2 decides it), record/replay,
``Client(http="httpx2")`` / ``NBSTREAM_HTTP``, a URL it does not handle.
"""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from nbstream import Client, ConfigurationError, Timeouts
from nbstream._http.transport import HTTP, proxied
from tests.clientkit import KEY, ok_reply
from tests.loopback import LoopbackServer

PROXY_VARS = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
]
URLS = [
    "http://127.0.0.1:8000/v1",
    "http://localhost:8000/v1",
    "https://api.openai.com/v1",
    "https://api.anthropic.com/v1",
    "http://10.1.2.3/v1",
    "http://[::1]:8000/v1",
    "https://my.gateway.example.com:8443/v1",
]
ENVS: list[dict[str, str]] = [
    {},
    {"HTTP_PROXY": "http://proxy:3128"},
    {"HTTPS_PROXY": "http://proxy:3128"},
    {"https_proxy": "proxy:3128"},
    {"ALL_PROXY": "http://proxy:3128"},
    {"ALL_PROXY": "http://proxy:3128", "NO_PROXY": "localhost,127.0.0.1"},
    {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".openai.com"},
    {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "openai.com"},
    {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "*.example.com"},
    {"ALL_PROXY": "http://proxy:3128", "NO_PROXY": "*"},
    {"ALL_PROXY": "http://proxy:3128", "NO_PROXY": "10.0.0.0/8"},
    {"ALL_PROXY": "http://proxy:3128", "NO_PROXY": "::1"},
    {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "https://api.openai.com"},
    {"ALL_PROXY": "socks5://proxy:1080"},
]


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in [*PROXY_VARS, "REQUEST_METHOD"]:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _env_id(env: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in env.items()) or "none"


@pytest.mark.parametrize("env", ENVS, ids=_env_id)
def test_a_proxy_is_used_exactly_where_httpx2_would_use_one(
    no_proxies: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for k, v in env.items():
        no_proxies.setenv(k, v)
    try:
        client = httpx2.AsyncClient()
    except ImportError:  # a socks proxy without socksio: httpx2 is still the one
        assert all(proxied(u) for u in URLS)  # chosen (and says what to install)
        return
    for url in URLS:
        httpx2_proxies = (
            client._transport_for_url(httpx2.URL(url)) is not client._transport
        )
        assert proxied(url) == httpx2_proxies, url
        kind = HTTP(url, Timeouts()).kind
        assert kind == ("httpx2" if httpx2_proxies else "h1"), url


def test_the_choice_can_be_forced(no_proxies: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:8000/v1"
    assert HTTP(url, Timeouts()).kind == "h1"
    assert HTTP(url, Timeouts(), http="httpx2").kind == "httpx2"
    assert HTTP("http://user:pw@127.0.0.1/v1", Timeouts()).kind == "httpx2"
    assert HTTP("http://bücher.example/v1", Timeouts()).kind == "httpx2"
    no_proxies.setenv("HTTP_PROXY", "http://proxy:3128")
    assert HTTP(url, Timeouts()).kind == "httpx2"
    assert HTTP(url, Timeouts(), http="h1").kind == "h1"  # asked for: no proxy


def test_client_http_takes_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = "http://127.0.0.1:8000/v1"
    assert Client(base_url=url, model="m").http == "auto"
    monkeypatch.setenv("NBSTREAM_HTTP", "httpx2")
    assert Client(base_url=url, model="m").http == "httpx2"
    assert Client(base_url=url, model="m", http="h1").http == "h1"
    monkeypatch.setenv("NBSTREAM_HTTP", "fast")
    with pytest.raises(ConfigurationError, match="NBSTREAM_HTTP is 'fast'"):
        Client(base_url=url, model="m")
    with pytest.raises(ConfigurationError, match=r"Client\(http=\.\.\.\) is 'h2'"):
        Client(base_url=url, model="m", http="h2")
    monkeypatch.delenv("NBSTREAM_HTTP")
    with pytest.raises(ConfigurationError, match="cannot record or replay"):
        Client(base_url=url, model="m", http="h1", record="x.jsonl")


def test_record_and_replay_go_through_httpx2() -> None:
    http = HTTP("http://127.0.0.1:8000/v1", Timeouts(), record="x.jsonl")
    assert http.kind == "httpx2" and http.recording


def test_a_proxied_request_really_goes_through_the_proxy(
    no_proxies: pytest.MonkeyPatch,
) -> None:
    with LoopbackServer() as proxy:  # a "proxy" that answers itself
        proxy.enqueue(ok_reply(["via", " proxy"]))
        no_proxies.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        client = Client(
            base_url="http://model.invalid/v1", model="m", api_key=KEY, max_retries=0
        )

        async def go() -> str:
            try:
                return (await client.achat("Hi")).text
            finally:
                await client.aclose()

        assert asyncio.run(go()) == "via proxy"
        (seen,) = proxy.requests
        assert seen.path == "http://model.invalid/v1/chat/completions"  # absolute-form


@pytest.mark.parametrize("http", ["h1", "httpx2"])
def test_both_clients_send_any_prompt_as_json_the_server_can_read(
    http: str, no_proxies: pytest.MonkeyPatch
) -> None:
    """A prompt with a lone surrogate (half an emoji's escape pair, pasted or cut by a
    slice) or non-ASCII text: the body is valid JSON of exactly that text, sent as
    ``application/json``, and the reply comes back: not an internal error."""
    prompts = ["caf\u00e9 \U0001f600", "half \ud83d pair", "big " + str(2**70)]
    with LoopbackServer() as srv:
        for _ in prompts:
            srv.enqueue(ok_reply())
        client = Client(base_url=srv.base_url, api_key=KEY, model="m", http=http)
        try:
            for p in prompts:
                turn = client.chat(p, seed=2**70)
                assert turn.status == "complete" and turn.text == "Hello world"
        finally:
            client.close()
        for seen, p in zip(srv.requests, prompts, strict=True):
            assert seen.headers["content-type"] == "application/json"
            assert seen.json["messages"][-1]["content"] == p
            assert seen.json["seed"] == 2**70
