"""The stream handles: ``AsyncStream`` (``astream``, ``achat``) and ``Stream`` (``stream``,
``chat``). Both run the same ``Producer``; the sync one on a private loop thread, so a
sync caller (even one inside a running Jupyter loop) gets the same behaviour, and
``cancel()`` works from any thread.

Stop is always the same: the producer task is cancelled, its ``finally`` closes the
HTTP response (the server sees the connection close), and the turn is ``cancelled``
with its partial reply kept.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent import futures
from concurrent.futures import Future
from queue import SimpleQueue
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .._core.events import Event
from .._core.transcript import Turn

if TYPE_CHECKING:
    from .client import Client
    from .runner import Plan

__all__ = ["AsyncStream", "LoopThread", "Stream", "in_loop"]

T = TypeVar("T")


class LoopThread:
    """One daemon thread running an event loop, shared by every sync call."""

    _lock = threading.Lock()
    _instance: LoopThread | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._main, args=(ready,), name="nbstream-loop", daemon=True
        )
        self.thread.start()
        ready.wait()

    def _main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    @classmethod
    def get(cls) -> LoopThread:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


# -- streams ------------------------------------------------------------------------


_END: list[Event] = []


class AsyncStream:
    """An async stream of events; ``turn`` is current throughout.

    >>> async def demo(client):  # doctest: +SKIP
    ...     async with client.astream("Hello") as s:
    ...         async for event in s:
    ...             print(event)
    ...     return s.turn
    """

    def __init__(self, client: Client, plan: Plan, turn: Turn) -> None:
        self._client, self._plan, self.turn = client, plan, turn
        self._queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        self._task: asyncio.Task[Turn] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: Iterator[Event] = iter(())
        self._stop = False
        self._consuming = True

    def _emit(self, batch: list[Event]) -> None:
        if self._consuming:
            self._queue.put_nowait(batch)

    def _start(self) -> asyncio.Task[Turn]:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(self._loop))
        return self._task

    async def _run(self, loop: asyncio.AbstractEventLoop) -> Turn:
        try:
            if self.turn.status == "cancelled":
                raise asyncio.CancelledError  # stopped before it started: send nothing
            return await self._plan.run(self.turn, self._emit, loop)
        finally:
            self._queue.put_nowait(_END)

    async def __aenter__(self) -> AsyncStream:
        self._start()
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        self._start()
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        # An async generator, so that leaving an ``async for`` early (``break``, an
        # exception) stops the request when the loop finalizes it, as the sync
        # ``Stream`` does; ``__anext__`` alone would leave the request running.
        finished = False
        try:
            while True:
                try:
                    ev = await self.__anext__()
                except StopAsyncIteration:
                    finished = True
                    return
                yield ev
        finally:
            if not finished:
                self.cancel()

    async def __anext__(self) -> Event:
        while True:
            if self._stop:
                await self._settle()
                raise StopAsyncIteration
            ev = next(self._batch, None)
            if ev is not None:
                return ev
            batch = await self._queue.get()
            if batch is _END:
                self._stop = True
                await self._result()
                raise StopAsyncIteration
            self._batch = iter(batch)

    async def _result(self) -> Turn:
        task = self._start()
        try:
            return await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # we were cancelled ourselves
            _mark_cancelled(self.turn)
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                # The caller's own task was cancelled (task.cancel(), asyncio.timeout,
                # a TaskGroup): that cancelled the request too; let it propagate.
                raise
            return self.turn  # Stopped with cancel(): the stopped turn is the result

    async def _settle(self) -> None:
        """After a stop: wait until the producer has closed the response."""
        task = self._task
        if task is not None:
            if not task.done():
                task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # reported by iteration or wait(); mark it retrieved
                return
        _mark_cancelled(self.turn)

    async def wait(self) -> Turn:
        """Run to the end and return the turn (raises if it failed)."""
        self._consuming = False  # nobody iterates: keep no events
        while not self._queue.empty():
            self._queue.get_nowait()
        self._start()
        self._stop = True
        return await self._result()

    def cancel(self) -> None:
        """Stop now: closes the connection; the turn becomes ``cancelled``.
        Safe to call from any thread and from inside the ``async for``."""
        self._stop = True
        task, loop = self._task, self._loop
        if task is None or loop is None:
            _mark_cancelled(self.turn)
            return
        if in_loop(loop):
            task.cancel()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    async def aclose(self) -> None:
        """Cancel if still running, and wait until the connection is closed.
        (A failure was already reported by iteration or ``wait()``; the turn holds it.)
        """
        self._stop = True
        await self._settle()


class Stream:
    """A sync stream of events; ``turn`` is current throughout.

    >>> with client.stream("Hello") as s:  # doctest: +SKIP
    ...     for event in s:
    ...         print(event)
    >>> s.turn.status  # doctest: +SKIP
    'complete'
    """

    def __init__(self, client: Client, plan: Plan, turn: Turn) -> None:
        self._client, self._plan, self.turn = client, plan, turn
        self._queue: SimpleQueue[list[Event]] = SimpleQueue()
        self._future: Future[Turn] | None = None
        self._loop: LoopThread | None = None
        self._task: asyncio.Task[Turn] | None = None  # set and used on the loop thread
        self._cancel_requested = False  # likewise
        self._stop = False
        self._consuming = True

    def _start(self) -> Future[Turn]:
        if self._future is None:
            self._loop = lt = LoopThread.get()
            self._future = lt.submit(self._run())
        return self._future

    async def _run(self) -> Turn:
        assert self._loop is not None
        self._task = asyncio.current_task()
        try:
            if self._cancel_requested or self.turn.status == "cancelled":
                raise asyncio.CancelledError  # stopped before it started: send nothing
            return await self._plan.run(self.turn, self._emit, self._loop.loop)
        finally:
            self._queue.put(_END)

    def _cancel_in_loop(self) -> None:
        self._cancel_requested = True
        if self._task is not None:
            self._task.cancel()

    def _request_cancel(self) -> None:
        """Cancel the producer task (from any thread). The future completes only when
        the task has finished, i.e. after its ``finally`` closed the response.
        (Cancelling the concurrent future itself would complete it at once, before the
        connection is closed, and could drop the end-of-stream marker.)"""
        lt = self._loop
        if lt is not None and not lt.loop.is_closed():
            lt.loop.call_soon_threadsafe(self._cancel_in_loop)

    def __enter__(self) -> Stream:
        self._guarded_start()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        self._guarded_start()
        return self._events()

    def _guarded_start(self) -> Future[Turn]:
        """``_start``, stopping the request if Ctrl-C lands while it is being handed
        to the loop thread (it may already be running there)."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _events(self) -> Iterator[Event]:
        finished = False
        try:
            while not self._stop:
                batch = self._queue.get()
                if batch is _END:
                    finished = True
                    self._stop = True  # iterating again ends at once (no second _END)
                    self._result()
                    return
                for ev in batch:
                    yield ev
                    if self._stop:
                        break
        finally:
            if not finished:
                self.close()  # break, an exception, KeyboardInterrupt: stop the request

    def _result(self) -> Turn:
        fut = self._start()
        try:
            return fut.result()
        except BaseException:
            if fut.cancelled():
                _mark_cancelled(self.turn)
                return self.turn
            raise

    def wait(self) -> Turn:
        """Block until the end and return the turn (raises if it failed)."""
        self._drop_events()
        try:
            fut = self._start()  # inside: Ctrl-C can land while it is handed over
            while not fut.done():
                futures.wait([fut], timeout=0.25)  # short waits keep Ctrl-C responsive
        except BaseException:
            self.close()  # KeyboardInterrupt: stop the request, keep the partial turn
            raise
        return self._result()

    def _emit(self, batch: list[Event]) -> None:
        if self._consuming:
            self._queue.put(batch)

    def _drop_events(self) -> None:
        """Nobody will iterate: keep no events (memory stays ~ the reply's size)."""
        self._consuming = False
        while not self._queue.empty():
            self._queue.get_nowait()

    def cancel(self) -> None:
        """Stop now, from any thread: closes the connection; the turn is ``cancelled``."""
        self._stop = True
        if self._future is None:
            _mark_cancelled(self.turn)
        self._request_cancel()  # (also if it is being handed to the loop right now)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel if still running, and wait until the connection is closed."""
        fut = self._future
        self._stop = True
        if fut is None:
            _mark_cancelled(self.turn)
            self._request_cancel()  # handed to the loop but interrupted before kept
            return
        if not fut.done():
            self._request_cancel()
            futures.wait([fut], timeout)
        if fut.cancelled():
            _mark_cancelled(self.turn)


def _mark_cancelled(turn: Turn) -> None:
    if turn.status == "streaming":
        turn.status = "cancelled"


def in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
