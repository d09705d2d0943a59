"""Middleware around each request: order, changing the request, transforming and
dropping events, seeing the end, failing, sync/async parity, and the built-in Logging."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest

from nbstream import (
    APIStatusError,
    Client,
    NbstreamError,
    ReasoningDelta,
    TextDelta,
    Turn,
)
from nbstream.middleware import Incoming, Logging, Middleware, MiddlewareError, Outgoing
from tests.clientkit import KEY, MODES, chat, client_for, collect
from tests.loopback import LoopbackServer, Reply, openai_chunks


class Recorder(Middleware):
    def __init__(self, name: str, log: list[str]) -> None:
        self._name, self.log = name, log

    @property
    def name(self) -> str:
        return self._name

    def before_request(self, request: Outgoing) -> None:
        self.log.append(f"{self._name}.before")

    def on_response(self, request: Outgoing, response: Incoming) -> None:
        self.log.append(f"{self._name}.response {response.status}")

    def on_event(self, event: Any, turn: Turn) -> Any:
        if isinstance(event, TextDelta):
            self.log.append(f"{self._name}.event {event.text}")
        return event

    def after(self, request: Outgoing, turn: Turn, error: NbstreamError | None) -> None:
        self.log.append(f"{self._name}.after {turn.status}")


@pytest.mark.parametrize("mode", MODES)
def test_middleware_run_in_onion_order(server: LoopbackServer, mode: str) -> None:
    log: list[str] = []
    server.enqueue(Reply.events(openai_chunks(["Hi"])))
    client = client_for(server, middleware=[Recorder("a", log), Recorder("b", log)])
    chat(client, mode)
    assert log == [
        "a.before",
        "b.before",
        "b.response 200",
        "a.response 200",
        "b.event Hi",
        "a.event Hi",
        "b.after complete",
        "a.after complete",
    ]


class Rewrite(Middleware):
    async def before_request(self, request: Outgoing) -> None:
        await asyncio.sleep(0)  # a hook may be a coroutine
        request.body["temperature"] = 0.25
        request.body["messages"].append({"role": "user", "content": "(be brief)"})
        request.headers["x-trace-id"] = "trace-1"
        request.headers["authorization"] = "Bearer stolen"  # cannot replace the key

    def on_event(self, event: Any, turn: Turn) -> Any:
        if isinstance(event, ReasoningDelta):
            return None  # dropped
        if isinstance(event, TextDelta):
            return TextDelta(event.text.upper(), event.choice)
        return event


@pytest.mark.parametrize("mode", MODES)
def test_middleware_changes_the_request_and_the_events(
    server: LoopbackServer, mode: str
) -> None:
    import json

    datas = [
        json.dumps({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]}),
        *openai_chunks(["hello", " world"]),
    ]
    server.enqueue(Reply.events(datas))
    events, turn = collect(client_for(server, middleware=[Rewrite()]), mode)
    seen = server.requests[0]
    assert seen.json["temperature"] == 0.25
    assert seen.json["messages"][-1] == {"role": "user", "content": "(be brief)"}
    assert seen.headers["x-trace-id"] == "trace-1"
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert turn.text == "HELLO WORLD" and turn.reasoning == ""
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["HELLO", " WORLD"]
    assert not any(isinstance(e, ReasoningDelta) for e in events)


class Boom(Middleware):
    def __init__(self, where: str) -> None:
        self.where = where

    def _maybe(self, hook: str) -> None:
        if hook == self.where:
            raise RuntimeError(f"boom in {hook} with {KEY}")

    def before_request(self, request: Outgoing) -> None:
        self._maybe("before_request")

    def on_response(self, request: Outgoing, response: Incoming) -> None:
        self._maybe("on_response")

    def on_event(self, event: Any, turn: Turn) -> Any:
        if isinstance(event, TextDelta):
            self._maybe("on_event")
        return event

    def after(self, request: Outgoing, turn: Turn, error: NbstreamError | None) -> None:
        self._maybe("after")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "where", ["before_request", "on_response", "on_event", "after"]
)
def test_a_middleware_that_raises_ends_the_turn_naming_it(
    server: LoopbackServer, mode: str, where: str
) -> None:
    server.enqueue(Reply.events(openai_chunks(["Hi", " there"])))
    with pytest.raises(MiddlewareError) as info:
        chat(client_for(server, middleware=[Boom(where)]), mode)
    err = info.value
    assert err.middleware == "Boom" and "Boom" in str(err) and where in str(err)
    assert KEY[:8] not in str(err)
    assert err.turn is not None and err.turn.status == "error"
    assert err.turn.error is not None and err.turn.error.kind == "MiddlewareError"
    assert len(server.requests) == (0 if where == "before_request" else 1)


@pytest.mark.parametrize("mode", MODES)
def test_after_sees_the_error(server: LoopbackServer, mode: str) -> None:
    seen: list[Any] = []

    class Watch(Middleware):
        def after(
            self, request: Outgoing, turn: Turn, error: NbstreamError | None
        ) -> None:
            seen.append((turn.status, type(error).__name__))

    server.enqueue(Reply.json(401, {"error": {"message": "bad key"}}))
    with pytest.raises(APIStatusError):
        chat(client_for(server, middleware=[Watch()]), mode)
    assert seen == [("error", "APIStatusError")]


def test_logging_writes_one_line_per_request_and_every_event_at_debug(
    server: LoopbackServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.enqueue(
        Reply.events(
            openai_chunks(["Hi"], usage={"prompt_tokens": 3, "completion_tokens": 1})
        ),
        Reply.json(400, {"error": {"message": f"bad request for {KEY}"}}),
    )
    client = client_for(server, middleware=[Logging()], max_retries=0)
    with caplog.at_level(logging.INFO, logger="nbstream.requests"):
        client.chat("Hi")
        with pytest.raises(APIStatusError):
            client.chat("Hi")
    lines = [r.getMessage() for r in caplog.records if r.name == "nbstream.requests"]
    assert len(lines) == 2
    assert "model=test-model → 200 complete" in lines[0]
    assert "3 in · 1 out tokens" in lines[0] and "finish stop" in lines[0]
    assert "→ 400" in lines[1] and "APIStatusError" in lines[1]
    assert KEY[:8] not in "\n".join(lines)
    caplog.clear()
    server.enqueue(Reply.events(openai_chunks(["Hi"])))
    with caplog.at_level(logging.DEBUG, logger="nbstream.requests"):
        client.chat("Hi")
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("TextDelta(text='Hi'" in d for d in debug)


def test_each_fallback_attempt_passes_its_clients_middleware(
    server: LoopbackServer,
) -> None:
    log: list[str] = []
    server.enqueue(
        Reply.json(503, {"error": {"message": "down"}}),
        Reply.events(openai_chunks(["B"])),
    )
    client = client_for(
        server, fallbacks=["other"], max_retries=0, middleware=[Recorder("m", log)]
    )
    assert client.chat("Hi").text == "B"
    assert log.count("m.before") == 2 and log[-1] == "m.after complete"


def test_middleware_that_is_not_one_fails_when_configured() -> None:
    from nbstream import ConfigurationError

    with pytest.raises(ConfigurationError, match="Middleware"):
        Client(base_url="http://127.0.0.1:1/v1", middleware=[object()])  # type: ignore[list-item]


# -- RateLimit ------------------------------------------------------------------------


def _arrivals(server: LoopbackServer) -> list[float]:
    return sorted(r.received_at for r in server.requests)


def test_rate_limit_spreads_requests_evenly(server: LoopbackServer) -> None:
    """rpm=300 is one request every 0.2 s: eight at once arrive spaced, not in a burst."""
    from nbstream.middleware import RateLimit

    n = 8
    server.enqueue(*[Reply.events(openai_chunks(["ok"])) for _ in range(n)])
    client = client_for(server, middleware=[RateLimit(rpm=300)])

    async def main() -> list[str]:
        try:
            turns = await asyncio.gather(*[client.achat("Hi") for _ in range(n)])
            return [t.text for t in turns]
        finally:
            await client.aclose()

    assert asyncio.run(main()) == ["ok"] * n
    at = _arrivals(server)
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert min(gaps) > 0.15, gaps  # 60 / 300 = 0.2 s, less the 2 % headroom and jitter
    # and in no one-second window more than rpm / 60 (+1 for the window's edges)
    assert max(sum(1 for t in at if s <= t < s + 1.0) for s in at) <= 6


def test_rate_limit_pauses_everything_after_a_429_with_retry_after(
    server: LoopbackServer,
) -> None:
    from nbstream.middleware import RateLimit

    server.enqueue(
        Reply.json(429, {"error": {"message": "slow down"}}, {"retry-after": "0.6"}),
        Reply.events(openai_chunks(["ok"])),
    )
    client = client_for(server, middleware=[RateLimit()], max_retries=0)
    with pytest.raises(APIStatusError):
        client.chat("Hi")
    assert client.chat("Hi").text == "ok"  # another request: it waited for the pause
    first, second = _arrivals(server)
    assert second - first >= 0.55


def test_rate_limit_honours_an_exhausted_budget_in_the_headers(
    server: LoopbackServer,
) -> None:
    from nbstream.middleware import RateLimit

    spent = Reply.events(openai_chunks(["a"]))
    spent.headers.update(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "600ms"}
    )
    server.enqueue(spent, Reply.events(openai_chunks(["b"])))
    client = client_for(server, middleware=[RateLimit()])
    assert client.chat("Hi").text == "a"
    assert client.chat("Hi").text == "b"
    first, second = _arrivals(server)
    assert second - first >= 0.55
