"""What an engine is: the part of a batch that sends the requests. The job (``job.py``)
owns everything else: the inputs, the store, the counts, the progress view, Stop and
``on_error``. So an engine only has to do this::

    class MyEngine:
        name = "my-engine"

        async def run(self, run: Run) -> None:
            for work in run.work:               # the requests still missing, deduplicated
                if run.stop.is_set():
                    return                      # Stop, or on_error="stop": return soon
                run.report.started(work)
                turn = ...                      # send work.messages / work.system /
                                                # work.params with run.client's settings
                run.report.finished(work, Outcome.of(turn, attempts=1, started_at=...))

Contract:

- ``run()`` is a coroutine on the job's event loop (nbstream's loop thread). Blocking
  work (a Ray ``get``, polling a provider) goes to a thread: ``await
  asyncio.to_thread(...)``.
- Report each ``Work`` once with ``finished`` (``done``, ``failed`` or ``cancelled``,
  with the turn when there is one: the store keeps it, partial replies included).
  ``started`` and ``retrying`` feed the progress view. Works not reported when ``run``
  returns stay pending: a rerun sends them.
- After ``run.stop`` is set, start nothing; stop what is in flight and report it
  ``cancelled`` (its partial turn kept); then return.
- ``run.store.get_meta`` / ``set_meta`` keep an engine's own state with the batch (a
  provider batch id, say), so a rerun after a kernel restart can pick it up.
- ``Work.key`` is the request key: use it as a provider batch's ``custom_id``. The key
  and ``Work.request`` never hold an API key; ``run.client`` does: do not log it, and
  pass it to workers only as an argument (never in a task name or repr).

An engine may also have ``check(client)`` (called by ``nbstream.batch`` before
anything is sent: raise ``ConfigurationError`` for a client it cannot use),
``status() -> dict`` (what ``job.status()`` adds: a provider's batch status, the Ray
workers) and ``note() -> str | None`` (a few words for the progress view, e.g. the
provider's own counts while its batch runs).

Engines: ``local`` (``local.py``: asyncio on ``Client``, rate limits, retries),
``ray`` (``rayengine.py``: the same dispatcher, each attempt sent by a Ray actor),
``openai-batch`` and ``anthropic-batch`` (``provider.py`` with ``openai_batch.py`` /
``anthropic_batch.py``: the providers' batch APIs, submitted, polled and collected).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .._core.errors import ConfigurationError, NbstreamError
from .._core.transcript import Turn

if TYPE_CHECKING:
    from .._http.client import Client
    from .._store.store import Store

__all__ = [
    "ENGINES",
    "Engine",
    "Options",
    "Outcome",
    "Reporter",
    "Run",
    "Stop",
    "Work",
    "engine_for",
]

ENGINES = ("local", "ray", "openai-batch", "anthropic-batch")
OutcomeStatus = Literal["done", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Work:
    """One request to send. Rows asking the same thing share one ``Work``."""

    key: str  # the request key (keys.request_key): never an API key
    request: str  # the request as canonical JSON (what the store keeps)
    messages: list[dict[str, Any]]
    system: str | None
    params: dict[str, Any]
    model: str | None  # None: the client's model
    positions: tuple[int, ...]  # the input rows it answers
    input_tokens: int  # estimated, for tpm
    max_tokens: int | None  # from the parameters, if set


@dataclass(frozen=True, slots=True)
class Options:
    concurrency: int
    rpm: float | None
    tpm: float | None
    max_retries: int  # transient failures asked again this many times


@dataclass(slots=True)
class Outcome:
    """How one request ended."""

    status: OutcomeStatus
    turn: Turn | None
    attempts: int
    final: bool = False  # failed, and a rerun does not send it again
    error: str | None = None
    status_code: int | None = None
    started_at: float | None = None  # Unix seconds
    finished_at: float = field(default_factory=time.time)
    exception: NbstreamError | None = None  # not stored; raised by on_error="stop"

    @classmethod
    def of(
        cls,
        turn: Turn,
        *,
        attempts: int,
        started_at: float | None,
        status: OutcomeStatus | None = None,
        final: bool = False,
        exception: NbstreamError | None = None,
        error: str | None = None,
    ) -> Outcome:
        err = turn.error
        if status is None:
            status = "done" if turn.status == "complete" else "failed"
        if error is None and status == "failed":
            error = err.message if err is not None else f"the reply is {turn.status}"
        return cls(
            status,
            turn,
            attempts,
            final,
            error,
            err.status_code if err is not None else None,
            started_at,
            exception=exception,
        )


class Reporter(Protocol):
    def started(self, work: Work) -> None: ...

    def retrying(self, work: Work, attempt: int, reason: str) -> None: ...

    def finished(self, work: Work, outcome: Outcome) -> None: ...


class Stop:
    """Set once (Stop, ``cancel()``, ``on_error="stop"``), from any thread."""

    def __init__(self) -> None:
        self._flag = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_set(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the engine's loop when set (at once if set already)."""
        self._callbacks.append(callback)
        if self.is_set():
            callback()

    def is_set(self) -> bool:
        return self._flag.is_set()

    def set(self) -> None:
        if self._flag.is_set():
            return
        self._flag.set()
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for cb in list(self._callbacks):
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                cb()
            else:
                loop.call_soon_threadsafe(cb)


@dataclass(slots=True)
class Run:
    """What an engine gets."""

    client: Client
    work: Sequence[Work]
    options: Options
    report: Reporter
    store: Store
    stop: Stop


class Engine(Protocol):
    name: str

    async def run(self, run: Run) -> None: ...


def engine_for(
    name: str,
    *,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    poll_interval: float | None = None,
) -> Engine:
    """The engine called ``name``, with the options that belong to it (an option
    given to another engine is refused, saying whose it is)."""
    if name not in ENGINES:
        raise ConfigurationError(
            f"engine={name!r} is not an engine. Use one of: "
            + ", ".join(repr(e) for e in ENGINES)
            + "."
        )
    for option, value, owner in (
        ("ray_address", ray_address, ("ray",)),
        ("ray_workers", ray_workers, ("ray",)),
        ("poll_interval", poll_interval, ("openai-batch", "anthropic-batch")),
    ):
        if value is not None and name not in owner:
            raise ConfigurationError(
                f"batch({option}=...) is for engine="
                + " or ".join(repr(o) for o in owner)
                + f", not engine={name!r}."
            )
    if name == "ray":
        from .rayengine import RayEngine

        return RayEngine(ray_address, ray_workers)
    if name in ("openai-batch", "anthropic-batch"):
        from .anthropic_batch import AnthropicBatch
        from .openai_batch import OpenAIBatch
        from .provider import ProviderBatchEngine

        api = OpenAIBatch() if name == "openai-batch" else AnthropicBatch()
        return ProviderBatchEngine(api, poll_interval)
    from .local import LocalEngine

    return LocalEngine()
