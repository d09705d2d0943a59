"""A server can send any bytes: properties of nbstream's own HTTP/1.1 client under
generated answers (random status lines, header blocks, framings, chunk sizes, cuts,
bytes after the end), over a real socket and from memory.

Over the socket, whatever the server sends: only an ``NbstreamError`` comes out of
``Client.achat``, it comes within the configured waits (nothing hangs), and the client
hangs up. From memory: the parsers raise only ``TransportFailure`` and never give out
more than they were given; a chunked body cut anywhere decodes to what was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nbstream import Client, NbstreamError, Timeouts
from nbstream._http.h1parse import Dechunker, parse_head, request_head
from nbstream._http.response import TransportFailure
from tests.clientkit import KEY
from tests.loopback import openai_chunks
from tests.rawserver import ABORT, CLOSE, RawServer, Script

WAITS = Timeouts(connect=1.0, first_byte=1.0, idle=0.5, first_token=1.0, total=2.0)

# -- answers ----------------------------------------------------------------------------

_STATUS = st.one_of(
    st.sampled_from(
        [
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK",
            b"HTTP/1.0 200 OK",
            b"HTTP/1.1 204 No Content",
            b"HTTP/1.1 100 Continue",
            b"HTTP/1.1 101 Switching",
            b"HTTP/1.1 429 Too Many Requests",
            b"HTTP/1.1 500 Oops",
            b"HTTP/1.1 200",
        ]
    ),
    st.builds(
        lambda v, s, r: b"HTTP/" + v + b" " + s + b" " + r,
        st.sampled_from([b"1.1", b"1.0", b"2", b"1.x", b""]),
        st.binary(max_size=5),
        st.binary(max_size=12),
    ),
    st.binary(max_size=40),
)

_NAMES = st.sampled_from(
    [
        b"content-type",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"content-encoding",
        b"retry-after",
        b"x-request-id",
        b"x-other",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            b"text/event-stream",
            b"application/json",
            b"chunked",
            b"gzip",
            b"close",
            b"keep-alive",
            b"0",
            b"5",
            b"-1",
            b"99999999999999999999",
            b"1, 2",
            b"",
        ]
    ),
    st.binary(max_size=20),
)
_FIELD = st.one_of(
    st.builds(lambda n, v: n + b": " + v, _NAMES, _VALUES),
    st.binary(max_size=30),  # anything: no colon, CR or LF inside, NUL, ...
)


_GOOD = [f"data: {d}\n\n".encode() for d in openai_chunks(["Hel", "lo"])]
_EVENTS = st.one_of(
    st.just(_GOOD),  # a whole stream, [DONE] and all
    st.lists(st.one_of(st.sampled_from(_GOOD), st.binary(max_size=30)), max_size=8),
)
_SIZE_LINE = st.sampled_from(
    [
        b"-1",
        b"0x10",
        b"zz",
        b"",
        b"10000000000000000",
        b"ffffffffffffffffffff",
        b"0",
        b"1;ext=1",
        b"3 ",
        b"\xff",
    ]
)


def _sometimes(p: float) -> st.SearchStrategy[bool]:
    """True with probability ~p (in tenths)."""
    return st.integers(0, 9).map(lambda i: i < round(p * 10))


@st.composite
def answers(draw: st.DrawFn) -> Script:
    """One answer as a server might send it: mostly right, each part wrong at times
    (the status line, a header field, the framing, a chunk size, a cut, bytes after
    the end, how the bytes are split, how the connection ends)."""
    status = b"HTTP/1.1 200 OK" if draw(_sometimes(0.6)) else draw(_STATUS)
    fields = [b"content-type: text/event-stream"] if draw(_sometimes(0.8)) else []
    if draw(_sometimes(0.3)):
        fields += draw(st.lists(_FIELD, min_size=1, max_size=3))
    framing = draw(
        st.sampled_from(["chunked"] * 5 + ["length"] * 2 + ["close", "both"])
    )
    events = draw(_EVENTS)
    if framing in ("chunked", "both"):
        fields.append(b"transfer-encoding: chunked")
    if framing in ("length", "both"):
        size = sum(map(len, events))
        if draw(_sometimes(0.3)):
            size = max(0, size + draw(st.integers(-20, 20)))
        fields.append(b"content-length: %d" % size)
    head = status + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    if framing == "chunked":
        bad = draw(st.integers(0, len(events))) if draw(_sometimes(0.2)) else -1
        body = b""
        for i, ev in enumerate(events):
            size = draw(_SIZE_LINE) if i == bad else b"%x" % len(ev)
            body += size + b"\r\n" + ev + b"\r\n"
        body += draw(st.sampled_from([b"0\r\n\r\n"] * 3 + [b"0\r\nx: 1\r\n\r\n", b""]))
    else:
        body = b"".join(events)
    wire = head + body
    if draw(_sometimes(0.2)):
        wire = wire[: draw(st.integers(0, len(wire)))]
    if draw(_sometimes(0.2)):
        wire += draw(st.sampled_from([b"HTTP/1.1 200 OK\r\n\r\n", b"\x00" * 9]))
    splits = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=3)))
    parts: list[bytes | float | str] = []
    last = 0
    for cut in [*splits, len(wire)]:
        if cut > last:
            parts += [wire[last:cut], 0.005]
            last = cut
    parts += [draw(st.sampled_from([0.0, 0.3])), draw(st.sampled_from([CLOSE, ABORT]))]
    return Script(parts)


@pytest.fixture(scope="module")
def raw() -> Iterator[RawServer]:
    with RawServer() as srv:
        yield srv


@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(answer=answers())
def test_whatever_a_server_sends_only_an_nbstream_error_comes_out_in_time(
    raw: RawServer, answer: Script
) -> None:
    raw.enqueue(answer)
    client = Client(
        base_url=raw.base_url,
        model="m",
        api_key=KEY,
        http="h1",
        max_retries=0,
        timeout=WAITS,
    )
    conns = len(raw.connections)

    async def go() -> None:
        try:
            turn = await client.achat("Hi")
            assert turn.status in ("complete", "incomplete")
            event(f"a turn: {turn.status}")
        except NbstreamError as exc:  # any other exception fails the property
            event(f"{type(exc).__name__}: {str(exc)[:60]}")
        finally:
            await client.aclose()

    t0 = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - t0 < WAITS.total + 1.5  # type: ignore[operator]
    # and the client let go of every connection it opened
    assert raw.wait_for(lambda: all(c.eof for c in raw.connections[conns:]), 3), (
        "the client kept a connection open"
    )


# -- from memory --------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_any_head_parses_or_is_refused_as_a_protocol_failure(block: bytes) -> None:
    try:
        head = parse_head(block + b"\r\n\r\n")
    except TransportFailure as exc:
        assert exc.kind == "protocol"
        return
    assert 100 <= head.status <= 999
    assert head.framing in ("length", "chunked", "close")
    assert head.length >= 0


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=6))
def test_any_body_dechunks_or_is_refused_and_gives_no_more_than_it_got(
    body: bytes, cuts: list[int]
) -> None:
    d = Dechunker()
    out = 0
    last = 0
    try:
        for c in [*sorted(cuts), len(body)]:
            c = min(c, len(body))
            out += sum(map(len, d.feed(body[last:c])))
            last = max(last, c)
    except TransportFailure as exc:
        assert exc.kind == "protocol"
    assert out <= len(body)


@given(
    st.lists(st.binary(min_size=1, max_size=50), max_size=10),
    st.binary(max_size=20),
    st.lists(st.integers(0, 1000), max_size=8),
)
def test_a_chunked_body_cut_anywhere_decodes_to_what_was_sent(
    pieces: list[bytes], after: bytes, cuts: list[int]
) -> None:
    wire = b"".join(b"%X;x=y\r\n%s\r\n" % (len(p), p) for p in pieces)
    wire += b"0\r\ntrailer: yes\r\n\r\n" + after
    d = Dechunker()
    got: list[bytes] = []
    last = 0
    for c in [*sorted(min(c, len(wire)) for c in cuts), len(wire)]:
        got += d.feed(wire[last:c])
        last = c
    assert b"".join(got) == b"".join(pieces)
    assert d.done and d.rest == after


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=5))
def test_request_headers_never_smuggle_a_line(headers: dict[str, str]) -> None:
    """Either the head is refused, or every header given is one line of it."""
    try:
        head, _ = request_head("/v1/x", "h", headers, 2)
    except TransportFailure:
        return
    lines = head.decode("ascii").split("\r\n")
    assert lines[-2:] == ["", ""] and lines[0] == "POST /v1/x HTTP/1.1"
    names = {ln.partition(":")[0].lower() for ln in lines[1:-2]}
    assert len(lines) - 3 == len(names)  # one line a name: nothing injected
    for name in headers:
        if name.lower() not in ("content-length", "transfer-encoding", "expect"):
            assert name.lower() in names
