"""``Job``: a batch that is running (or ran): its counts, its progress views, Stop, and
its results, read back from the store.

Where it runs: on nbstream's loop thread (``LoopThread``), whatever the caller. So
``job.wait()`` works in a script, in terminal IPython and in a notebook cell alike, and
``await job`` (or ``await job.wait_async()``) works on any event loop: in a notebook,
the cell then stays busy while the batch runs and still handles the Stop button.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections import deque
from collections.abc import Generator
from concurrent import futures
from typing import TYPE_CHECKING, Any

from .._core.errors import NbstreamError
from .._core.transcript import Transcript
from .._http.streams import LoopThread, in_loop
from .._store.store import Result, Store
from .._store.writer import Writer
from . import results
from .display import JobStatus, kernel_mode, want_bar
from .engine import Engine, Options, Outcome, Run, Stop, Work
from .inputs import Row
from .progress import Snapshot, bar, line, summary

if TYPE_CHECKING:
    import pandas

    from .._http.client import Client
    from .view import BatchView

__all__ = ["Job"]

PENDING, RUNNING, DONE, FAILED, CANCELLED = range(5)
_NAMES = {
    PENDING: "pending",
    RUNNING: "running",
    DONE: "done",
    FAILED: "failed",
    CANCELLED: "cancelled",
}
REFRESH_S = 0.25  # progress views and the terminal bar: at most 4 updates a second


class Job:
    """A batch run. ``nbstream.batch()`` returns it already running.

    >>> job = nbstream.batch(["Hi", "Hello"], client=client)  # doctest: +SKIP
    >>> job.wait().counts  # doctest: +SKIP
    {'done': 2, 'failed': 0, 'cancelled': 0, 'running': 0, 'pending': 0, 'total': 2}
    >>> job.to_pandas()  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        rows: list[Row],
        work: list[Work],
        store: Store,
        engine: Engine,
        options: Options,
        client: Client,
        on_error: str,
        keys: list[str | None],
        settled: dict[str, tuple[str, bool]],
        frame: Any = None,
        progress: bool | None = None,
    ) -> None:
        # No row is kept: the store has each row's input, and the job one byte of
        # state per row, so memory stays flat in the number of requests.
        self._work = work
        self._store = store
        self._engine = engine
        self._options = options
        self._client = client
        self._on_error = on_error
        self._frame = frame  # the input DataFrame, for to_pandas()
        self.total = len(rows)
        self._state = bytearray(self.total)
        self._counts = dict.fromkeys(("done", "failed", "cancelled", "running"), 0)
        invalid = 0
        for row in rows:
            if row.error is not None:
                self._set(row.position, FAILED)
                invalid += 1
        # Rows an earlier run answered (``keys[p]`` is the key of row ``p``): the
        # plan left them out of ``work``.
        planned = {p for wk in work for p in wk.positions}
        for row in rows:
            key = keys[row.position]
            if key is not None and row.position not in planned and key in settled:
                done = settled[key][0] == "done"
                self._set(row.position, DONE if done else FAILED)
        self.reused = self._counts["done"] + self._counts["failed"] - invalid
        self.retries = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd: float | None = None  # this run's priced rows (turn.cost)
        self.cost_estimated = False
        self.cost_unknown = 0
        self._errors: deque[str] = deque(maxlen=5)
        self._status = "running"
        self.error: BaseException | None = None  # what stopped or failed the job
        self._stop = Stop()
        self._cancel_requested = False
        self._views: list[BatchView] = []
        self._bar = want_bar(progress)
        self._t0 = time.perf_counter()
        self._elapsed: float | None = None
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._lock = threading.Lock()
        self._writer: Writer | None = None
        self._future: futures.Future[None] = LoopThread.get().submit(self._main())

    # -- counts -------------------------------------------------------------------------
    def _set(self, position: int, state: int) -> None:
        old = self._state[position]
        if old == state:
            return
        if old != PENDING:
            self._counts[_NAMES[old]] -= 1
        if state != PENDING:
            self._counts[_NAMES[state]] += 1
        self._state[position] = state

    @property
    def counts(self) -> dict[str, int]:
        """``done``, ``failed`` (invalid rows included), ``cancelled`` (stopped),
        ``running``, ``pending`` (not finished yet, running included), ``total``."""
        c = dict(self._counts)
        settled = c["done"] + c["failed"] + c["cancelled"]
        return {**c, "pending": self.total - settled, "total": self.total}

    @property
    def status(self) -> JobStatus:
        """``running``, then ``finished``, ``cancelled``, ``stopped`` (``on_error=
        "stop"``) or ``failed``: a string. Called, ``job.status()`` says more: the
        counts, and what the engine knows (a provider batch's id and status, the
        Ray workers), as a dict."""
        return JobStatus(self._status, self)

    def _details(self) -> dict[str, Any]:
        more = getattr(self._engine, "status", None)
        return {
            "status": self._status,
            "engine": self._engine.name,
            "counts": self.counts,
            **(more() if more is not None else {}),
        }

    def _note(self) -> str | None:
        note = getattr(self._engine, "note", None)
        return note() if note is not None else None

    @property
    def store(self) -> str:
        """The path of the store file."""
        return self._store.path

    @property
    def running(self) -> bool:
        """True until the job ends (finished, stopped, cancelled or failed)."""
        return not self._future.done()

    # -- the engine's reporter (called on the loop thread) -----------------------------
    def started(self, work: Work) -> None:
        for p in work.positions:
            self._set(p, RUNNING)

    def retrying(self, work: Work, attempt: int, reason: str) -> None:
        self.retries += 1
        self._errors.append(f"row {work.positions[0]}: retrying ({reason})")

    def finished(self, work: Work, outcome: Outcome) -> None:
        state = {"done": DONE, "failed": FAILED, "cancelled": CANCELLED}[outcome.status]
        for p in work.positions:
            self._set(p, state)
        turn = outcome.turn
        if turn is not None and turn.usage is not None:
            self.input_tokens += turn.usage.input_tokens or 0
            self.output_tokens += turn.usage.output_tokens or 0
            cost = turn.cost_details
            if cost is None:
                self.cost_unknown += 1
            else:
                self.cost_usd = (self.cost_usd or 0.0) + cost.total_usd
                self.cost_estimated = self.cost_estimated or cost.estimated
        if outcome.status == "failed":
            self._errors.append(f"row {work.positions[0]}: {outcome.error}")
            if self._on_error == "stop" and self.error is None:
                self.error = outcome.exception or NbstreamError(
                    f"The batch stopped at row {work.positions[0]}: {outcome.error}",
                    turn=turn,
                )
                self._stop.set()
        if self._writer is not None:
            self._writer.put(
                Result(
                    work.key,
                    work.request,
                    outcome.status,
                    outcome.final or outcome.status == "done",
                    turn,
                    outcome.attempts,
                    outcome.error,
                    outcome.status_code,
                    outcome.started_at,
                    outcome.finished_at,
                )
            )

    # -- running --------------------------------------------------------------------------
    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop.bind(loop)
        self._writer = Writer(self._store.path, self._store_failed)
        ticker = loop.create_task(self._tick())
        failure: BaseException | None = None
        try:
            await self._engine.run(
                Run(
                    self._client,
                    self._work,
                    self._options,
                    self,
                    self._store,
                    self._stop,
                )
            )
        except Exception as exc:  # a bug, or the store failed: the job says so
            failure = exc
        finally:
            ticker.cancel()
            self._work = []  # the requests: not needed any more (memory stays flat)
            await asyncio.wrap_future(self._writer.close())
            if self._writer.error is not None and failure is None:
                failure = self._writer.error
            self._elapsed = time.perf_counter() - self._t0
            if failure is not None:
                self._status, self.error = "failed", failure
            elif self.error is not None:
                self._status = "stopped"
            elif self._cancel_requested:
                self._status = "cancelled"
            else:
                self._status = "finished"
            for row in range(self.total):  # nothing is running any more
                if self._state[row] == RUNNING:
                    self._set(row, PENDING)
            self._refresh(final=True)

    def _store_failed(self, exc: BaseException) -> None:
        self._stop.set()  # results could not be kept: stop sending

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            self._refresh()

    def _refresh(self, final: bool = False) -> None:
        if not self._views and not self._bar:
            return
        s = self.snapshot()
        for v in list(self._views):
            try:
                v.update(s)
            except Exception:  # a closed comm, a kernel going away: drop the view
                self._views.remove(v)
        if self._bar:
            text = f"\r{bar(s)} {line(s)}"
            sys.stderr.write(text.ljust(getattr(self, "_bar_width", 0)))
            self._bar_width = len(text)
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()

    # -- waiting and stopping -----------------------------------------------------------
    def wait(self, timeout: float | None = None) -> Job:
        """Block until the batch ends; returns the job. Raises the error that stopped
        it (``on_error="stop"``) or failed it. Ctrl-C (the kernel's interrupt) stops
        it, keeping what finished."""
        if in_loop(LoopThread.get().loop):
            raise RuntimeError(
                "job.wait() was called on nbstream's own loop thread, where the batch "
                "runs: use `await job.wait_async()` there."
            )
        fut = self._future
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not fut.done():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"the batch is still running after {timeout} s")
                futures.wait([fut], 0.25 if left is None else min(0.25, left))
        except KeyboardInterrupt:
            self.cancel()
            futures.wait([fut], 30)
            raise
        fut.result()
        self._raise()
        return self

    async def wait_async(self) -> Job:
        """``await job.wait_async()`` (or ``await job``): the async twin of ``wait``."""
        fut = asyncio.wrap_future(self._future)
        try:
            while not fut.done():
                # short waits: a notebook's interrupt lands within 0.1 s (ipykernel
                # schedules it without waking the loop)
                await asyncio.wait([fut], timeout=0.1)
        except asyncio.CancelledError:
            self.cancel()
            raise
        fut.result()
        self._raise()
        return self

    def __await__(self) -> Generator[Any, None, Job]:
        return self.wait_async().__await__()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def cancel(self) -> None:
        """Stop, from any thread: nothing more is sent; requests in flight are closed
        and stored as ``cancelled`` with their partial replies. Returns at once;
        ``wait()`` returns when the store is consistent. A rerun sends what is left."""
        self._cancel_requested = True
        self._stop.set()

    # -- progress -------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        c = self.counts
        now = time.perf_counter()
        elapsed = self._elapsed if self._elapsed is not None else now - self._t0
        settled = c["done"] + c["failed"] + c["cancelled"] - self.reused
        with self._lock:
            samples = self._samples
            if not samples or now - samples[-1][0] >= 0.2:
                samples.append((now, settled))
            while len(samples) > 2 and now - samples[0][0] > 5.0:
                samples.popleft()
            t0, n0 = samples[0]
        rate = (settled - n0) / (now - t0) if now - t0 >= 0.5 else None
        if rate is None and elapsed > 0 and settled:
            rate = settled / elapsed
        return Snapshot(
            total=self.total,
            done=c["done"],
            failed=c["failed"],
            cancelled=c["cancelled"],
            running=c["running"],
            pending=c["pending"],
            reused=self.reused,
            retries=self.retries,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            cost_estimated=self.cost_estimated,
            cost_unknown=self.cost_unknown,
            elapsed_s=elapsed,
            rate=rate,
            status=self._status,
            note=self._note(),
            errors=tuple(self._errors),
        )

    def view(self) -> BatchView:
        """A live progress view (what displaying the job shows in a notebook)."""
        from .view import BatchView

        v = BatchView(self)
        self._views.append(v)
        if not self.running:
            v.update(self.snapshot())
        return v

    def __repr__(self) -> str:
        return f"<Job {summary(self.snapshot())} · store {self.store!r}>"

    def _repr_mimebundle_(self, **kw: Any) -> Any:
        mode = kernel_mode()
        if mode == "interactive":
            return self.view()._repr_mimebundle_(**kw)
        if mode == "batch":  # nbclient, nbval: the same text run to run, at the end
            with contextlib.suppress(Exception):  # the summary says how it ended
                self.wait()
            return {"text/plain": summary(self.snapshot())}
        return {"text/plain": repr(self)}

    # -- results ----------------------------------------------------------------------------
    def _flush(self) -> None:
        w = self._writer
        if w is not None and self.running:
            w.flush().result(30)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per input row: the input's columns, then ``text``,
        ``finish_reason``, ``status`` (done, failed, cancelled, invalid, pending),
        ``input_tokens``, ``output_tokens``, ``cost_usd`` (``turn.cost``),
        ``latency_s``, ``ttft_s``, ``attempts`` and ``error``; with ``response_format``,
        ``parsed`` and ``parse_error``. A result column whose name an input column has
        is suffixed ``_reply``. A DataFrame input keeps its index."""
        self._flush()
        return results.to_pandas(self._store, self._frame)

    @property
    def transcript(self) -> Transcript:
        """Every row's turn (partial replies of failed and stopped ones included), in
        input order; rows not sent yet are left out."""
        self._flush()
        return results.transcript(self._store)
