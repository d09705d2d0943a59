"""The engine under pressure: the end of a reply, a decompression bomb, a keep-alive
stream that never speaks, hundreds of concurrent streams, a turn read from another
thread while it streams, and closing a client from inside a running loop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
import threading
import time
from typing import Any

import pytest

from nbstream import APITimeoutError, Client, TextDelta, Timeouts, Turn
from tests.clientkit import MODES, STOP_WITHIN, chat, client_for, wait_stalled
from tests.loopback import Gate, LoopbackServer, Reply, openai_chunks

# every test here runs on nbstream's own HTTP/1.1 client and on httpx2
pytestmark = pytest.mark.usefixtures("http")


def events(datas: list[str]) -> bytes:
    return "".join(f"data: {d}\n\n" for d in datas).encode()


# -- the end of a reply ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_turn_ends_when_the_end_marker_arrives(
    server: LoopbackServer, mode: str
) -> None:
    """A server that keeps the body open after [DONE] does not delay the turn."""
    gate = Gate()
    server.enqueue(Reply(chunks=[events(openai_chunks(["Hello"])), gate, b": bye\n\n"]))
    try:
        turn = chat(client_for(server), mode)
        assert turn.status == "complete" and turn.text == "Hello"
        assert not gate.is_open  # the server was still holding the body open
    finally:
        gate.open()


def test_stop_right_after_the_end_marker_keeps_the_reply_complete(
    server: LoopbackServer,
) -> None:
    gate = Gate()
    server.enqueue(Reply(chunks=[events(openai_chunks(["Hello"])), gate]))
    try:
        with client_for(server).stream("Hi") as s:
            for ev in s:
                if isinstance(ev, TextDelta):
                    server.wait_for(lambda: s.turn.done, 5)
                    s.cancel()
        assert s.turn.status == "complete" and s.turn.text == "Hello"
    finally:
        gate.open()


# -- a decompression bomb ---------------------------------------------------------------


def test_stop_lands_inside_a_decompression_bomb(server: LoopbackServer) -> None:
    """64 KiB of gzip that inflates to 64 MiB of events: Stop still lands at once."""
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    raw = chunk * ((64 << 20) // len(chunk))
    packed = gzip.compress(raw, compresslevel=9)
    assert len(packed) < 256 * 1024
    server.enqueue(
        Reply(
            headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
            chunks=[packed],
        )
    )
    stopped: list[float] = []
    seen = 0
    t0 = time.monotonic()
    with client_for(server).stream("Hi") as s:
        for ev in s:
            if isinstance(ev, TextDelta):
                seen += 1
                if seen == 2000:
                    stopped.append(time.monotonic())
                    s.cancel()
    took = time.monotonic() - stopped[0]
    assert s.turn.status == "cancelled"
    assert 2000 <= len(s.turn.text) < len(raw) // len(chunk)
    assert took < STOP_WITHIN, f"Stop took {took * 1000:.0f} ms inside the bomb"
    assert time.monotonic() - t0 < 10


# -- waits ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_of_keep_alive_comments_ends_at_the_first_token_deadline(
    server: LoopbackServer, mode: str
) -> None:
    comments: list[Any] = []
    for _ in range(200):
        comments += [b": OPENROUTER PROCESSING\n\n", 0.02]
    server.enqueue(Reply(chunks=comments))
    client = client_for(server, timeout=Timeouts(first_token=0.4, idle=0.1))
    t0 = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        chat(client, mode)
    took = time.monotonic() - t0
    assert info.value.phase == "first_token"
    assert "first piece of the reply" in str(info.value)
    assert "Timeouts(first_token=" in str(info.value)
    assert 0.35 < took < 2.0
    turn = info.value.turn
    assert turn is not None and turn.status == "error"


@pytest.mark.parametrize("mode", MODES)
def test_a_total_deadline_ends_a_reply_that_goes_on_and_on(
    server: LoopbackServer, mode: str
) -> None:
    chunks: list[Any] = []
    for i in range(400):
        chunks += [
            events(
                [
                    json.dumps(
                        {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
                    )
                ]
            ),
            0.01,
        ]
    server.enqueue(Reply(chunks=chunks))
    with pytest.raises(APITimeoutError) as info:
        chat(client_for(server, timeout=Timeouts(total=0.5)), mode)
    assert info.value.phase == "total"
    turn = info.value.turn
    assert turn is not None and turn.text.startswith("w0 w1 ")  # the partial is kept


# -- many at once -------------------------------------------------------------------------


def test_hundreds_of_concurrent_streams_are_not_capped(server: LoopbackServer) -> None:
    """httpx2 caps a pool at 100 connections and lets the 101st wait, then fail as if
    the reply had broken: nbstream's pool has no cap unless one is asked for."""
    n = 150
    gate = Gate()
    body = events(openai_chunks(["Hello"]))
    server.enqueue(*[Reply(chunks=[gate, body]) for _ in range(n)])
    client = client_for(server, timeout=Timeouts(connect=2.0))

    async def main() -> list[str]:
        async def one() -> str:
            return (await client.achat("Hi")).text

        tasks = [asyncio.ensure_future(one()) for _ in range(n)]
        await asyncio.to_thread(server.wait_for, lambda: len(server.requests) == n, 10)
        gate.open()  # all 150 are connected at once before any is answered
        try:
            return await asyncio.gather(*tasks)
        finally:
            await client.aclose()

    try:
        texts = asyncio.run(main())
    finally:
        gate.open()
    assert texts == ["Hello"] * n
    assert len(server.requests) == n


def test_a_configured_connection_limit_says_so_when_reached(
    server: LoopbackServer,
) -> None:
    gate = Gate()
    body = events(openai_chunks(["Hello"]))
    server.enqueue(Reply(chunks=[gate, body]), Reply(chunks=[gate, body]))
    client = client_for(
        server, max_connections=1, max_retries=0, timeout=Timeouts(connect=0.3)
    )

    async def main() -> tuple[Any, Any]:
        first = asyncio.ensure_future(client.achat("Hi"))
        await asyncio.to_thread(wait_stalled, server)
        try:
            second = await client.achat("Hi")
        except APITimeoutError as exc:
            second = exc
        gate.open()
        return await first, second

    try:
        first, second = asyncio.run(main())
    finally:
        gate.open()
    assert first.text == "Hello"
    assert isinstance(second, APITimeoutError) and second.phase == "pool"
    msg = str(second)
    assert "max_connections" in msg and "All 1 connections" in msg
    assert "broke" not in msg


# -- a turn read from another thread ----------------------------------------------------------


def test_reading_the_turn_from_another_thread_never_loses_text(
    server: LoopbackServer,
) -> None:
    """The stream writes the turn on nbstream's loop thread while the caller reads it:
    every read is a prefix of the final text, and the final text is whole. (Threads
    switch as often as the interpreter allows, so a race shows within a few runs.)"""
    words = [f"w{i} " for i in range(3000)]
    want = "".join(words)
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            reads, turn = _read_while_streaming(server, words)
            assert turn.text == want
            assert all(want.startswith(r) for r in reads)
            assert len(reads) > 10
    finally:
        sys.setswitchinterval(before)


def _read_while_streaming(
    server: LoopbackServer, words: list[str]
) -> tuple[list[str], Turn]:
    server.enqueue(Reply.events(openai_chunks(words)))
    s = client_for(server).stream("Hi")
    reads: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            reads.append(s.turn.text)

    t = threading.Thread(target=reader)
    t.start()
    try:
        return reads, s.wait()
    finally:
        stop.set()
        t.join(5)


# -- closing ---------------------------------------------------------------------------------


def test_close_inside_a_running_loop_closes_the_pool() -> None:
    """A notebook cell runs on a running loop: ``client.close()`` there still closes
    the client's kept-alive connections (as soon as the cell yields)."""
    with LoopbackServer(keep_alive=True) as srv:
        srv.enqueue(Reply.events(openai_chunks(["Hello"])))
        client = Client(base_url=srv.base_url, model="m")

        async def cell() -> None:
            assert (await client.achat("Hi")).text == "Hello"
            assert srv.wait_for(lambda: srv.open_connections == 1, 5)
            client.close()  # sync, on the loop's own thread
            await asyncio.to_thread(srv.wait_for, lambda: srv.open_connections == 0, 5)

        asyncio.run(cell())
        assert srv.open_connections == 0


def test_aclose_closes_pools_opened_on_other_loops() -> None:
    with LoopbackServer(keep_alive=True) as srv:
        srv.enqueue(
            Reply.events(openai_chunks(["A"])), Reply.events(openai_chunks(["B"]))
        )
        client = Client(base_url=srv.base_url, model="m")
        assert client.chat("Hi").text == "A"  # on nbstream's loop thread

        async def main() -> None:
            assert (await client.achat("Hi")).text == "B"  # on this loop
            await client.aclose()

        asyncio.run(main())
        assert srv.wait_for(lambda: srv.open_connections == 0, 5)


def test_the_magics_keep_a_few_clients_and_close_the_ones_they_drop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each change of %%chat settings used to leave a client (and its connections)
    behind for good: the magics keep the recently used ones and close the rest."""
    from nbstream._notebook.cell_clients import MAX_CLIENTS
    from nbstream._notebook.magics import ChatMagics

    with LoopbackServer(keep_alive=True) as srv:
        srv.enqueue(Reply.events(openai_chunks(["Hello"])))
        monkeypatch.setenv("NBSTREAM_BASE_URL", srv.base_url)
        magics = ChatMagics(shell=None)
        first = magics.client_for(magics.options("-m first"))
        assert first.chat("Hi").text == "Hello"
        assert srv.wait_for(lambda: srv.open_connections == 1, 5)
        assert magics.client_for(magics.options("-m first")) is first  # reused
        for i in range(MAX_CLIENTS):
            magics.client_for(magics.options(f"-m model{i}"))
        assert len(magics._clients) == MAX_CLIENTS
        assert first not in magics._clients.values()
        assert srv.wait_for(lambda: srv.open_connections == 0, 5)  # and it was closed
        magics.close_clients()
        assert not magics._clients
