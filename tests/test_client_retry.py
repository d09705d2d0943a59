"""Retries before the first token, and the three timeouts, against a real server."""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import Iterator

import pytest

from nbstream import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    Client,
    Timeouts,
)
from tests.clientkit import (
    MODES,
    chat,
    client_for,
    last,
    ok_reply,
    stalling,
)
from tests.loopback import STALL, LoopbackServer, Reply

# every test here runs on nbstream's own HTTP/1.1 client and on httpx2
pytestmark = pytest.mark.usefixtures("http")


def _error(status: int, **headers: str) -> Reply:
    return Reply.json(status, {"error": {"message": f"status {status}"}}, headers)


def _gap(server: LoopbackServer, i: int = 1) -> float:
    """Seconds between request ``i - 1`` and request ``i``, as the server saw them."""
    return server.requests[i].received_at - server.requests[i - 1].received_at


# -- what is retried ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 503, 529])
@pytest.mark.parametrize("mode", MODES)
def test_transient_statuses_are_retried(
    server: LoopbackServer, mode: str, status: int
) -> None:
    server.enqueue(_error(status), ok_reply(["recovered"]))
    turn = chat(client_for(server), mode)
    assert turn.text == "recovered" and turn.status == "complete"
    assert len(server.requests) == 2
    assert turn.metrics.attempts == 2
    assert server.requests[0].body == server.requests[1].body  # the same request again


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(server: LoopbackServer, status: int) -> None:
    server.enqueue(_error(status), ok_reply())
    with pytest.raises(APIStatusError) as info:
        client_for(server).chat("Hi")
    assert info.value.status_code == status
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("max_retries", [0, 3])
def test_max_retries_is_respected(
    server: LoopbackServer, mode: str, max_retries: int
) -> None:
    server.enqueue(*[_error(503)] * 6)
    with pytest.raises(APIStatusError) as info:
        chat(client_for(server, max_retries=max_retries), mode)
    assert len(server.requests) == max_retries + 1
    assert info.value.status_code == 503
    assert "try again later" in str(info.value)
    turn = info.value.turn
    assert turn is not None and turn.metrics.attempts == max_retries + 1


def test_backoff_grows_between_attempts(server: LoopbackServer) -> None:
    server.enqueue(*[_error(500)] * 4)
    with pytest.raises(APIStatusError):
        client_for(server, max_retries=3, retry_delay=0.05).chat("Hi")
    gaps = [_gap(server, i) for i in (1, 2, 3)]
    # base * 2**(n-1), less up to 25 % jitter: >= 37 ms, 75 ms, 150 ms
    assert gaps[0] >= 0.0375 - 0.005
    assert gaps[1] >= 0.075 - 0.005
    assert gaps[2] >= 0.15 - 0.005
    assert sum(gaps) < 2.0


def test_retry_after_ms_is_honoured(server: LoopbackServer) -> None:
    server.enqueue(_error(429, **{"retry-after-ms": "250"}), ok_reply())
    client_for(server).chat("Hi")  # retry_delay is 10 ms: the header wins
    assert 0.24 <= _gap(server) < 1.5


def test_retry_after_seconds_is_honoured(server: LoopbackServer) -> None:
    server.enqueue(_error(503, **{"retry-after": "1"}), ok_reply())
    client_for(server).chat("Hi")
    assert 0.98 <= _gap(server) < 2.5


def test_retry_after_http_date_is_honoured(server: LoopbackServer) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds
    server.enqueue(_error(429, **{"retry-after": when}), ok_reply())
    client_for(server).chat("Hi")
    assert 0.9 <= _gap(server) < 3.0


def test_a_retry_after_too_long_to_wait_raises_at_once(
    server: LoopbackServer,
) -> None:
    server.enqueue(_error(429, **{"retry-after": "3600"}), ok_reply())
    t0 = time.monotonic()
    with pytest.raises(APIStatusError) as info:
        client_for(server).chat("Hi")
    assert time.monotonic() - t0 < 2
    assert info.value.retry_after == 3600
    assert len(server.requests) == 1


def test_x_should_retry_false_wins_over_the_status(server: LoopbackServer) -> None:
    server.enqueue(_error(503, **{"x-should-retry": "false"}), ok_reply())
    with pytest.raises(APIStatusError):
        client_for(server).chat("Hi")
    assert len(server.requests) == 1


def test_x_should_retry_true_wins_over_the_status(server: LoopbackServer) -> None:
    server.enqueue(_error(400, **{"x-should-retry": "true"}), ok_reply(["ok"]))
    assert client_for(server).chat("Hi").text == "ok"
    assert len(server.requests) == 2


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_is_retried_then_explained(mode: str) -> None:
    port = _closed_port()
    client = Client(base_url=f"http://127.0.0.1:{port}/v1", model="m", retry_delay=0.01)
    t0 = time.monotonic()
    with pytest.raises(APIConnectionError) as info:
        chat(client, mode)
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg
    assert "tried 3 times" in msg  # max_retries=2 by default
    assert "Is the server running?" in msg
    turn = info.value.turn
    assert turn is not None and turn.status == "error" and turn.metrics.attempts == 3


def test_no_retry_once_output_has_started(server: LoopbackServer) -> None:
    from tests.loopback import DROP, openai_chunks

    reply = Reply.events(openai_chunks(["partial"], finish=None, done=False))
    reply.chunks.append(DROP)
    server.enqueue(reply, ok_reply())
    with pytest.raises(APIConnectionError):
        client_for(server, max_retries=5).chat("Hi")
    assert len(server.requests) == 1


# -- timeouts -------------------------------------------------------------------------------

FAST = Timeouts(connect=2.0, first_byte=0.3, idle=0.3)


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(Reply(delay_headers=30.0), id="no-headers"),
        pytest.param(Reply(chunks=[STALL]), id="headers-then-nothing"),
    ],
)
@pytest.mark.parametrize("mode", MODES)
def test_first_byte_timeout(server: LoopbackServer, mode: str, reply: Reply) -> None:
    server.enqueue(reply)
    t0 = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        chat(client_for(server, timeout=FAST), mode)
    took = time.monotonic() - t0
    assert 0.28 <= took < 2.0
    exc = info.value
    assert exc.phase == "first_byte"
    assert "first byte" in str(exc) and "Timeouts(first_byte=" in str(exc)
    assert exc.turn is not None and exc.turn.status == "error"
    assert exc.turn.error is not None and exc.turn.error.kind == "APITimeoutError"
    # the client hung up; and a timeout is not retried behind the user's back
    assert server.wait_for(lambda: last(server).client_closed_at is not None, 5)
    assert len(server.requests) == 1


@pytest.mark.parametrize("mode", MODES)
def test_idle_timeout_keeps_the_partial_reply(
    server: LoopbackServer, mode: str
) -> None:
    server.enqueue(stalling(["Some", " words"]))
    with pytest.raises(APITimeoutError) as info:
        chat(client_for(server, timeout=FAST), mode)
    exc = info.value
    assert exc.phase == "idle"
    assert "next piece" in str(exc) and "Timeouts(idle=" in str(exc)
    assert exc.turn is not None
    assert exc.turn.status == "error" and exc.turn.text == "Some words"
    assert server.wait_for(lambda: last(server).client_closed_at is not None, 5)


def test_slow_but_steady_streams_do_not_time_out(server: LoopbackServer) -> None:
    # every gap is under the idle limit, though the whole reply takes longer than it
    words = ["a", "b", "c", "d", "e", "f"]
    from tests.loopback import openai_chunks

    server.enqueue(Reply.events(openai_chunks(words), delay=0.12))
    turn = client_for(server, timeout=Timeouts(first_byte=0.5, idle=0.5)).chat("Hi")
    assert turn.status == "complete" and turn.text == "abcdef"
    assert turn.metrics.elapsed_s is not None and turn.metrics.elapsed_s > 0.5


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen queue is full: Linux drops the SYN of a new connection,
    so connecting hangs (a real connect timeout, on loopback)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port: int = ls.getsockname()[1]
    fillers = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
    except TimeoutError:
        pass
    else:
        pytest.skip("this kernel accepts connections past a full backlog")
    finally:
        probe.close()
    yield port
    for c in fillers:
        c.close()
    ls.close()


@pytest.mark.parametrize("mode", MODES)
def test_connect_timeout(full_backlog: int, mode: str) -> None:
    client = Client(
        base_url=f"http://127.0.0.1:{full_backlog}/v1",
        model="m",
        timeout=Timeouts(connect=0.2),
        max_retries=1,
        retry_delay=0.01,
    )
    t0 = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        chat(client, mode)
    assert 0.35 <= time.monotonic() - t0 < 3  # two attempts of 0.2 s
    exc = info.value
    assert exc.phase == "connect"
    assert "Could not connect" in str(exc) and "within 0.2 s" in str(exc)
    assert "tried 2 times" in str(exc)


def test_first_byte_timeout_applies_to_each_attempt(server: LoopbackServer) -> None:
    """Waiting before a retry does not eat the next attempt's first-byte time."""
    server.enqueue(_error(503, **{"retry-after-ms": "500"}), ok_reply(["late"]))
    turn = client_for(server, timeout=FAST).chat("Hi")  # first_byte=0.3 < 0.5
    assert turn.text == "late" and turn.status == "complete"
    assert len(server.requests) == 2
