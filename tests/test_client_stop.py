"""Stop, every way a user can do it, closes the HTTP response at once.

For each: the loopback server records the moment the client hung up; it must be less
than 100 ms after the stop, the turn must be ``cancelled`` and the partial reply kept.
The server sends a few chunks and then stalls (it would wait 30 s for the client).
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from nbstream import Conversation, Event, TextDelta
from tests.clientkit import (
    MODES,
    assert_closed_within,
    chat,
    client_for,
    collect,
    last,
    ok_reply,
    stalling,
    wait_stalled,
)
from tests.loopback import LoopbackServer, Reply

# every test here runs on nbstream's own HTTP/1.1 client and on httpx2
pytestmark = pytest.mark.usefixtures("http")

WORDS = ["Once", " upon", " a"]
PARTIAL = "Once upon a"


def _assert_stopped(turn: Any, text: str = PARTIAL) -> None:
    assert turn.status == "cancelled"
    assert turn.text == text
    assert turn.metrics.elapsed_s is not None  # settled, not left half-way
    assert turn.error is None


def _at_stall(s: Any, ev: Event, server: LoopbackServer) -> bool:
    """True once the consumer has the whole partial reply and the server stalls."""
    return s.turn.text == PARTIAL and wait_stalled(server) is not None


# -- sync -------------------------------------------------------------------------------


def test_sync_cancel_from_the_consuming_loop(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    stopped: list[float] = []
    with client.stream("Hi") as s:
        for ev in s:
            if _at_stall(s, ev, server) and not stopped:
                stopped.append(time.monotonic())
                s.cancel()
        # cancel() ends the iteration; we are still inside the `with`
        assert s.turn.status == "cancelled"
    assert_closed_within(server, last(server), stopped[0])
    _assert_stopped(s.turn)


def test_sync_cancel_from_another_thread_while_iterating(
    server: LoopbackServer,
) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    stopped: list[float] = []
    texts: list[str] = []
    got_all = threading.Event()
    with client.stream("Hi") as s:

        def stopper() -> None:
            wait_stalled(server)
            got_all.wait(5)  # the consumer is now blocked waiting for the next event
            stopped.append(time.monotonic())
            s.cancel()

        t = threading.Thread(target=stopper)
        t.start()
        for ev in s:  # ends when the other thread stops the stream
            if isinstance(ev, TextDelta):
                texts.append(ev.text)
                if len(texts) == len(WORDS):
                    got_all.set()
        t.join(5)
    assert texts == WORDS
    assert_closed_within(server, last(server), stopped[0])
    _assert_stopped(s.turn)


def test_sync_cancel_from_another_thread_while_waiting(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    s = client_for(server).stream("Hi")
    stopped: list[float] = []

    def stopper() -> None:
        wait_stalled(server)
        server.wait_for(lambda: s.turn.text == PARTIAL, 5)
        stopped.append(time.monotonic())
        s.cancel()

    t = threading.Thread(target=stopper)
    t.start()
    turn = s.wait()  # what client.chat does: returns the stopped turn, no exception
    t.join(5)
    assert turn is s.turn
    assert_closed_within(server, last(server), stopped[0])
    _assert_stopped(turn)


def test_sync_leaving_the_with_block_early(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    with client_for(server).stream("Hi") as s:
        wait_stalled(server)
        it = iter(s)
        while s.turn.text != PARTIAL:
            next(it)
        t_stop = time.monotonic()
    # leaving the block waited for the close: the turn is settled already
    _assert_stopped(s.turn)
    assert_closed_within(server, last(server), t_stop)


def test_sync_break_without_a_with_block(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    s = client_for(server).stream("Hi")
    for _ev in s:
        if s.turn.text == PARTIAL:
            wait_stalled(server)
            t_stop = time.monotonic()
            break
    assert_closed_within(server, last(server), t_stop)
    _assert_stopped(s.turn)


def test_sync_keyboard_interrupt_in_the_loop_body(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    t_stop = 0.0
    with pytest.raises(KeyboardInterrupt), client.stream("Hi") as s:
        for ev in s:
            if _at_stall(s, ev, server):
                t_stop = time.monotonic()
                raise KeyboardInterrupt
    assert_closed_within(server, last(server), t_stop)
    _assert_stopped(s.turn)


def _sigint_main_thread_when_stalled(
    server: LoopbackServer,
    stopped: list[float],
    ready: Callable[[], bool] = lambda: True,
) -> threading.Thread:
    """Send SIGINT to the main thread once the server stalls and ``ready()``."""
    main = threading.main_thread().ident
    assert main is not None

    def interrupt() -> None:
        if wait_stalled(server) is not None and server.wait_for(ready, 5):
            stopped.append(time.monotonic())
            signal.pthread_kill(
                main, signal.SIGINT
            )  # what Ctrl-C / kernel interrupt do

    t = threading.Thread(target=interrupt)
    t.start()
    return t


@pytest.fixture
def sigint_default() -> Any:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("SIGINT is delivered to the main thread only")
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.mark.usefixtures("sigint_default")
def test_sync_ctrl_c_while_chat_blocks(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    stopped: list[float] = []
    t = _sigint_main_thread_when_stalled(server, stopped)
    with pytest.raises(KeyboardInterrupt):
        client.chat("Hi")
    t.join(5)
    assert_closed_within(server, last(server), stopped[0])


@pytest.mark.usefixtures("sigint_default")
def test_sync_ctrl_c_while_iterating(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    stopped: list[float] = []
    texts: list[str] = []
    s = client.stream("Hi")
    t = _sigint_main_thread_when_stalled(
        server, stopped, lambda: len(texts) == len(WORDS)
    )
    with pytest.raises(KeyboardInterrupt), s:
        for ev in s:  # blocked waiting for the next event when Ctrl-C comes
            if isinstance(ev, TextDelta):
                texts.append(ev.text)
    t.join(5)
    assert_closed_within(server, last(server), stopped[0])
    _assert_stopped(s.turn)


@pytest.mark.usefixtures("sigint_default")
def test_sync_ctrl_c_keeps_the_stopped_turn_in_the_conversation(
    server: LoopbackServer,
) -> None:
    server.enqueue(stalling(WORDS))
    conv = Conversation(client_for(server))
    stopped: list[float] = []
    t = _sigint_main_thread_when_stalled(
        server,
        stopped,
        lambda: bool(conv.transcript) and conv.transcript[0].text == PARTIAL,
    )
    with pytest.raises(KeyboardInterrupt):
        conv.send("Hi")
    t.join(5)
    assert_closed_within(server, last(server), stopped[0])
    (turn,) = conv.transcript
    assert turn.status == "cancelled"
    assert turn.metrics.elapsed_s is not None
    # the words that had arrived are kept (the server stalled after sending them)
    assert turn.text == PARTIAL


# -- async ------------------------------------------------------------------------------


async def _wait_stalled(server: LoopbackServer) -> None:
    await asyncio.to_thread(wait_stalled, server)


async def test_async_cancel_inside_async_for(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    t_stop = 0.0
    async with client.astream("Hi") as s:
        async for _ev in s:
            if s.turn.text == PARTIAL:
                await _wait_stalled(server)
                t_stop = time.monotonic()
                s.cancel()
        assert s.turn.status == "cancelled"
    await asyncio.to_thread(assert_closed_within, server, last(server), t_stop)
    _assert_stopped(s.turn)
    await client.aclose()


async def test_async_cancel_from_another_task(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    s = client.astream("Hi")
    stopped: list[float] = []

    got_all = asyncio.Event()
    texts: list[str] = []

    async def stopper() -> None:
        await _wait_stalled(server)
        await got_all.wait()  # the consumer now awaits the next event
        stopped.append(time.monotonic())
        s.cancel()

    async def consume() -> None:
        async with s:
            async for ev in s:
                if isinstance(ev, TextDelta):
                    texts.append(ev.text)
                    if len(texts) == len(WORDS):
                        got_all.set()

    await asyncio.wait_for(asyncio.gather(consume(), stopper()), 10)
    assert texts == WORDS
    await asyncio.to_thread(assert_closed_within, server, last(server), stopped[0])
    _assert_stopped(s.turn)
    await client.aclose()


async def test_async_cancel_from_another_thread(server: LoopbackServer) -> None:
    """A Stop button whose callback runs on another thread."""
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    stopped: list[float] = []
    async with client.astream("Hi") as s:

        def stopper() -> None:
            wait_stalled(server)
            server.wait_for(lambda: s.turn.text == PARTIAL, 5)
            stopped.append(time.monotonic())
            s.cancel()

        t = threading.Thread(target=stopper)
        t.start()
        async for _ev in s:
            pass  # ends when the other thread stops the stream
        await asyncio.to_thread(t.join, 5)
    await asyncio.to_thread(assert_closed_within, server, last(server), stopped[0])
    _assert_stopped(s.turn)
    await client.aclose()


async def test_async_cancel_from_another_task_while_waiting(
    server: LoopbackServer,
) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    s = client.astream("Hi")
    waiter = asyncio.create_task(s.wait())
    await _wait_stalled(server)
    await asyncio.wait_for(_until(lambda: s.turn.text == PARTIAL), 5)
    t_stop = time.monotonic()
    s.cancel()
    turn = await asyncio.wait_for(waiter, 5)  # the stopped turn, no exception
    await asyncio.to_thread(assert_closed_within, server, last(server), t_stop)
    _assert_stopped(turn)
    await client.aclose()


async def _until(pred: Any) -> None:
    while not pred():
        await asyncio.sleep(0.005)


async def test_async_leaving_async_with_early(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    async with client.astream("Hi") as s:
        async for _ev in s:
            if s.turn.text == PARTIAL:
                break
        await _wait_stalled(server)
        t_stop = time.monotonic()
    _assert_stopped(s.turn)  # aclose() waited for the close
    await asyncio.to_thread(assert_closed_within, server, last(server), t_stop)
    await client.aclose()


async def test_async_break_without_async_with(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    s = client.astream("Hi")
    t_stop = 0.0
    async for _ev in s:
        if s.turn.text == PARTIAL:
            await _wait_stalled(server)
            t_stop = time.monotonic()
            break
    await asyncio.to_thread(assert_closed_within, server, last(server), t_stop)
    assert s.turn.status == "cancelled" and s.turn.text == PARTIAL
    await s.aclose()
    await client.aclose()


async def test_async_task_cancel_on_achat(server: LoopbackServer) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    task = asyncio.create_task(client.achat("Hi"))
    await _wait_stalled(server)
    t_stop = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()  # the cancellation reaches the caller, as asyncio expects
    await asyncio.to_thread(assert_closed_within, server, last(server), t_stop)
    await client.aclose()


async def test_async_task_cancel_keeps_the_turn_in_the_conversation(
    server: LoopbackServer,
) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    conv = Conversation(client)
    task = asyncio.create_task(conv.asend("Hi"))
    await _wait_stalled(server)
    await asyncio.wait_for(_until(lambda: conv.transcript[0].text == PARTIAL), 5)
    t_stop = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    await asyncio.to_thread(assert_closed_within, server, last(server), t_stop)
    _assert_stopped(conv.transcript[0])
    await client.aclose()


async def test_async_timeout_around_achat_raises_timeout_error(
    server: LoopbackServer,
) -> None:
    """asyncio.timeout relies on the cancellation coming through."""
    server.enqueue(stalling(WORDS))
    client = client_for(server)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.achat("Hi")
    await asyncio.to_thread(
        server.wait_for, lambda: last(server).client_closed_at is not None, 5
    )
    assert last(server).client_closed_at is not None
    await client.aclose()


# -- Stop before the first token, both ways ---------------------------------------------


def _before_first_token(kind: str) -> Reply:
    if kind == "headers":
        return Reply(delay_headers=30.0)  # the server has not even answered
    return stalling([])  # headers and the role chunk, then nothing


@pytest.mark.parametrize("kind", ["headers", "body"])
@pytest.mark.parametrize("mode", MODES)
def test_stop_before_the_first_token(
    server: LoopbackServer, mode: str, kind: str
) -> None:
    server.enqueue(_before_first_token(kind))
    client = client_for(server)
    stopped: list[float] = []
    streams: list[Any] = []

    def stopper() -> None:
        wait_stalled(server)
        assert server.wait_for(lambda: bool(streams), 5)
        stopped.append(time.monotonic())
        streams[0].cancel()  # from another thread, like a Stop button

    t = threading.Thread(target=stopper)
    t.start()

    if mode == "sync":
        with client.stream("Hi") as s:
            streams.append(s)
            events = list(s)
        turn = s.turn
    else:

        async def go() -> Any:
            async with client.astream("Hi") as s:
                streams.append(s)
                return [ev async for ev in s], s.turn

        events, turn = asyncio.run(go())
    t.join(5)
    assert all(not isinstance(e, TextDelta) for e in events)
    assert_closed_within(server, last(server), stopped[0])
    _assert_stopped(turn, text="")
    assert turn.metrics.ttft_s is None


async def test_async_task_cancel_before_headers(server: LoopbackServer) -> None:
    server.enqueue(Reply(delay_headers=30.0))
    client = client_for(server)
    task = asyncio.create_task(client.achat("Hi"))
    await _wait_stalled(server)
    t_stop = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    await asyncio.to_thread(assert_closed_within, server, last(server), t_stop)
    await client.aclose()


@pytest.mark.parametrize("mode", MODES)
def test_a_stopped_stream_does_not_affect_the_next_request(
    server: LoopbackServer, mode: str
) -> None:
    server.enqueue(stalling(WORDS))
    client = client_for(server)

    def on_event(s: Any, ev: Event) -> None:
        if s.turn.text == PARTIAL:
            s.cancel()

    _, turn = collect(client, mode, on_event=on_event)
    assert turn.status == "cancelled"
    server.enqueue(ok_reply(["fine"]))
    assert chat(client, mode).text == "fine"


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_stopped_before_it_starts_sends_nothing(
    server: LoopbackServer, mode: str
) -> None:
    """A Stop click that lands before the request went out."""
    server.enqueue(ok_reply(["never"]))
    client = client_for(server)
    if mode == "sync":
        s = client.stream("Hi")
        s.cancel()
        turn = s.wait()
    else:

        async def go() -> Any:
            s = client.astream("Hi")
            s.cancel()
            try:
                return await s.wait()
            finally:
                await client.aclose()

        turn = asyncio.run(go())
    assert turn.status == "cancelled" and turn.text == ""
    assert server.requests == []
