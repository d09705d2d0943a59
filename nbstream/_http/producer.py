"""One request, run to the end: send it (asking again before the first byte when that
can help), read the body under the watchdog, feed the core ``Pipeline``, hand each
batch of events on, and settle the turn however it ends.

Every way out is decided here, once: a finished reply is ``complete`` (or
``incomplete``), a failure is ``error`` with an ``NbstreamError`` on the turn, and
``cancelled`` means only that someone stopped it. Every string that came from the
server is scrubbed of the key before it is cut short or kept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

from .._core.errors import (
    APIConnectionError,
    InternalError,
    NbstreamError,
    NotAStreamError,
    ProviderStreamError,
)
from .._core.events import Event
from .._core.pipeline import Pipeline
from .._core.providers import clip
from .._core.response_format import rejection_hint
from .._core.transcript import ErrorInfo, Status, Turn
from .failures import send_failed, status_error, timeout
from .hooks import Hooks
from .request import ERROR_BODY_LIMIT, MAX_RETRY_WAIT, RequestSpec
from .retry import retry_after, retry_delay, should_retry
from .transport import (
    BODY_ERRORS,
    HTTP,
    SLICE,
    Response,
    TransportFailure,
    failure,
)
from .watchdog import Watchdog

__all__ = ["Producer"]

log = logging.getLogger("nbstream")
# Base URLs whose server rejected ``stream_options``: sent without it from then on.
_NO_STREAM_OPTIONS: set[str] = set()


def stream_options_for(base_url: str) -> bool:
    return base_url not in _NO_STREAM_OPTIONS


class Producer:
    """Runs one request to the end; ``emit`` receives each batch of events."""

    def __init__(
        self,
        spec: RequestSpec,
        turn: Turn,
        http: HTTP,
        emit: Callable[[list[Event]], None],
    ) -> None:
        self.spec, self.turn, self.http, self.emit = spec, turn, http, emit
        self.hooks = Hooks(spec)
        self.pipeline: Pipeline | None = None
        self.t0 = 0.0
        # When the current attempt was sent: the first-byte limit counts from there,
        # so the wait before a retry does not eat into the next attempt's time.
        self.attempt_t0 = 0.0

    async def run(self) -> Turn:
        turn = self.turn
        try:
            turn = await self._run()
        except NbstreamError as exc:
            await self._after(exc)
            raise
        except BaseException:
            self.hooks.after_stop(turn)
            raise
        await self._after(None)
        return turn

    async def _after(self, error: NbstreamError | None) -> None:
        """The middleware's ``after``; one that raises fails the turn."""
        try:
            await self.hooks.after(self.turn, error)
        except NbstreamError as exc:
            self.turn.status = "error"
            self._fail(exc)
            raise

    async def _run(self) -> Turn:
        turn = self.turn
        self.t0 = time.perf_counter()
        response: Response | None = None
        try:
            response = await self._open()
            turn.metrics.ttfb_s = time.perf_counter() - self.t0
            if self.pipeline is None:  # a stream (not a whole JSON answer)
                await self._read(response)
                response = None  # handed over: released in the background
            if turn.status == "error":
                err = turn.error
                raise ProviderStreamError(
                    "The provider reported an error in the middle of the stream: "
                    f"{err.message if err else 'unknown error'}. The partial reply is "
                    "kept in turn.text; ask again to retry.",
                    turn=turn,
                )
            return turn
        except asyncio.CancelledError:
            self._end("cancelled")
            raise
        except NbstreamError as exc:
            self._fail(exc)
            raise
        except TransportFailure as exc:
            broken = APIConnectionError(
                f"The connection to {self.spec.base_url} broke while the reply "
                f"streamed ({self._clip(exc.detail, 300)}). The partial reply is "
                "kept; ask again to retry.",
            )
            self._fail(broken)
            raise broken from None
        except Exception as exc:  # a bug of ours must not look like a Stop
            internal = InternalError(
                f"nbstream failed while reading the reply ({type(exc).__name__}: "
                f"{self._clip(str(exc), 300)}). The partial reply is kept. This is a "
                "bug in nbstream: please report it, with the stream if you can "
                "(Client(keep_raw_events=True) keeps it in turn.raw_events).",
            )
            self._fail(internal)
            raise internal from None
        except BaseException:
            self._end("cancelled")  # KeyboardInterrupt and friends: someone stopped it
            raise
        finally:
            if response is not None:
                await response.aclose()

    def _clip(self, text: str, limit: int) -> str:
        return clip(self.spec.scrubber, text, limit)

    # -- the body -------------------------------------------------------------------
    async def _read(self, response: Response) -> None:
        spec, turn = self.spec, self.turn
        pipe = self.pipeline = Pipeline(
            spec.provider,
            turn,
            max_event_size=spec.max_event_size,
            prompt_chars=spec.prompt_chars(),
            keep_raw_events=spec.keep_raw_events,
            scrubber=spec.scrubber,
            transform=self.hooks.events(turn),
        )
        chunks = response.body()
        t = spec.timeouts
        dog = Watchdog(t, sent_at=self.attempt_t0, started_at=self.t0)
        perf = time.perf_counter
        t0 = self.t0
        metrics = turn.metrics
        emit = self.emit
        try:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if dog.fired():  # our own timer, not a Stop
                        raise timeout(self.spec, dog.phase) from None
                    raise
                except BODY_ERRORS as exc:
                    raise failure(exc) from None
                if len(chunk) > SLICE:  # one big read: in steps, Stop between them
                    events = await self._feed_big(pipe, chunk)
                else:
                    events = pipe.feed(chunk, perf() - t0)
                dog.data(metrics.deltas)
                if events:
                    emit(events)
                if turn.done:  # [DONE] / message_stop: the reply is over now
                    break
        finally:
            dog.close()
        events = pipe.close(perf() - t0)
        if events:
            self.emit(events)
        if self.http.recording:  # the recording is written when the body ends
            await response.drain(chunks)
        else:  # leftovers are read (and dropped) in the background
            response.release(chunks)

    async def _feed_big(self, pipe: Pipeline, chunk: bytes) -> list[Event]:
        out: list[Event] = []
        for i in range(0, len(chunk), SLICE):
            if i:
                if out:
                    self.emit(out)
                    out = []
                await asyncio.sleep(0)
            out = pipe.feed(chunk[i : i + SLICE], time.perf_counter() - self.t0)
            if self.turn.done:
                break
        return out

    def _whole_answer(self, body: bytes) -> None:
        """A server that ignored ``stream: true`` and answered with one JSON object
        (many gateways do): its reply is the turn's reply, marked as not streamed."""
        spec, turn = self.spec, self.turn
        answer = json.loads(body)
        pipe = self.pipeline = Pipeline(
            spec.provider,
            turn,
            prompt_chars=spec.prompt_chars(),
            scrubber=spec.scrubber,
            transform=self.hooks.events(turn),
        )
        turn.streamed = False
        now = time.perf_counter() - self.t0
        events = spec.provider.completion(answer, spec.scrubber)
        events = pipe.apply(events, now)
        events += pipe.close(now)
        self.emit(events)

    # -- settling the turn ------------------------------------------------------------
    def _end(self, status: Status) -> None:
        turn = self.turn
        if turn.status == "streaming":
            turn.status = status
        if turn.metrics.elapsed_s is None:
            now = time.perf_counter() - self.t0
            if self.pipeline is not None:
                self.pipeline.abort(now)
            else:
                turn.metrics.elapsed_s = now

    def _fail(self, exc: NbstreamError) -> None:
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
        self._end("error")

    # -- sending, with retries ------------------------------------------------------------
    async def _open(self) -> Response:
        spec, turn = self.spec, self.turn
        attempt = 0
        while True:
            attempt += 1
            turn.metrics.attempts = attempt
            error: NbstreamError
            after: float | None = None
            self.attempt_t0 = time.perf_counter()
            first = spec.timeouts.first_byte
            payload, headers = await self.hooks.before(attempt)
            try:
                async with asyncio.timeout(first):
                    response = await self.http.send(spec.url, payload, headers)
            except TimeoutError:
                raise timeout(spec, "first_byte") from None
            except TransportFailure as exc:
                error = send_failed(spec, exc, attempt, self.http.max_connections)
            else:
                status = response.status
                self.hooks.response(status, response.headers)
                if 200 <= status < 300:
                    await self._check_stream(response)
                    return response
                body = self._scrubbed_body(await response.read(ERROR_BODY_LIMIT))
                if spec.stream_options and spec.provider.rejects_stream_options(
                    status, body
                ):
                    spec.stream_options = False
                    _NO_STREAM_OPTIONS.add(spec.base_url)
                    log.info(
                        "%s rejects stream_options; sending without", spec.base_url
                    )
                    continue
                after = retry_after(response.headers, time.time())
                error = status_error(
                    spec,
                    status,
                    response.reason,
                    response.headers,
                    body,
                    attempt,
                    after,
                )
                if not should_retry(
                    status, response.headers.get("x-should-retry")
                ) or rejection_hint(spec.api, spec.params, status, body):
                    raise error  # (a refused response_format fails again as it is)
            if attempt > spec.max_retries:
                raise error
            delay = retry_delay(attempt, after, spec.retry_delay)
            if delay > MAX_RETRY_WAIT:
                raise error
            log.info("retrying in %.2f s after: %s", delay, error.message)
            await asyncio.sleep(delay)

    def _scrubbed_body(self, body: bytes) -> str:
        return self.spec.scrub(body.decode("utf-8", "replace"))

    async def _check_stream(self, response: Response) -> None:
        """A stream goes on to ``_read``; a whole JSON answer is taken here (then
        ``self.pipeline`` is set); anything else is refused."""
        spec = self.spec
        ctype = response.headers.get("content-type", "")
        mime = ctype.partition(";")[0].strip().lower()
        if mime == "text/event-stream":
            return
        limit = spec.max_event_size or ERROR_BODY_LIMIT
        body = await response.read(limit if mime.endswith("json") else ERROR_BODY_LIMIT)
        if mime.endswith("json"):
            try:
                self._whole_answer(body)
                return
            except ValueError:
                pass  # not JSON after all: said below
        raise NotAStreamError(
            f"{spec.base_url} answered {response.status} with "
            f"{ctype or 'no content type'} instead of an event stream "
            f"(text/event-stream): {self._quote(body)}. Check that the base URL points "
            f"at an {spec.api}-style API (it usually ends in /v1) and that the server "
            "supports streaming."
        )

    def _quote(self, body: bytes) -> str:
        return repr(self._clip(body.decode("utf-8", "replace"), 300))
