"""``engine="local"``: the requests run as asyncio tasks on ``Client``'s engine, in this
process, at most ``concurrency`` at a time, started by one dispatcher that asks the
rate-limit policy (``nbstream._core.ratelimit``) before each start.

How the retries of the two layers combine: the batch turns the client's own retries off
for its requests (``max_retries=0`` on each request), and asks again itself. So every
attempt goes through the rate limiter, and a 429 slows the whole batch (a pause for
everyone, and a smaller concurrency that grows back), not just the one request. The
limiter sees every answer's status and headers through a middleware the batch adds to
each of its requests (after the client's own). A client with ``fallbacks=`` runs them
inside one batch attempt; their requests keep their own clients' retries.
Transient failures (429, 5xx, a dropped connection, a timeout, a reply cut short: a
batch wants whole replies, so it is asked again from the start) are asked again up to
``max_retries`` times, waiting what the server asked (``retry-after``) or an
exponential backoff from the client's ``retry_delay``. Permanent failures are recorded
once (``policy.py``).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque

from .._core.errors import NbstreamError
from .._core.ratelimit import RateLimiter
from .._core.transcript import Turn
from .._http.retry import retry_delay
from .._http.streams import AsyncStream
from ..middleware import Incoming, Middleware, Outgoing
from .engine import Outcome, OutcomeStatus, Run, Work
from .policy import decide

__all__ = ["Dispatcher", "LocalEngine"]

# Send each request through ``AsyncStream`` (the handle ``achat`` uses), not
# ``Plan.run`` directly: bench/batch.py measured no difference beyond noise (2.40
# against 2.49 ms, 2.54 against 2.51 ms a request), and whatever the client grows
# around its streams then applies to batch requests too.
DIRECT = False


def _drop(_events: object) -> None:
    """Nobody reads a batch request's events: its turn is the result."""


class _Observer(Middleware):
    """Shows the rate limiter every answer's status and headers (retries included)."""

    def __init__(self, limiter: RateLimiter, loop: asyncio.AbstractEventLoop) -> None:
        self.limiter, self.loop = limiter, loop

    def on_response(self, request: Outgoing, response: Incoming) -> None:
        self.limiter.observe(
            self.loop.time(), response.status, response.headers, time.time()
        )


class LocalEngine:
    name = "local"

    async def run(self, run: Run) -> None:
        await Dispatcher(run).main()


class Dispatcher:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.client = run.client
        self.loop = asyncio.get_running_loop()
        o = run.options
        self.concurrency = o.concurrency
        self.base_delay = max(0.001, self.client.retry_delay)
        self.limiter = RateLimiter(rpm=o.rpm, tpm=o.tpm, backoff=self.base_delay)
        self.queue: deque[Work] = deque(run.work)
        self.retries: list[tuple[float, int, Work, int]] = []  # (not before, seq, …)
        self.seq = 0
        self.inflight: set[asyncio.Task[None]] = set()
        self.started_at: dict[str, float] = {}  # key → Unix time of the first attempt
        self.wake = asyncio.Event()
        self.bug: BaseException | None = None  # an exception out of _attempt
        self.observer = _Observer(self.limiter, self.loop)
        run.stop.on_set(self.wake.set)

    async def main(self) -> None:
        try:
            await self._dispatch()
        finally:
            # Stopped (or failed): stop what is in flight; each task records its turn.
            for task in self.inflight:
                task.cancel()
            while self.inflight:
                await asyncio.wait(list(self.inflight))
        if self.bug is not None:
            raise self.bug  # the job fails, saying why

    # -- the dispatcher ---------------------------------------------------------------
    async def _dispatch(self) -> None:
        stop = self.run.stop
        limiter = self.limiter
        while not stop.is_set():
            now = self.loop.time()
            if self.retries and self.retries[0][0] <= now:
                work, attempts, retry = self.retries[0][2], self.retries[0][3], True
            elif self.queue:
                work, attempts, retry = self.queue[0], 0, False
            else:
                if not self.inflight and not self.retries:
                    return  # everything is settled
                await self._sleep(self.retries[0][0] - now if self.retries else None)
                continue
            if len(self.inflight) >= limiter.concurrency(now, self.concurrency):
                await self._sleep(None)  # until a request ends
                continue
            cost = limiter.reserve_for(work.input_tokens, work.max_tokens)
            wait = limiter.delay(now, cost)
            if wait > 0:
                await self._sleep(wait)
                continue
            if retry:
                heapq.heappop(self.retries)
            else:
                self.queue.popleft()
            limiter.start(now, cost)
            task = self.loop.create_task(self._attempt(work, attempts + 1, cost, now))
            self.inflight.add(task)
            task.add_done_callback(self._ended)

    async def _sleep(self, timeout: float | None) -> None:
        """Until something changes (a request ended, Stop) or ``timeout`` passes."""
        self.wake.clear()
        handle = (
            self.loop.call_later(timeout, self.wake.set)
            if timeout is not None
            else None
        )
        try:
            await self.wake.wait()
        finally:
            if handle is not None:
                handle.cancel()

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.inflight.discard(task)
        self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            # A bug of ours in _attempt: stop the batch rather than lose requests
            # silently; the job reports it.
            self.bug = self.bug or task.exception()
            self.run.stop.set()

    # -- one attempt ------------------------------------------------------------------

    async def _attempt(
        self, work: Work, attempt: int, cost: float, sent: float
    ) -> None:
        report = self.run.report
        if attempt == 1:
            self.started_at[work.key] = time.time()
            report.started(work)
        turn, exc, stopped = await self._send(work)
        if stopped:
            # Stopped: the connection is closed; the partial reply is kept.
            if turn.status == "streaming":
                turn.status = "cancelled"
            self._finish(work, turn, attempt, status="cancelled", error="stopped")
            return
        self._settle(turn, cost)
        decision = decide(turn)
        if decision.verdict == "done":
            self.limiter.succeeded()
            self._finish(work, turn, attempt)
            return
        if decision.verdict == "retry" and attempt <= self.run.options.max_retries:
            now = self.loop.time()
            delay = retry_delay(attempt, decision.retry_after, self.base_delay)
            if decision.rate_limited:
                self.limiter.rate_limited(now, decision.retry_after, sent_at=sent)
            self.seq += 1
            heapq.heappush(self.retries, (now + delay, self.seq, work, attempt))
            report.retrying(work, attempt, _reason(turn))
            self.wake.set()
            return
        error = _reason(turn)
        if decision.verdict == "retry":
            error = f"{error} (asked {attempt} times)"
        self._finish(
            work,
            turn,
            attempt,
            status="failed",
            final=decision.final,
            error=error,
            exception=exc,
        )

    async def _send(self, work: Work) -> tuple[Turn, NbstreamError | None, bool]:
        """Send one attempt here, on this loop: ``(turn, the error raised, stopped)``.
        Another engine sends elsewhere by overriding this (``ray.py``); the rest of
        the dispatcher (rate limits, retries, reporting) stays the same."""
        client = self.client
        plan, turn = client._request(
            work.messages, work.system, work.model, work.params
        )
        spec = plan.spec
        spec.max_retries = 0  # the batch retries, through the rate limiter
        spec.middleware = (*spec.middleware, self.observer)
        try:
            if DIRECT:
                await plan.run(turn, _drop, self.loop)
            else:
                stream = AsyncStream(client, plan, turn)
                try:
                    await stream.wait()
                finally:
                    await stream.aclose()
        except asyncio.CancelledError:
            return turn, None, True
        except NbstreamError as e:
            return turn, e, False
        return turn, None, False

    def _settle(self, turn: Turn, cost: float) -> None:
        u = turn.usage
        if u is None:
            self.limiter.settle(cost, None, None)
            return
        used = None
        if u.input_tokens is not None and u.output_tokens is not None:
            used = float(u.input_tokens + u.output_tokens)
        out = float(u.output_tokens) if u.output_tokens is not None else None
        self.limiter.settle(cost, used, out)

    def _finish(
        self,
        work: Work,
        turn: Turn,
        attempts: int,
        *,
        status: OutcomeStatus | None = None,
        final: bool = False,
        error: str | None = None,
        exception: NbstreamError | None = None,
    ) -> None:
        outcome = Outcome.of(
            turn,
            attempts=attempts,
            started_at=self.started_at.pop(work.key, None),
            status=status,
            final=final,
            error=error,
            exception=exception,
        )
        self.run.report.finished(work, outcome)


def _reason(turn: Turn) -> str:
    err = turn.error
    if err is not None:
        return err.message
    if turn.status == "incomplete":
        return (
            "the reply was cut short (the stream ended with no finish reason and no "
            "end marker)"
        )
    return f"the reply is {turn.status}"
