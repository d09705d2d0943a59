"""Helpers shared by the ``tests/test_client_*.py`` files (not a test module).

``MODES`` runs the same test through the sync and the async entry points:
``chat(client, mode, ...)`` is ``client.chat`` or ``await client.achat``, and
``collect(client, mode, ...)`` iterates ``client.stream`` or ``client.astream``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from nbstream import Client, Event, Turn
from tests.conftest import FIXTURES
from tests.loopback import STALL, LoopbackServer, Reply, Seen, openai_chunks

MODES = ["sync", "async"]
KEY = "sk-test-SECRET123456789012345"
STOP_WITHIN = 0.1  # seconds between a Stop and the server seeing the connection close


def client_for(server: LoopbackServer, **kw: Any) -> Client:
    kw.setdefault("model", "test-model")
    kw.setdefault("api_key", KEY)
    kw.setdefault("retry_delay", 0.01)
    return Client(base_url=server.base_url, **kw)


def chat(client: Client, mode: str, messages: Any = "Hi", **kw: Any) -> Turn:
    """``client.chat`` or ``await client.achat`` on a fresh event loop."""
    if mode == "sync":
        return client.chat(messages, **kw)

    async def go() -> Turn:
        try:
            return await client.achat(messages, **kw)
        finally:
            await client.aclose()

    return asyncio.run(go())


OnEvent = Callable[[Any, Event], None]


def collect(
    client: Client,
    mode: str,
    messages: Any = "Hi",
    on_event: OnEvent | None = None,
    **kw: Any,
) -> tuple[list[Event], Turn]:
    """Iterate ``client.stream`` / ``client.astream`` inside its context manager;
    ``on_event(stream, event)`` is called for each event as it arrives."""
    events: list[Event] = []
    if mode == "sync":
        with client.stream(messages, **kw) as s:
            for ev in s:
                events.append(ev)
                if on_event:
                    on_event(s, ev)
        return events, s.turn

    async def go() -> Turn:
        try:
            async with client.astream(messages, **kw) as s:
                async for ev in s:
                    events.append(ev)
                    if on_event:
                        on_event(s, ev)
            return s.turn
        finally:
            await client.aclose()

    return events, asyncio.run(go())


def stalling(words: list[str], *, before: list[Any] | None = None) -> Reply:
    """An OpenAI stream that says ``words`` and then stalls (no finish, no [DONE])."""
    reply = Reply.events(openai_chunks(words, finish=None, done=False))
    reply.chunks = [*(before or []), *reply.chunks, STALL]
    return reply


def ok_reply(words: list[str] | None = None, **kw: Any) -> Reply:
    return Reply.events(openai_chunks(words or ["Hello", " world"], **kw))


def last(server: LoopbackServer) -> Seen:
    assert server.requests, "the server saw no request"
    return server.requests[-1]


def wait_stalled(server: LoopbackServer, timeout: float = 5.0) -> Seen:
    """Wait until the server is holding the latest reply (at a STALL, Gate or header
    delay) and return its request."""
    assert server.wait_for(
        lambda: bool(server.requests) and server.requests[-1].stalled_at is not None,
        timeout,
    ), "the server never reached its stall"
    return server.requests[-1]


def assert_closed_within(
    server: LoopbackServer, seen: Seen, t_stop: float, limit: float = STOP_WITHIN
) -> None:
    """The server saw the client hang up less than ``limit`` s after ``t_stop``."""
    assert server.wait_for(lambda: seen.client_closed_at is not None, 5), (
        "the client never closed the connection"
    )
    assert seen.client_closed_at is not None
    took = seen.client_closed_at - t_stop
    assert took < limit, f"the connection closed {took * 1000:.0f} ms after Stop"


def error_fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "errors" / name).read_text())
    return data


def reply_from_error_fixture(name: str, **extra_headers: str) -> Reply:
    """Replay a recorded error: its status, body and (wire-independent) headers."""
    fx = error_fixture(name)
    skip = {"content-length", "transfer-encoding", "connection", "content-type"}
    headers = {k: v[0] for k, v in fx["headers"].items() if k not in skip}
    headers.update(extra_headers)
    return Reply.json(fx["status"]["code"], fx["body"], headers)


def now() -> float:
    """The server's clock (``Seen`` times are ``time.monotonic``)."""
    return time.monotonic()
