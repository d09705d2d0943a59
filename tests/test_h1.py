"""nbstream's own HTTP/1.1 client against a server that sends exactly the bytes a test
chooses (``tests.rawserver``): keep-alive and its reuse rules, what a malformed answer
becomes, and that no answer, however large or broken, holds the client or its memory.

The named cases of hostile answers are here; ``test_h1_hostile.py`` generates the rest.
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from nbstream import APIConnectionError, Client, NbstreamError, Timeouts, Turn
from nbstream.middleware import Middleware, Outgoing
from tests.clientkit import KEY
from tests.loopback import openai_chunks
from tests.rawserver import ABORT, CLOSE, RawServer, Script, chunked, sse_body

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
WAITS = Timeouts(connect=2.0, first_byte=3.0, idle=2.0, first_token=3.0, total=8.0)


def reply(words: list[str], *, keep: bool = False, after: Any = ()) -> Script:
    """A whole OpenAI stream, one chunk per event (then ``after``: pauses, a close)."""
    body = chunked(*sse_body(*openai_chunks(words)))
    return Script([HEAD + body, *after], keep=keep)


def client_for(srv: RawServer, **kw: Any) -> Client:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", WAITS)
    return Client(base_url=srv.base_url, model="m", api_key=KEY, http="h1", **kw)


def chat(client: Client, n: int = 1) -> list[Turn]:
    """``n`` requests one after the other, on one event loop (one pool)."""

    async def go() -> list[Turn]:
        try:
            return [await client.achat("Hi") for _ in range(n)]
        finally:
            await client.aclose()

    return asyncio.run(go())


def fails(srv: RawServer, *scripts: Script, **kw: Any) -> NbstreamError:
    srv.enqueue(*scripts)
    t0 = time.monotonic()
    with pytest.raises(NbstreamError) as info:
        chat(client_for(srv, **kw))
    assert time.monotonic() - t0 < 5
    return info.value


@pytest.fixture
def srv() -> Iterator[RawServer]:
    with RawServer() as s:
        yield s


# -- keep-alive ---------------------------------------------------------------------


def test_requests_one_after_another_reuse_one_connection(srv: RawServer) -> None:
    srv.enqueue(*(reply([f"w{i}"], keep=True) for i in range(5)))
    turns = chat(client_for(srv), 5)
    assert [t.text for t in turns] == [f"w{i}" for i in range(5)]
    assert len(srv.connections) == 1 and len(srv.requests) == 5
    assert srv.pipelined == 0


def test_concurrent_requests_each_have_a_connection_and_none_is_pipelined(
    srv: RawServer,
) -> None:
    body = chunked(*sse_body(*openai_chunks(["ok"])))
    srv.enqueue(*(Script([0.05, HEAD + body], keep=True) for _ in range(12)))
    client = client_for(srv)

    async def go() -> list[str]:
        try:
            out: list[str] = []
            for _ in range(3):  # three waves of four at once
                turns = await asyncio.gather(*(client.achat("Hi") for _ in range(4)))
                out += [t.text for t in turns]
            return out
        finally:
            await client.aclose()

    assert asyncio.run(go()) == ["ok"] * 12
    assert srv.pipelined == 0
    assert len(srv.connections) == 4  # the second and third waves reused them


def test_the_request_says_what_it_is(srv: RawServer) -> None:
    class Extra(Middleware):
        def before_request(self, request: Outgoing) -> None:
            request.headers["Expect"] = "100-continue"  # never sent: no 1xx dance
            request.headers["X-Trace"] = "abc"

    srv.enqueue(reply(["ok"]))
    chat(client_for(srv, middleware=[Extra()]))
    (req,) = srv.requests
    assert req.head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    h = req.headers
    assert h["host"] == f"127.0.0.1:{srv.port}"
    assert h["content-length"] == str(len(req.body))
    assert h["content-type"] == "application/json"
    assert h["authorization"] == f"Bearer {KEY}"
    assert h["x-trace"] == "abc" and "expect" not in h
    assert json.loads(req.body)["messages"] == [{"role": "user", "content": "Hi"}]


def test_a_header_with_a_line_break_is_never_sent(srv: RawServer) -> None:
    class Inject(Middleware):
        def before_request(self, request: Outgoing) -> None:
            request.headers["x-note"] = "a\r\nx-injected: 1"

    with pytest.raises(APIConnectionError) as info:
        chat(client_for(srv, middleware=[Inject()]))
    assert "x-note" in str(info.value) and "line break" in str(info.value)
    assert "x-injected" not in str(info.value)
    assert srv.requests == []  # nothing went out


def test_a_reply_with_no_body_keeps_the_connection(srv: RawServer) -> None:
    empty = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-length: 0\r\n\r\n"
    )
    srv.enqueue(Script([empty], keep=True), reply(["after"], keep=True))
    first, second = chat(client_for(srv), 2)
    assert first.status == "incomplete" and first.text == ""
    assert second.text == "after"
    assert len(srv.connections) == 1


def test_a_204_has_no_body_whatever_its_headers_say(srv: RawServer) -> None:
    no_content = b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"
    srv.enqueue(Script([no_content], keep=True), reply(["after"], keep=True))
    client = client_for(srv)

    async def go() -> tuple[Any, Turn]:
        try:
            try:
                await client.achat("Hi")
                first: Any = None
            except NbstreamError as exc:
                first = exc
            return first, await client.achat("Hi")
        finally:
            await client.aclose()

    first, second = asyncio.run(go())
    assert isinstance(first, NbstreamError)  # 204: not an event stream
    assert second.text == "after"
    assert len(srv.connections) == 1


def test_bytes_after_the_end_of_a_body_retire_its_connection(srv: RawServer) -> None:
    body = chunked(*sse_body(*openai_chunks(["ok"])))
    srv.enqueue(
        Script([HEAD + body + b"HTTP/1.1 200 OK\r\n"], keep=True),
        reply(["next"], keep=True),
    )
    first, second = chat(client_for(srv), 2)
    assert first.status == "complete" and first.text == "ok"
    assert second.text == "next"
    assert len(srv.connections) == 2


def test_a_server_that_closes_an_idle_connection(srv: RawServer) -> None:
    srv.enqueue(reply(["one"], after=[0.05, CLOSE]), reply(["two"], keep=True))
    client = client_for(srv)

    async def go() -> list[str]:
        try:
            first = await client.achat("Hi")
            await asyncio.to_thread(srv.wait_for, lambda: srv.open_connections == 0)
            second = await client.achat("Hi")
            return [first.text, second.text]
        finally:
            await client.aclose()

    assert asyncio.run(go()) == ["one", "two"]
    assert len(srv.connections) == 2 and len(srv.requests) == 2


@pytest.mark.parametrize("how", [CLOSE, ABORT])
def test_a_request_on_a_kept_connection_that_died_unanswered_is_sent_again(
    srv: RawServer, how: str
) -> None:
    """The server closed the connection just as the next request went out on it
    (the usual race of keep-alive): the request goes again, once, on a new one."""
    srv.enqueue(reply(["one"], keep=True), Script([how]), reply(["two"], keep=True))
    turns = chat(client_for(srv, max_retries=0), 2)
    assert [t.text for t in turns] == ["one", "two"]
    assert [r.connection for r in srv.requests] == [0, 0, 1]


def test_a_new_connection_closed_unanswered_is_a_clean_error(srv: RawServer) -> None:
    err = fails(srv, Script([CLOSE]), Script([CLOSE]), max_retries=1)
    assert isinstance(err, APIConnectionError)
    assert "without answering" in str(err) and "tried 2 times" in str(err)
    assert len(srv.requests) == 2  # the producer's retry, nothing more


# -- malformed answers, named -------------------------------------------------------


def test_a_chunk_size_of_2_to_the_64_is_refused(srv: RawServer) -> None:
    first = chunked(*sse_body(*openai_chunks(["ok"], finish=None, done=False)), end=b"")
    err = fails(srv, Script([HEAD + first + b"%x\r\n" % 2**64 + b"x" * 100, 5.0]))
    assert isinstance(err, APIConnectionError)
    assert "chunk size is absurdly large" in str(err)
    assert err.turn is not None and err.turn.text == "ok"  # the partial is kept
    assert srv.wait_for(lambda: srv.open_connections == 0, 2)  # and it hung up


@pytest.mark.parametrize(
    "size", [b"-1", b"0x10", b"zz", b"", b"1 0", b"\xff", b"1" * 5000]
)
def test_a_chunk_size_that_is_not_hexadecimal_is_refused(
    srv: RawServer, size: bytes
) -> None:
    err = fails(srv, Script([HEAD + size + b"\r\ndata: x\n\n\r\n", 5.0]))
    assert "chunk-size line" in str(err)


def test_a_header_line_without_a_colon_is_refused(srv: RawServer) -> None:
    err = fails(srv, Script([b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", 5.0]))
    assert isinstance(err, APIConnectionError)
    assert "has no colon" in str(err) and "valid HTTP/1.1" in str(err)


def test_content_length_and_chunked_both_are_refused(srv: RawServer) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    err = fails(srv, Script([head + b"0\r\n\r\n", 5.0]))
    assert "both Content-Length and Transfer-Encoding" in str(err)


def test_two_content_lengths_that_differ_are_refused(srv: RawServer) -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"
    err = fails(srv, Script([head + b"hello!", 5.0]))
    assert "Content-Length values that differ" in str(err)


def test_the_same_content_length_twice_is_one(srv: RawServer) -> None:
    body = b"".join(sse_body(*openai_chunks(["ok"])))
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-length: %d, %d\r\n\r\n" % (len(body), len(body))
    )
    srv.enqueue(Script([head + body]))
    assert chat(client_for(srv))[0].text == "ok"


@pytest.mark.parametrize("coding", [b"gzip", b"gzip, chunked", b"identity"])
def test_a_transfer_coding_other_than_chunked_is_refused(
    srv: RawServer, coding: bytes
) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: " + coding + b"\r\n\r\n"
    err = fails(srv, Script([head + b"0\r\n\r\n", 5.0]))
    assert "only chunked is" in str(err)


def test_a_header_block_of_a_gigabyte_is_refused_at_64_kib(srv: RawServer) -> None:
    line = b"x-filler: " + b"a" * 1000 + b"\r\n"
    block = line * 64  # 64 KiB of header lines a write, up to 1 GiB

    def gigabyte() -> Iterator[bytes]:
        for _ in range((1 << 30) // len(block)):
            yield block

    srv.enqueue(Script([b"HTTP/1.1 200 OK\r\n"], stream=gigabyte))
    client = client_for(srv)

    async def go() -> NbstreamError:
        try:
            await client.achat("Hi")
        except NbstreamError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("a gigabyte of headers was accepted")

    tracemalloc.start()
    try:
        err = asyncio.run(go())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "header block is larger than 64 KiB" in str(err)
    assert peak < 4 << 20, f"the client held {peak >> 20} MiB"
    assert srv.wait_for(lambda: srv.open_connections == 0, 2)
    assert srv.connections[0].sent < 64 << 20  # it stopped reading long before 1 GiB


def test_too_many_header_fields_are_refused(srv: RawServer) -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"x-a: b\r\n" * 101 + b"\r\n"
    err = fails(srv, Script([head, 5.0]))
    assert "more than 100 fields" in str(err)


@pytest.mark.parametrize(
    "line",
    [b"HTTP/1.1 2000 OK", b"HTTP/2 200 OK", b"HTTP/1.1", b"ICY 200 OK", b"\x00\xff"],
)
def test_a_malformed_status_line_is_refused(srv: RawServer, line: bytes) -> None:
    err = fails(srv, Script([line + b"\r\ncontent-length: 0\r\n\r\n", 5.0]))
    assert "status line is malformed" in str(err)


def test_interim_answers_are_skipped(srv: RawServer) -> None:
    interim = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: x\r\n\r\n"
    )
    body = chunked(*sse_body(*openai_chunks(["ok"])))
    srv.enqueue(Script([interim, 0.02, HEAD + body]))
    assert chat(client_for(srv))[0].text == "ok"


def test_switching_protocols_unasked_is_refused(srv: RawServer) -> None:
    err = fails(srv, Script([b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 5.0]))
    assert "switched protocols" in str(err)


def test_a_body_cut_short_keeps_the_partial_reply(srv: RawServer) -> None:
    body = b"".join(sse_body(*openai_chunks(["Hello", " there"], done=False)))
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-length: %d\r\n\r\n" % (len(body) + 1000)
    )
    err = fails(srv, Script([head + body, 0.05, CLOSE]))
    assert "broke while the reply streamed" in str(err)
    assert "1000 more bytes" in str(err)
    assert err.turn is not None and err.turn.text == "Hello there"


def test_a_body_delimited_by_the_close(srv: RawServer) -> None:
    body = b"".join(sse_body(*openai_chunks(["ok"])))
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
    srv.enqueue(Script([head + body[:20], 0.02, body[20:], CLOSE]), reply(["2"]))
    first, second = chat(client_for(srv), 2)
    assert first.text == "ok" and second.text == "2"
    assert len(srv.connections) == 2


def test_an_http_1_0_answer_is_read_and_its_connection_not_kept(
    srv: RawServer,
) -> None:
    body = b"".join(sse_body(*openai_chunks(["ok"])))
    head = (
        b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    srv.enqueue(Script([head + body], keep=True), reply(["2"]))
    assert [t.text for t in chat(client_for(srv), 2)] == ["ok", "2"]
    assert len(srv.connections) == 2


def test_a_body_in_a_coding_it_does_not_decode_is_refused(srv: RawServer) -> None:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"content-encoding: br\r\ncontent-length: 4\r\n\r\n"
    )
    err = fails(srv, Script([head + b"\x00\x01\x02\x03"]))
    assert "'br'" in str(err) and "gzip or deflate" in str(err)


def test_obsolete_line_folding_is_joined(srv: RawServer) -> None:
    body = chunked(*sse_body(*openai_chunks(["ok"])))
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"x-long: one\r\n two\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    srv.enqueue(Script([head + body]))
    seen: list[dict[str, str]] = []

    class Watch(Middleware):
        def on_response(self, request: Outgoing, response: Any) -> None:
            seen.append(dict(response.headers))

    assert chat(client_for(srv, middleware=[Watch()]))[0].text == "ok"
    assert seen[0]["x-long"] == "one two"
