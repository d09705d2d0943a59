"""The only module that talks HTTP (and the only one that imports ``httpx2``).

One async producer does the work for every entry point: it sends the request (with
retries before the first byte), reads the body with first-byte and idle timeouts, feeds
the core ``Pipeline``, and hands each batch of events to a consumer. ``achat`` and
``astream`` run it on the caller's event loop; ``chat`` and ``stream`` run it on a
private loop thread, so a sync caller (even one inside a running Jupyter loop) gets
the same behaviour, and ``cancel()`` works from any thread.

Stop is always the same: the producer task is cancelled, its ``finally`` closes the
HTTP response (the server sees the connection close), and the turn is ``cancelled``
with its partial reply kept.

>>> client = Client(base_url="http://127.0.0.1:8000/v1", model="m", api_key="sk-x")
>>> client
Client(api='openai', base_url='http://127.0.0.1:8000/v1', model='m', api_key=***)
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from queue import SimpleQueue
from types import TracebackType
from typing import Any, TypeVar

# httpx2 imports its transport stack on first use. Importing it here instead moves that
# from the first request to ``import nbstream`` (measured: the first request in a fresh
# process was ~30 ms slower than a warm one; bench/engine.py).
import anyio._backends._asyncio  # noqa: F401
import h11  # noqa: F401
import httpcore2  # noqa: F401
import httpx2
import sniffio  # noqa: F401

from .._core.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    NbstreamError,
    NotAStreamError,
    ProviderStreamError,
)
from .._core.events import ErrorEvent, Event, StreamWarning
from .._core.pipeline import Pipeline
from .._core.providers import anthropic, openai
from .._core.sse import DEFAULT_MAX_EVENT_SIZE
from .._core.transcript import Api, ErrorInfo, Request, Turn
from .replay import Recording, RecordingTransport, ReplayTransport
from .settings import Secret, Settings, Timeouts, resolve

__all__ = ["AsyncStream", "Client", "Messages", "Stream"]

log = logging.getLogger("nbstream")
T = TypeVar("T")
Messages = str | list[dict[str, Any]]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_WAIT = 60.0
_ERROR_BODY_LIMIT = 64 * 1024
# Base URLs whose server rejected ``stream_options``: sent without it from then on.
_NO_STREAM_OPTIONS: set[str] = set()


def _as_messages(messages: Messages) -> list[dict[str, Any]]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return [dict(m) for m in messages]


@dataclass
class _Job:
    """Everything the producer needs for one request."""

    settings: Settings
    url: str
    headers: dict[str, str]
    messages: list[dict[str, Any]]
    system: str | None
    params: dict[str, Any]
    timeouts: Timeouts
    max_retries: int
    retry_delay: float
    max_event_size: int | None
    keep_raw_events: bool
    stream_options: bool = True
    secrets: list[str] = field(default_factory=list)

    @property
    def api(self) -> Api:
        return self.settings.api

    def body(self) -> dict[str, Any]:
        build = anthropic.build_body if self.api == "anthropic" else openai.build_body
        return build(
            self.settings.model,
            self.messages,
            self.system,
            self.params,
            stream_options=self.stream_options,
        )

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if s and s in text:
                text = text.replace(s, "***")
        return text


# -- the producer -------------------------------------------------------------------


class _Producer:
    """Runs one request to the end; ``emit`` receives each batch of events."""

    def __init__(
        self,
        job: _Job,
        turn: Turn,
        http: httpx2.AsyncClient,
        emit: Callable[[list[Event]], None],
    ) -> None:
        self.job, self.turn, self.http, self.emit = job, turn, http, emit
        self.pipeline: Pipeline | None = None
        # When the current attempt was sent: the first-byte limit counts from there,
        # so the wait before a retry does not eat into the next attempt's time.
        self.attempt_t0 = 0.0

    async def run(self) -> Turn:
        job, turn = self.job, self.turn
        t0 = time.perf_counter()
        response: httpx2.Response | None = None
        try:
            response = await self._open()
            turn.metrics.ttfb_s = time.perf_counter() - t0
            pipe = self.pipeline = Pipeline(
                job.api,
                turn,
                max_event_size=job.max_event_size,
                prompt_chars=len(json.dumps(job.messages)) + len(job.system or ""),
                keep_raw_events=job.keep_raw_events,
            )
            chunks = response.aiter_bytes()
            first = job.timeouts.first_byte
            left = (
                None
                if first is None
                else first - (time.perf_counter() - self.attempt_t0)
            )
            watchdog = _Watchdog(left, job.timeouts.idle)
            try:
                while True:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except asyncio.CancelledError:
                        if watchdog.fired():  # our own timer, not a Stop
                            raise self._timeout(watchdog.phase) from None
                        raise
                    watchdog.data()
                    events = pipe.feed(chunk, time.perf_counter() - t0)
                    if events:
                        self._emit(events)
                    if turn.done:  # [DONE] / message_stop
                        await _drain(chunks)
                        break
            finally:
                watchdog.close()
            events = pipe.close(time.perf_counter() - t0)
            if events:
                self._emit(events)
            if turn.status == "error":
                err = turn.error
                raise ProviderStreamError(
                    job.scrub(
                        f"The provider reported an error in the middle of the stream: "
                        f"{err.message if err else 'unknown error'}. The partial reply is "
                        "kept in turn.text; ask again to retry."
                    ),
                    turn=turn,
                )
            return turn
        except asyncio.CancelledError:
            self._end("cancelled", t0)
            raise
        except NbstreamError as exc:
            self._fail(exc, t0)
            raise
        except httpx2.TransportError as exc:
            broken = APIConnectionError(
                job.scrub(
                    f"The connection to {job.settings.base_url} broke while the reply "
                    f"streamed ({type(exc).__name__}: {exc}). The partial reply is kept; "
                    "ask again to retry."
                ),
                turn=turn,
            )
            self._fail(broken, t0)
            raise broken from None
        except BaseException:
            self._end("cancelled", t0)  # KeyboardInterrupt and friends
            raise
        finally:
            if response is not None:
                await response.aclose()

    def _emit(self, events: list[Event]) -> None:
        # Network text that lands on the turn or in an event (an error event's message,
        # a warning quoting a malformed chunk) may quote the key back: scrub it first.
        # Checked per batch only once there is an error or a warning: O(1) otherwise.
        if self.job.secrets and (self.turn.error is not None or self.turn.warnings):
            events = self._scrub_events(events)
        self.emit(events)

    def _scrub_events(self, events: list[Event]) -> list[Event]:
        job, turn = self.job, self.turn
        if turn.error is not None:
            turn.error.message = job.scrub(turn.error.message)
        turn.warnings[:] = [job.scrub(w) for w in turn.warnings]
        out: list[Event] = []
        for ev in events:
            if isinstance(ev, ErrorEvent):
                raw = job.scrub(json.dumps(ev.raw, ensure_ascii=False))
                ev = replace(ev, message=job.scrub(ev.message), raw=json.loads(raw))
            elif isinstance(ev, StreamWarning):
                ev = replace(ev, message=job.scrub(ev.message))
            out.append(ev)
        return out

    def _end(self, status: Any, t0: float) -> None:
        turn = self.turn
        if turn.status == "streaming":
            turn.status = status
        if turn.metrics.elapsed_s is None:
            now = time.perf_counter() - t0
            if self.pipeline is not None:
                self.pipeline.abort(now)
            else:
                turn.metrics.elapsed_s = now

    def _fail(self, exc: NbstreamError, t0: float) -> None:
        exc.turn = self.turn
        if not isinstance(exc, ProviderStreamError):  # that one is on the turn already
            self.turn.error = ErrorInfo(
                type(exc).__name__,
                exc.message,
                status_code=getattr(exc, "status_code", None),
                request_id=getattr(exc, "request_id", None),
                retry_after=getattr(exc, "retry_after", None),
            )
        self.turn.status = "error"
        self._end("error", t0)

    def _timeout(self, phase: Any) -> APITimeoutError:
        what = (
            "the first byte of the reply"
            if phase == "first_byte"
            else "the next piece of the reply"
        )
        setting = "first_byte" if phase == "first_byte" else "idle"
        limit = getattr(self.job.timeouts, setting)  # the setting, not what was left
        return APITimeoutError(
            f"No answer from {self.job.settings.base_url} within {limit:g} s while "
            f"waiting for {what}. The partial reply is kept. If the model is just slow, "
            f"raise the limit: Client(timeout=Timeouts({setting}=...)).",
            phase=phase,
            turn=self.turn,
        )

    async def _open(self) -> httpx2.Response:
        job, turn = self.job, self.turn
        attempt = 0
        while True:
            attempt += 1
            turn.metrics.attempts = attempt
            error: NbstreamError
            headers: httpx2.Headers | None = None
            first = job.timeouts.first_byte
            self.attempt_t0 = time.perf_counter()
            request = self.http.build_request(
                "POST", job.url, json=job.body(), headers=job.headers
            )
            try:
                async with asyncio.timeout(first):
                    response = await self.http.send(request, stream=True)
            except TimeoutError:
                raise self._timeout("first_byte") from None
            except httpx2.ConnectTimeout:
                error = APITimeoutError(
                    f"Could not connect to {job.settings.base_url} within "
                    f"{job.timeouts.connect} s (tried {_times(attempt)}). Check the base "
                    f"URL (from {job.settings.source}) and your network.",
                    phase="connect",
                )
            except (
                httpx2.ConnectError,
                httpx2.NetworkError,
                httpx2.RemoteProtocolError,
            ) as exc:
                error = APIConnectionError(self._connect_message(exc, attempt))
            else:
                status = response.status_code
                if 200 <= status < 300:
                    await self._check_stream(response)
                    return response
                body = await _read_limited(response)
                await response.aclose()
                if self._rejects_stream_options(status, body):
                    continue
                headers = response.headers
                error = self._status_error(response, body, attempt)
                if not _should_retry(status, headers):
                    raise error
            if attempt > job.max_retries:
                raise error
            delay = _retry_delay(attempt, headers, job.retry_delay)
            if delay > MAX_RETRY_WAIT:
                raise error
            log.info("retrying in %.2f s after: %s", delay, error.message)
            await asyncio.sleep(delay)

    def _rejects_stream_options(self, status: int, body: str) -> bool:
        job = self.job
        if (
            job.api == "openai"
            and job.stream_options
            and status in (400, 422)
            and "stream_options" in body
        ):
            job.stream_options = False
            _NO_STREAM_OPTIONS.add(job.settings.base_url)
            log.info(
                "%s rejects stream_options; sending without", job.settings.base_url
            )
            return True
        return False

    def _connect_message(self, exc: Exception, attempt: int) -> str:
        s = self.job.settings
        hint = (
            "Start the local model with `python -m nbstream.local`, or point nbstream "
            "at a server: NBSTREAM_BASE_URL / OPENAI_API_KEY / ANTHROPIC_API_KEY."
            if "local-model default" in s.source
            else f"Is the server running? Check the base URL (from {s.source})."
        )
        return self.job.scrub(
            f"Could not connect to {s.base_url} ({type(exc).__name__}: {exc}; tried "
            f"{_times(attempt)}). {hint}"
        )

    async def _check_stream(self, response: httpx2.Response) -> None:
        ctype = response.headers.get("content-type", "")
        if ctype.partition(";")[0].strip().lower() == "text/event-stream":
            return
        body = await _read_limited(response)
        await response.aclose()
        raise NotAStreamError(
            self.job.scrub(
                f"{self.job.settings.base_url} answered {response.status_code} with "
                f"{ctype or 'no content type'} instead of an event stream "
                f"(text/event-stream): {body[:300]!r}. Check that the base URL points at "
                f"an {self.job.api}-style API (it usually ends in /v1) and that the "
                "server supports streaming."
            )
        )

    def _status_error(
        self, response: httpx2.Response, body: str, attempt: int
    ) -> APIStatusError:
        job, status = self.job, response.status_code
        mod = anthropic if job.api == "anthropic" else openai
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = None
        msg, etype, _code = (
            mod.error_details(parsed) if parsed is not None else (None, None, None)
        )
        request_id = (
            response.headers.get("x-request-id")
            or response.headers.get("request-id")
            or (parsed.get("request_id") if isinstance(parsed, dict) else None)
        )
        retry_after = _retry_after(response.headers)
        provider_msg = msg or body[:500].strip() or None
        hint = _status_hint(status, job, retry_after, attempt)
        text = (
            f"{job.settings.base_url} answered HTTP {status} {response.reason_phrase}"
            f"{' for model ' + repr(job.settings.model) if status in (400, 404, 422) else ''}"
            f": {(provider_msg or '(no message)').rstrip('. ')}"
            f"{' [request id ' + request_id + ']' if request_id else ''}. {hint}"
        )
        return APIStatusError(
            job.scrub(text),
            status_code=status,
            provider_message=job.scrub(provider_msg) if provider_msg else None,
            request_id=request_id,
            retry_after=retry_after,
            error_type=etype,
            body=job.scrub(body),
        )


class _Watchdog:
    """Cancels the reading task when no body data came for too long.

    One timer per stream, re-armed once per idle period, rather than a timeout around
    every read: that cost ~5 µs a chunk, a quarter of the pipeline (bench/engine.py).
    Per chunk there is only ``data()``: a clock read and a store.
    """

    __slots__ = (
        "_handle",
        "_idle",
        "_loop",
        "_task",
        "expired",
        "last",
        "limit",
        "phase",
    )

    def __init__(self, first_byte_left: float | None, idle: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._idle = idle
        self._handle: asyncio.TimerHandle | None = None
        self.phase: Any = "first_byte"
        self.limit = None if first_byte_left is None else max(0.0, first_byte_left)
        self.last = self._loop.time()
        self.expired = False
        self._arm()

    def _arm(self) -> None:
        if self.limit is not None:
            self._handle = self._loop.call_at(self.last + self.limit, self._check)

    def _check(self) -> None:
        self._handle = None
        assert self.limit is not None
        if self._loop.time() >= self.last + self.limit:
            self.expired = True
            if self._task is not None:
                self._task.cancel()
        else:
            self._arm()

    def data(self) -> None:
        self.last = self._loop.time()
        if self.phase == "first_byte":
            self.phase, self.limit = "idle", self._idle
            if self._handle is not None:
                self._handle.cancel()
            self._arm()

    def fired(self) -> bool:
        """True if this watchdog (and nothing else) cancelled the task."""
        return self.expired and self._task is not None and self._task.uncancel() == 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """After the end marker, read what is left of the body (a little, briefly), so the
    connection goes back to the pool instead of being closed: the next request then
    skips the TCP (and TLS) handshake."""
    left = 64 * 1024
    with contextlib.suppress(TimeoutError, httpx2.TransportError):
        async with asyncio.timeout(0.1):
            async for chunk in chunks:
                left -= len(chunk)
                if left < 0:
                    return


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _status_hint(
    status: int, job: _Job, retry_after: float | None, attempt: int
) -> str:
    if status in (401, 403):
        withheld = job.settings.withheld_key
        if withheld and job.settings.api_key is None:
            return (
                f"{withheld} is set, but nbstream sends it only to its own provider, "
                f"not to {job.settings.base_url}: for this server set NBSTREAM_API_KEY "
                "or pass api_key=..."
            )
        var = "ANTHROPIC_API_KEY" if job.api == "anthropic" else "OPENAI_API_KEY"
        return (
            "Check the API key: pass api_key=..., or set NBSTREAM_API_KEY or "
            f"{var}{'' if job.settings.api_key else ' (none is set)'}."
        )
    if status == 404:
        return "Check the model name and the base URL (it usually ends in /v1)."
    if status == 429:
        wait = f"retry after {retry_after:g} s" if retry_after is not None else "wait"
        return (
            f"Rate limited (tried {_times(attempt)}): {wait}, or send fewer requests."
        )
    if status >= 500:
        return f"The server failed (tried {_times(attempt)}); try again later."
    return "The provider's message says what to change in the request."


def _should_retry(status: int, headers: httpx2.Headers) -> bool:
    should = headers.get("x-should-retry", "").strip().lower()
    if should == "true":
        return True
    if should == "false":
        return False
    return status in RETRY_STATUSES or status >= 500


def _retry_after(headers: httpx2.Headers) -> float | None:
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _retry_delay(attempt: int, headers: httpx2.Headers | None, base: float) -> float:
    if headers is not None:
        after = _retry_after(headers)
        if after is not None:
            return after
    delay: float = min(8.0, base * 2.0 ** (attempt - 1))
    return delay * (1 - 0.25 * random.random())


async def _read_limited(response: httpx2.Response) -> str:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= _ERROR_BODY_LIMIT:
            break
    return b"".join(parts)[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")


# -- the loop thread for sync callers ----------------------------------------------


class _LoopThread:
    """One daemon thread running an event loop, shared by every sync call."""

    _lock = threading.Lock()
    _instance: _LoopThread | None = None

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
    def get(cls) -> _LoopThread:
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

    def __init__(self, client: Client, job: _Job, turn: Turn) -> None:
        self._client, self._job, self.turn = client, job, turn
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
            producer = _Producer(
                self._job, self.turn, self._client._http_for(self._loop), self._emit
            )
            self._task = self._loop.create_task(self._run(producer))
        return self._task

    async def _run(self, producer: _Producer) -> Turn:
        try:
            if self.turn.status == "cancelled":
                raise asyncio.CancelledError  # stopped before it started: send nothing
            return await producer.run()
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
        if _in_loop(loop):
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

    def __init__(self, client: Client, job: _Job, turn: Turn) -> None:
        self._client, self._job, self.turn = client, job, turn
        self._queue: SimpleQueue[list[Event]] = SimpleQueue()
        self._future: Future[Turn] | None = None
        self._loop: _LoopThread | None = None
        self._task: asyncio.Task[Turn] | None = None  # set and used on the loop thread
        self._cancel_requested = False  # likewise
        self._stop = False
        self._consuming = True

    def _start(self) -> Future[Turn]:
        if self._future is None:
            self._loop = lt = _LoopThread.get()
            self._future = lt.submit(self._run())
        return self._future

    async def _run(self) -> Turn:
        assert self._loop is not None
        self._task = asyncio.current_task()
        try:
            if self._cancel_requested or self.turn.status == "cancelled":
                raise asyncio.CancelledError  # stopped before it started: send nothing
            http = self._client._http_for(self._loop.loop)
            return await _Producer(self._job, self.turn, http, self._emit).run()
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
        self._start()
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event]:
        self._start()
        return self._events()

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
        fut = self._start()
        try:
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
        else:
            self._request_cancel()

    def close(self, timeout: float = 10.0) -> None:
        """Cancel if still running, and wait until the connection is closed."""
        fut = self._future
        self._stop = True
        if fut is None:
            _mark_cancelled(self.turn)
            return
        if not fut.done():
            self._request_cancel()
            futures.wait([fut], timeout)
        if fut.cancelled():
            _mark_cancelled(self.turn)


def _mark_cancelled(turn: Turn) -> None:
    if turn.status == "streaming":
        turn.status = "cancelled"


def _in_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# -- the client ---------------------------------------------------------------------


class Client:
    """Talks to one model server; reuses its HTTP connections across requests.

    Every argument left ``None`` comes from the environment (``NBSTREAM_BASE_URL``,
    ``NBSTREAM_MODEL``, ``NBSTREAM_API``, ``NBSTREAM_API_KEY``, then ``OPENAI_*`` /
    ``ANTHROPIC_API_KEY``), and with nothing set, from the local model server.

    >>> client = Client(base_url="http://127.0.0.1:8000/v1", model="m")
    >>> turn = client.chat("Hello")  # doctest: +SKIP
    >>> turn.text, turn.usage, turn.metrics.ttft_s  # doctest: +SKIP
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        api: str | None = None,
        *,
        timeout: float | Timeouts | None = None,
        max_retries: int = 2,
        retry_delay: float = 0.5,
        headers: dict[str, str] | None = None,
        max_event_size: int | None = DEFAULT_MAX_EVENT_SIZE,
        keep_raw_events: bool = False,
        record: str | os.PathLike[str] | None = None,
        replay: str | os.PathLike[str] | None = None,
        replay_speed: float | None = None,
    ) -> None:
        self.settings = resolve(base_url, model, api, api_key)
        self.timeouts = Timeouts.of(timeout)
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.max_event_size = max_event_size
        self.keep_raw_events = keep_raw_events
        self._extra_headers = dict(headers or {})
        # Record / replay (see nbstream.replay): argument, else environment.
        env = os.environ
        self.record = record or env.get("NBSTREAM_RECORD") or None
        replay = replay or env.get("NBSTREAM_REPLAY") or None
        self._recording = Recording.load(replay) if replay else None
        if replay_speed is None:
            replay_speed = float(env.get("NBSTREAM_REPLAY_SPEED") or 1.0)
        self.replay_speed = replay_speed
        self._http: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, httpx2.AsyncClient
        ]
        self._http = weakref.WeakKeyDictionary()

    # settings, read-only views
    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def api(self) -> Api:
        return self.settings.api

    @property
    def api_key(self) -> Secret | None:
        return self.settings.api_key

    def __repr__(self) -> str:
        key = "***" if self.settings.api_key else None
        return (
            f"Client(api={self.api!r}, base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key={key})"
        )

    def _http_for(self, loop: asyncio.AbstractEventLoop) -> httpx2.AsyncClient:
        http = self._http.get(loop)
        if http is None:
            t = self.timeouts
            verify = self.base_url.startswith("https://")
            transport: httpx2.AsyncBaseTransport | None = None
            if self._recording is not None:
                transport = ReplayTransport(self._recording, self.replay_speed)
            elif self.record:
                transport = RecordingTransport(self.record, verify=verify)
            http = httpx2.AsyncClient(
                transport=transport,
                timeout=httpx2.Timeout(
                    connect=t.connect, read=None, write=t.idle, pool=t.connect
                ),
                # No TLS context for plain-http servers (local models): it costs ~50 ms.
                verify=verify,
            )
            self._http[loop] = http
        return http

    def _job(
        self,
        messages: Messages,
        system: str | None,
        model: str | None,
        params: dict[str, Any],
    ) -> tuple[_Job, Turn]:
        s = self.settings
        if model is not None and model != s.model:
            s = Settings(s.base_url, model, s.api, s.api_key, s.source, s.withheld_key)
        msgs = _as_messages(messages)
        mod = anthropic if s.api == "anthropic" else openai
        key = s.api_key.get() if s.api_key else None
        headers = {
            "accept": "text/event-stream",
            "user-agent": "nbstream/0.1",
            **self._extra_headers,
            **mod.headers(key),
        }
        job = _Job(
            settings=s,
            url=s.base_url + mod.PATH,
            headers=headers,
            messages=msgs,
            system=system,
            params=dict(params),
            timeouts=self.timeouts,
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
            max_event_size=self.max_event_size,
            keep_raw_events=self.keep_raw_events,
            stream_options=s.base_url not in _NO_STREAM_OPTIONS,
            secrets=[key] if key else [],
        )
        request = Request(
            messages=msgs,
            model=s.model,
            api=s.api,
            base_url=s.base_url,
            params=dict(params),
            system=system,
        )
        return job, Turn(request)

    def _history_job(
        self,
        history: list[dict[str, Any]],
        messages: Messages,
        system: str | None,
        model: str | None,
        params: dict[str, Any],
    ) -> tuple[_Job, Turn]:
        """A job that sends ``history`` + ``messages``, recording only the new ones."""
        job, turn = self._job(messages, system, model, params)
        job.messages = history + job.messages
        return job, turn

    # -- public entry points -----------------------------------------------------
    def stream(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        **params: Any,
    ) -> Stream:
        """Start a request; iterate the returned ``Stream`` for events (sync)."""
        return Stream(self, *self._job(messages, system, model, params))

    def astream(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        **params: Any,
    ) -> AsyncStream:
        """Start a request; ``async for`` the returned ``AsyncStream`` for events."""
        return AsyncStream(self, *self._job(messages, system, model, params))

    def chat(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        **params: Any,
    ) -> Turn:
        """Ask and wait for the whole reply (sync). Raises an ``NbstreamError`` if the
        turn failed; the error's ``turn`` keeps the partial reply."""
        return self.stream(messages, system=system, model=model, **params).wait()

    async def achat(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        **params: Any,
    ) -> Turn:
        """Ask and wait for the whole reply (async); same contract as ``chat``."""
        s = self.astream(messages, system=system, model=model, **params)
        try:
            return await s.wait()
        finally:
            await s.aclose()

    async def aclose(self) -> None:
        """Close the connection pool of the running loop."""
        http = self._http.pop(asyncio.get_running_loop(), None)
        if http is not None:
            await http.aclose()

    def close(self) -> None:
        """Close every connection pool this client opened."""
        for loop, http in list(self._http.items()):
            if loop.is_running() and not _in_loop(loop):
                asyncio.run_coroutine_threadsafe(http.aclose(), loop).result(5)
            elif not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(http.aclose())
        self._http.clear()
