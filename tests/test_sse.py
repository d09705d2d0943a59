"""The SSE decoder, against the WHATWG / web-platform-tests and httpx-sse cases.

Every case of ``../shared/fixtures/SSE_EDGE_CASES.md`` sections 2 and 3 is one
parametrized case, named after the test it comes from, and is fed whole, byte by byte
and at random chunk boundaries (seeded; the random splits include empty reads), in both
end-of-stream modes:

* ``dispatch_at_eof=True`` (the default): an event still pending at end of stream is
  dispatched. A browser drops it and reconnects; an LLM client does not reconnect, and
  the last event is the one that says the stream finished.
* ``dispatch_at_eof=False``: WHATWG to the letter, the unfinished block is dropped.

Where httpx-sse and WHATWG disagree, nbstream follows WHATWG (an event is dispatched
only when a ``data`` line was seen; a leading BOM is dropped) and the case says so.

The MIME cases of WPT (``format-mime-*``) and httpx-sse's ``connect_sse`` header and
Content-Type checks are about the HTTP response, not the decoder: the client refuses a
body that is not ``text/event-stream`` (``NotAStreamError``), tested with the client.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import ANY

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nbstream._core.errors import EventTooLargeError, NbstreamError
from nbstream._core.sse import ServerSentEvent, SSEDecoder
from tests.conftest import STREAMS, expected, stream_names

# -- feeding ------------------------------------------------------------------------

FEEDS = ["whole", "bytewise", *(f"random-{seed}" for seed in range(5))]


def split(data: bytes, feed: str) -> list[bytes]:
    """The body cut into the reads a socket might return."""
    if feed == "whole":
        return [data]
    if feed == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    rnd = random.Random(int(feed.rpartition("-")[2]))
    chunks, i = [], 0
    while i < len(data):
        n = rnd.randint(0, 9)  # 0 is an empty read: it must change nothing
        chunks.append(data[i : i + n])
        i += n
    return chunks


def decode(
    data: bytes, feed: str = "whole", **kwargs: Any
) -> tuple[list[ServerSentEvent], SSEDecoder]:
    d = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for chunk in split(data, feed):
        events += d.feed(chunk)
    events += d.close()
    return events, d


def E(data: str, id: str = "", *, event: str = "message", retry: Any = None) -> Any:
    return ServerSentEvent(event=event, data=data, id=id, retry=retry)


# -- the cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    body: str
    events: list[ServerSentEvent]  # what WHATWG dispatches
    eof_events: list[ServerSentEvent] = field(default_factory=list)  # + at EOF
    comments: int | None = None
    last_id: str | None = None  # ``last_event_id`` after close, strict mode
    last_id_eof: str | None = None  # the same with dispatch_at_eof (default: last_id)


X2048 = "x" * 2048

# WPT ``eventsource/``: the helper (``resources/message.py``) sends the message, then
# the ``newline`` parameter (default "\n\n"), then one more "\n"; bodies include both.
WPT = [
    Case(
        "wpt-format-bom",
        "\ufeffdata:1\n\n\ufeffdata:2\n\ndata:3" + "\n\n\n",
        # "2" is lost: only the first BOM of the stream is dropped, so its line is the
        # unknown field "\ufeffdata".
        [E("1"), E("3")],
    ),
    Case(
        "wpt-format-bom-2",
        "\ufeff\ufeffdata:1\n\ndata:2\n\ndata:3" + "\n\n\n",
        [E("2"), E("3")],
    ),
    Case(
        "wpt-format-comments",
        f"data:1\r:\0\n:\r\ndata:2\n:{X2048}\rdata:3\n:data:fail\r:{X2048}\ndata:4\n"
        + "\n",
        [E("1\n2\n3\n4")],
        comments=5,
    ),
    Case(
        "wpt-format-data-before-final-empty-line",
        "retry:1000\ndata:test1\n\nid:test\ndata:test2" + "\n",
        [E("test1", retry=1000)],
        # nbstream's choice: the unfinished last block is dispatched at end of stream,
        # and its id then takes effect. (retry=ANY: whether an event repeats the
        # reconnection time set in an earlier block is not what this case is about.)
        eof_events=[E("test2", "test", retry=ANY)],
        # WHATWG: the id of the dropped block never took effect.
        last_id="",
        last_id_eof="test",
    ),
    Case(
        "wpt-format-field-data",
        "data:\n\ndata\ndata\n\ndata:test" + "\n\n\n",
        [E(""), E("\n"), E("test")],
    ),
    Case(
        "wpt-format-field-event-empty",
        "event: \ndata:data" + "\n\n\n",
        [E("data", event="message")],
    ),
    Case(
        "wpt-format-field-event",
        "event:test\ndata:x\n\ndata:x" + "\n\n\n",
        # the type does not carry over to the next block
        [E("x", event="test"), E("x", event="message")],
    ),
    Case(
        "wpt-format-field-parsing",
        "data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\n"
        "data:3\rdata:\r\n data:32\ndata:4\n" + "\n",
        [E("\0\n 2\n1\n3\n\n4")],
    ),
    Case(
        "wpt-format-field-unknown",
        "data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\n"
        "data:test" + "\n\n\n",
        [E("test\n\ntest")],
        comments=1,
    ),
    Case(
        "wpt-format-leading-space",
        "data:\ttest\rdata: \ndata:test" + "\n\n\n",
        [E("\ttest\n\ntest")],
    ),
    Case(
        "wpt-format-newlines",
        # the final "\r" and the helper's "\n" are one CRLF blank line
        "data:test\r\ndata\ndata:test\r\n\r" + "\n",
        [E("test\n\ntest")],
    ),
    Case("wpt-format-null-character", "data:\0\n\n" + "\n", [E("\0")]),
    Case(
        "wpt-format-field-id",
        "id: \u2026\ndata: hello\n\n" + "\n",
        [E("hello", "\u2026")],
        last_id="\u2026",
    ),
    Case(
        "wpt-format-field-id-3-persists",
        "id: 1\ndata: 1\n\ndata:2\n\n",
        [E("1", "1"), E("2", "1")],
        last_id="1",
    ),
    Case(
        "wpt-format-field-id-3-changes",
        "id: 1\ndata: 1\n\nid: 2\ndata:2\n\ndata:3\n\n",
        [E("1", "1"), E("2", "2"), E("3", "2")],
        last_id="2",
    ),
    Case(
        "wpt-format-field-id-3-empty-resets",
        "id: 1\ndata: 1\n\nid:\ndata:2\n\ndata:3\n\n",
        [E("1", "1"), E("2", ""), E("3", "")],
        last_id="",
    ),
    Case(
        "wpt-format-field-id-null",
        # current WHATWG text: an id containing U+0000 is ignored
        "id:\0\0\ndata:x\n\n" + "\n",
        [E("x", "")],
        last_id="",
    ),
    Case(
        "wpt-format-field-id-null-keeps-previous",
        "id:1\ndata:a\n\nid:\0\0\ndata:b\n\n",
        [E("a", "1"), E("b", "1")],
        last_id="1",
    ),
    Case(
        "wpt-format-field-retry",
        "retry:02000\ndata:x" + "\n\n\n",
        [E("x", retry=2000)],  # decimal, leading zero allowed
    ),
    Case(
        "wpt-format-field-retry-bogus",
        "retry:2000\nretry:1000x\ndata:x" + "\n\n\n",
        [E("x", retry=2000)],
    ),
    Case(
        "wpt-format-utf-8",
        # Always UTF-8: the decoder has no charset setting to get wrong.
        "data:\u00e9\u00e8\u00ea \u2026 \u4e2d\u6587 \U0001f60a" + "\n\n\n",
        [E("\u00e9\u00e8\u00ea \u2026 \u4e2d\u6587 \U0001f60a")],
    ),
]

HTTPX_SSE = [
    # -- the line splitter (tests/test_decoders.py), seen through data lines --
    Case(
        "httpx-sse-splitlines-crlf",
        "data:line1\r\ndata:line2\r\ndata:line3\r\n\r\n",
        [E("line1\nline2\nline3")],
    ),
    Case(
        "httpx-sse-splitlines-cr",
        "data:line1\rdata:line2\rdata:line3\r\r",
        [E("line1\nline2\nline3")],
    ),
    Case(
        "httpx-sse-splitlines-lf",
        "data:line1\ndata:line2\ndata:line3\n\n",
        [E("line1\nline2\nline3")],
    ),
    Case(
        "httpx-sse-splitlines-mixed",
        "data:a\r\ndata:b\ndata:c\rdata:d\n\n",
        [E("a\nb\nc\nd")],
    ),
    Case(
        "httpx-sse-splitlines-u2028-not-a-newline",
        "data:a\u2028b\n\n",
        [E("a\u2028b")],
    ),
    Case(
        "httpx-sse-splitlines-u2029-not-a-newline",
        "data:a\u2029b\n\n",
        [E("a\u2029b")],
    ),
    Case(
        "httpx-sse-splitlines-u0085-not-a-newline",
        "data:a\u0085b\n\n",
        [E("a\u0085b")],
    ),
    Case(
        "httpx-sse-test_unicode_line_separator_not_parsed_as_newline",
        'data: {"content": "a\u2028b\u2029c\u0085d"}\n\n',
        [E('{"content": "a\u2028b\u2029c\u0085d"}')],
    ),
    Case(
        "httpx-sse-splitlines-three-empty-lines",
        # "\n\r\n\r" is three line ends: data:a ends, then two empty lines
        "data:a\n\r\n\rdata:b\n\n",
        [E("a"), E("b")],
    ),
    Case(
        "httpx-sse-splitlines-single-trailing-newline",
        # one trailing newline is not also a blank line: nothing to dispatch, strictly
        "data:a\n",
        [],
        eof_events=[E("a")],
    ),
    Case(
        "httpx-sse-incremental-cr-cr",
        # "line1\r\rline2\n" gives [line1, "", line2]
        "data:line1\r\rdata:line2\n\n",
        [E("line1"), E("line2")],
    ),
    Case(
        "httpx-sse-flush-partial-line-at-eof",
        "data:line1\ndata:partial",
        [],
        eof_events=[E("line1\npartial")],
    ),
    Case(
        "httpx-sse-flush-trailing-cr-at-eof",
        "data:a\r",
        [],
        eof_events=[E("a")],
    ),
    Case(
        "httpx-sse-flush-trailing-cr-ends-blank-line",
        # the lone CR at EOF ends the (blank) line, so even WHATWG dispatches
        "data:a\n\r",
        [E("a")],
    ),
    # -- the event decoder (tests/test_event_source.py) --
    Case(
        "httpx-sse-whatwg-example-1",
        "data: YHOO\ndata: +2\ndata: 10\n\n",
        [E("YHOO\n+2\n10", "", event="message", retry=None)],
    ),
    Case(
        "httpx-sse-whatwg-example-2",
        ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        "data:  third event\n\n",
        [E("first event", "1"), E("second event", ""), E(" third event", "")],
        comments=1,
        last_id="",
    ),
    Case(
        "httpx-sse-whatwg-example-3",
        "data\n\ndata\ndata\n\ndata:",
        [E(""), E("\n")],
        eof_events=[E("")],
    ),
    Case(
        "httpx-sse-example-4",
        "data:test\n\ndata: test\n\n",
        [E("test"), E("test")],
    ),
    Case(
        "httpx-sse-event-logline",
        "event: logline\ndata: x\n\n",
        [E("x", event="logline")],
    ),
    Case(
        "httpx-sse-event-without-data",
        # httpx-sse dispatches this; WHATWG (and nbstream) need a data line
        "event: logline\n\n",
        [],
    ),
    Case(
        "httpx-sse-id-with-nul-ignored",
        "id: 123\0\ndata: x\n\n",
        [E("x", "")],
        last_id="",
    ),
    Case(
        "httpx-sse-retry-alone",
        # httpx-sse yields an event with data "" and retry 10000; WHATWG dispatches
        # nothing without a data line, and nbstream follows WHATWG
        "retry: 10000\n\n",
        [],
    ),
    Case(
        "httpx-sse-retry-with-data",
        "retry: 10000\ndata:\n\n",
        [E("", retry=10000)],
    ),
    Case("httpx-sse-retry-invalid", "retry: 1667a\n\n", []),
    Case(
        "httpx-sse-retry-invalid-with-data",
        "retry: 1667a\ndata: x\n\n",
        [E("x", retry=None)],
    ),
    Case("httpx-sse-unknown-field", "something: ignore\n\n", []),
    # -- where httpx-sse differs from WHATWG: nbstream follows WHATWG --
    Case(
        "httpx-sse-differs-consecutive-blank-lines-after-id",
        # httpx-sse would dispatch an empty event on every blank line once an id was
        # seen (the id persists); WHATWG dispatches only blocks with data
        "id: 1\ndata: a\n\n\n\n\n",
        [E("a", "1")],
        last_id="1",
    ),
    Case(
        "httpx-sse-differs-bom-stripped",
        # httpx-sse keeps the BOM (its field is "\ufeffdata", unknown); WHATWG drops it
        "\ufeffdata: a\n\n",
        [E("a")],
    ),
    Case(
        "httpx-sse-differs-unterminated-final-event",
        # httpx-sse and the SDKs drop it, like WHATWG; nbstream dispatches it by default
        "data: a\n\ndata: b",
        [E("a")],
        eof_events=[E("b")],
    ),
    Case(
        "whatwg-blank-line-without-data-still-sets-last-event-id",
        "id: 7\n\n",
        [],
        last_id="7",
    ),
]

CASES = WPT + HTTPX_SSE


@pytest.mark.parametrize("at_eof", [True, False], ids=["dispatch_at_eof", "strict"])
@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_edge_case(case: Case, feed: str, at_eof: bool) -> None:
    events, d = decode(case.body.encode("utf-8"), feed, dispatch_at_eof=at_eof)
    want = case.events + (case.eof_events if at_eof else [])
    assert events == want
    if case.comments is not None:
        assert d.comments == case.comments
    if case.last_id is not None:
        want_id = case.last_id
        if at_eof and case.last_id_eof is not None:
            want_id = case.last_id_eof
        assert d.last_event_id == want_id


def test_unicode_separators_inside_json_come_through_unchanged() -> None:
    # httpx-sse test_unicode_line_separator_not_parsed_as_newline, end to end: the
    # raw bytes E2 80 A8 (and E2 80 A9, C2 85) inside a JSON string are not line ends.
    text = "a\u2028b\u2029c\u0085d"
    body = b'data: {"content": "' + text.encode() + b'"}\n\n'
    assert b"\xe2\x80\xa8" in body and b"\xc2\x85" in body
    for feed in FEEDS:
        events, _ = decode(body, feed)
        assert [json.loads(e.data)["content"] for e in events] == [text]


def test_cr_at_end_of_one_chunk_and_lf_at_start_of_next_is_one_line_end() -> None:
    # httpx-sse: ["line1\r", "\nline2", "\n"] gives two lines, not three. Were the
    # split CRLF two line ends, the blank line between would dispatch "line1" alone.
    chunks = [b"data:line1\r", b"\ndata:line2\r", b"\n\r", b"\n"]
    d = SSEDecoder()
    events = [e for c in chunks for e in d.feed(c)] + d.close()
    assert events == [E("line1\nline2")]


def test_empty_read_between_cr_and_lf_changes_nothing() -> None:
    d = SSEDecoder()
    chunks = [b"data:line1\r", b"", b"\ndata:line2\r\n", b"", b"", b"\r", b"", b"\n"]
    events = [e for c in chunks for e in d.feed(c)] + d.close()
    assert events == [E("line1\nline2")]


@pytest.mark.parametrize("char", ["\u00b0", "\U0001f60a", "\u2026"])
def test_multibyte_utf8_split_across_chunks_survives(char: str) -> None:
    body = f'data: {{"t": "25{char}C {char}"}}\n\n'.encode()
    start = body.index(char.encode())
    width = len(char.encode())
    assert width > 1
    for cut in range(start + 1, start + width):  # every cut inside the character
        d = SSEDecoder()
        events = d.feed(body[:cut]) + d.feed(body[cut:]) + d.close()
        assert [json.loads(e.data)["t"] for e in events] == [f"25{char}C {char}"]
        assert "\ufffd" not in events[0].data


def test_bom_split_across_chunks_is_still_dropped() -> None:
    body = "\ufeffdata: a\n\n".encode()
    for cut in range(1, 4):
        d = SSEDecoder()
        assert d.feed(body[:cut]) + d.feed(body[cut:]) + d.close() == [E("a")]


def test_event_type_is_reset_by_a_blank_line_without_data() -> None:
    # WHATWG: a blank line with no data resets the event type buffer too.
    events, _ = decode(b"event: lost\n\ndata: x\n\n")
    assert events == [E("x", event="message")]


def test_server_sent_event_defaults() -> None:
    assert ServerSentEvent() == ServerSentEvent("message", "", "", None)


@pytest.mark.parametrize(
    ("reads", "want"),
    [
        # each second-or-later read looks like one whole ``data:`` event, but is not
        ([b"data: a\n\n", b"data: b\n\n"], [E("a"), E("b")]),
        ([b"data: a\n\n", b"event: e\n", b"data: b\n\n"], [E("a"), E("b", event="e")]),
        ([b"data: a\n\n", b"data: b\n", b"data: c\n\n"], [E("a"), E("b\nc")]),
        ([b"data: a\n\n", b"data: b\ndata: c\n\n"], [E("a"), E("b\nc")]),
        ([b"data: a\n\n", b"data: b\rdata: c\n\n"], [E("a"), E("b\nc")]),
        ([b"data: a\n\n", b"data: b", b"data: c\n\n"], [E("a"), E("bdata: c")]),
        ([b"data: a\n\n", b"id: 7\n", b"data: b\n\n"], [E("a"), E("b", "7")]),
        # only the stream's first BOM is dropped
        ([b"data: a\n\n", b"\xef\xbb\xbfdata: b\n\n"], [E("a")]),
    ],
)
def test_reads_that_look_like_one_whole_event(
    reads: list[bytes], want: list[ServerSentEvent]
) -> None:
    d = SSEDecoder()
    assert [e for r in reads for e in d.feed(r)] + d.close() == want


@pytest.mark.parametrize("limit", [9, 10])
def test_one_whole_event_in_one_read_is_held_to_the_limit(limit: int) -> None:
    d = SSEDecoder(max_event_size=limit)
    assert d.feed(b"data: a\n\n") == [E("a")]
    if limit < len(b"data: 0123"):
        with pytest.raises(EventTooLargeError):
            d.feed(b"data: 0123\n\n")
    else:
        assert d.feed(b"data: 0123\n\n") == [E("0123")]


def test_an_id_line_read_alone_counts_only_towards_its_own_event() -> None:
    limit = 13  # "id: 7" + "data: b" is 12 bytes; "data: 0123" alone is 10
    d = SSEDecoder(max_event_size=limit)
    reads = [b"data: a\n\n", b"id: 7\n", b"data: b\n\n", b"data: 0123\n\n"]
    events = [e for r in reads for e in d.feed(r)] + d.close()
    assert events == [E("a"), E("b", "7"), E("0123", "7")]


# -- max_event_size ---------------------------------------------------------------


def _assert_says_how_to_raise_the_limit(exc: EventTooLargeError, limit: int) -> None:
    assert isinstance(exc, NbstreamError)
    msg = str(exc)
    assert "Client(max_event_size=" in msg
    assert str(limit) in msg


@pytest.mark.parametrize("feed", ["whole", "bytewise", "random-0"])
def test_many_data_lines_over_the_limit_raise(feed: str) -> None:
    limit = 1000
    body = b"data: " + b"x" * 100 + b"\n"
    d = SSEDecoder(max_event_size=limit)
    with pytest.raises(EventTooLargeError) as info:
        for chunk in split(body * 20 + b"\n", feed):
            d.feed(chunk)
        d.close()
    _assert_says_how_to_raise_the_limit(info.value, limit)


@pytest.mark.parametrize("feed", ["whole", "bytewise", "random-1"])
def test_one_huge_unterminated_line_raises_while_buffered(feed: str) -> None:
    # No newline ever comes: the decoder must refuse it during feed(), not buffer
    # the whole body in memory and fail (or succeed) only at close().
    limit = 1000
    body = b"data: " + b"x" * (3 * limit)
    d = SSEDecoder(max_event_size=limit)
    fed = 0
    with pytest.raises(EventTooLargeError) as info:
        for chunk in split(body, feed):
            fed += len(chunk)
            d.feed(chunk)
    if feed != "whole":
        assert fed <= 2 * limit  # refused long before the end of the line
    _assert_says_how_to_raise_the_limit(info.value, limit)


def test_the_limit_is_per_event_not_per_stream() -> None:
    # A long reply is many small events: their total may exceed the limit.
    limit = 1000
    one = b"data: " + b"x" * 300 + b"\n\n"
    events, _ = decode(one * 50, "random-2", max_event_size=limit)
    assert len(events) == 50


def test_the_limit_counts_the_pending_line_against_its_own_event() -> None:
    # Two events of 900 and 206 bytes under a 1000-byte limit. When the chunk that
    # ends the first also starts the second, the line left pending belongs to the
    # second event: it was added to the first one's size (a false "too large").
    limit = 1000
    first = b"data: " + b"x" * 894 + b"\n"
    second = b"data: " + b"y" * 200
    d = SSEDecoder(max_event_size=limit)
    events = d.feed(first) + d.feed(b"\n" + second) + d.feed(b"\n\n") + d.close()
    assert [len(e.data) for e in events] == [894, 200]


def _cpu_to_decode(chunks: list[bytes]) -> float:
    d = SSEDecoder(max_event_size=None)
    c0 = time.process_time()
    events = [e for c in chunks for e in d.feed(c)] + d.close()
    cpu = time.process_time() - c0
    assert [len(e.data) for e in events] == [sum(map(len, chunks)) - 8]
    return cpu


def test_an_event_in_many_pieces_costs_linear_time() -> None:
    """A 4 MiB event in 4 KiB pieces costs about as much CPU as in 64 KiB pieces.

    Decoding that re-joins the pending line with each chunk copies the line so far on
    every feed: n pieces copy O(n²) bytes, so 16 times as many pieces cost about 16
    times the CPU (that decoder measured 12-14x here, ~1 s a run). Linear decoding
    costs about the same either way (measured 1.0-1.3x, ~15 ms a run).

    Not a flaky timing test: it compares two CPU times (not wall clock) of this
    process, measured interleaved so load slows both alike, takes the minimum of 5
    runs of each, and allows 4x, far from both 1x and 16x.
    """
    body = b"data: " + b"x" * (4 * 1024 * 1024) + b"\n\n"
    small = [body[i : i + 4096] for i in range(0, len(body), 4096)]
    large = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    t_small, t_large = [], []
    for _ in range(5):
        t_small.append(_cpu_to_decode(small))
        t_large.append(_cpu_to_decode(large))
    ratio = min(t_small) / max(min(t_large), 1e-4)
    assert ratio < 4, f"4 KiB pieces cost {ratio:.1f}x the CPU of 64 KiB pieces"


def test_a_line_in_tiny_pieces_is_held_once() -> None:
    # A line arriving in tiny reads is held as one buffer, not as one object per
    # read (a 16-byte bytes object takes ~50 bytes, and a list slot 8 more).
    size, piece = 256 * 1024, 16
    d = SSEDecoder()
    d.feed(b"data: ")
    tracemalloc.start()
    try:
        for _ in range(size // piece):
            d.feed(b"x" * piece)  # a new object each time, as a socket's reads are
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < 1.5 * size
    assert [len(e.data) for e in d.feed(b"\n\n")] == [size]


def test_no_limit() -> None:
    big = "x" * (2 * 1024 * 1024)
    events, _ = decode(f"data: {big}\n\n".encode(), max_event_size=None)
    assert [e.data for e in events] == [big]


# -- the recorded streams -----------------------------------------------------------

EXP = expected()


@pytest.mark.parametrize("feed", ["whole", "bytewise", "random-3"])
@pytest.mark.parametrize("name", stream_names())
def test_recorded_stream_events(name: str, feed: str) -> None:
    """What EXPECTED.json counted with a WHATWG parser, in both EOF modes."""
    e = EXP[name]
    data = (STREAMS / name).read_bytes()
    strict, d = decode(data, feed, dispatch_at_eof=False)
    assert len(strict) == e["dispatched_events"]
    assert {ev.event for ev in strict} == set(e["event_names"])
    assert d.comments == e["comment_lines"]
    pending = e["undispatched_at_eof"]
    has_data = bool(pending) and (
        pending["data_lines"] > 0 or pending["unterminated_line"].startswith("data")
    )
    default, _ = decode(data, feed)
    assert default[: len(strict)] == strict
    assert len(default) == len(strict) + has_data
    if has_data:
        # the event a browser would drop is the one that says the stream is over
        last = default[-1]
        assert last.data == "[DONE]" or json.loads(last.data)["type"] == "message_stop"


# -- properties ---------------------------------------------------------------------


def reference(body: bytes, dispatch_at_eof: bool) -> tuple[list[tuple[str, ...]], str]:
    """WHATWG "interpreting an event stream", written out over the whole body."""
    text = body.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)
    last_line = lines.pop()  # "" if the body ends with a line end
    events: list[tuple[str, ...]] = []
    etype, data, id_buf, last_id = "", [], "", ""

    def field_(line: str) -> None:
        nonlocal etype, id_buf
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            etype = value
        elif name == "id" and "\0" not in value:
            id_buf = value

    for line in lines:
        if line:
            field_(line)
            continue
        last_id = id_buf
        if data:
            events.append((etype or "message", "\n".join(data), id_buf))
        etype, data = "", []
    if dispatch_at_eof:
        if last_line:
            field_(last_line)
        if data:
            last_id = id_buf
            events.append((etype or "message", "\n".join(data), id_buf))
    return events, last_id


def too_large(body: bytes, limit: int | None) -> tuple[bool, bool]:
    """``(must, may)``: whether ``max_event_size=limit`` refuses ``body`` however it
    is cut, and whether it may refuse it for some cut.

    An event's lines count as they end, and so does the line still pending at the
    end of each ``feed``, so a line that never ends is refused while it is buffered.
    A comment line counts only while pending: cut just before its end, it may be
    refused where the whole body is not. A blank line starts a new count.
    """
    if limit is None:
        return False, False
    *lines, last = re.split(rb"\r\n|\r|\n", body.removeprefix(b"\xef\xbb\xbf"))
    must = may = False
    size = 0
    for line in lines:
        if not line:
            size = 0
        elif line.startswith(b":"):
            may = may or size + len(line) > limit
        else:
            size += len(line)
            must = must or size > limit
    must = must or size + len(last) > limit  # pending at the end of the last feed
    return must, may or must


@dataclass
class Decoded:
    events: list[ServerSentEvent]
    comments: int
    last_id: str
    refused: bool


def decode_chunks(chunks: list[bytes], **kwargs: Any) -> Decoded:
    d = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    try:
        for chunk in chunks:
            events += d.feed(chunk)
        events += d.close()
    except EventTooLargeError:
        return Decoded(events, d.comments, d.last_event_id, True)
    return Decoded(events, d.comments, d.last_event_id, False)


PIECES = st.sampled_from(
    [
        "data",
        "data:",
        "data: ",
        "event:",
        "id:",
        "id",
        "retry:",
        "12",
        ":",
        " ",
        "x",
        "0123456789",
        "Data",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
        "\0",
        "\ufeff",
        "\u00b0",
        "\U0001f60a",
        "\u2028",
        "\u0085",
    ]
)
LINES = st.tuples(
    st.sampled_from(["", "data: 0123456789", "data:x", ": ping", "event: e", "id: 7"]),
    st.sampled_from(["\n", "\r", "\r\n"]),
)
BODIES = st.one_of(
    st.lists(PIECES, max_size=40).map(lambda p: "".join(p).encode()),
    st.binary(max_size=60),  # invalid UTF-8 included
    st.lists(LINES, max_size=12).map(lambda ls: "".join(a + b for a, b in ls).encode()),
)


def assert_chunkings_agree(
    body: bytes, chunkings: list[list[bytes]], at_eof: bool, limit: int | None
) -> None:
    """Each chunking gives the events, comments and last event id of the body fed
    whole, which are what WHATWG gives for the body; ``max_event_size`` refuses the
    same bodies, plus at most a comment line that was pending when it went over."""
    opts: dict[str, Any] = {"dispatch_at_eof": at_eof, "max_event_size": limit}
    whole = decode_chunks([body], **opts)
    must, may = too_large(body, limit)
    assert whole.refused == must
    want, last_id = reference(body, at_eof)
    for chunks in chunkings:
        got = decode_chunks(chunks, **opts)
        if must:
            assert got.refused
        if got.refused:
            assert may
            so_far = [(e.event, e.data, e.id) for e in got.events]
            assert so_far == want[: len(so_far)]
            continue
        assert got == whole
        assert [(e.event, e.data, e.id) for e in got.events] == want
        assert got.last_id == last_id


@settings(max_examples=500, deadline=None)
# An event's end and the next one's start in one read: hypothesis found this false
# "too large" only after ~20k examples, so it is pinned.
@example(
    body=b"data: 0123456789\n\ndata: 0123456789", at_eof=True, sizes=[17], limit=20
)
@given(
    body=BODIES,
    at_eof=st.booleans(),
    sizes=st.lists(st.integers(0, 24)),
    limit=st.none() | st.integers(0, 40),
)
def test_any_chunking_gives_what_feeding_it_whole_gives(
    body: bytes, at_eof: bool, sizes: list[int], limit: int | None
) -> None:
    """Any bytes, cut into reads of ``sizes`` bytes (0 is an empty read), then the
    rest: see ``assert_chunkings_agree``."""
    bounds = [min(b, len(body)) for b in itertools.accumulate(sizes, initial=0)]
    chunks = [body[a:b] for a, b in itertools.pairwise([*bounds, len(body)])]
    assert_chunkings_agree(body, [chunks], at_eof, limit)


# Streams shaped like a provider's: LF line ends, each event ended by a blank line.
EVENT_LINES = st.sampled_from(
    [
        "data: 0123456789",
        "data: x",
        "data: ",
        "data:y",
        "data: [DONE]",
        "data: \u00b0\U0001f60a",
        "event: e",
        "id: 7",
        "id",
        ": ping",
        "retry: 5",
    ]
)
PROVIDER_BODIES = st.lists(st.lists(EVENT_LINES, max_size=3), max_size=8).map(
    lambda events: "".join(
        "".join(f"{ln}\n" for ln in ev) + "\n" for ev in events
    ).encode()
)


@settings(max_examples=300, deadline=None)
@given(
    body=PROVIDER_BODIES,
    at_eof=st.booleans(),
    groups=st.lists(st.integers(1, 3)),
    limit=st.none() | st.integers(0, 40),
)
def test_reads_at_line_ends_give_what_feeding_it_whole_gives(
    body: bytes, at_eof: bool, groups: list[int], limit: int | None
) -> None:
    """One read per event, as providers send, and reads of ``groups`` whole lines
    (then the rest): the reads the decoder's fast path takes, after reads that
    leave it state (an event type, a first data line, an id). See
    ``assert_chunkings_agree``."""
    lines = re.split(b"(?<=\n)", body)
    bounds = [min(b, len(lines)) for b in itertools.accumulate(groups, initial=0)]
    at_line_ends = [
        b"".join(lines[a:b]) for a, b in itertools.pairwise([*bounds, len(lines)])
    ]
    per_event = re.split(b"(?<=\n\n)", body)
    assert_chunkings_agree(body, [per_event, at_line_ends], at_eof, limit)
