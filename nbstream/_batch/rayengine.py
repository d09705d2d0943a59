"""``engine="ray"``: the requests are sent by Ray actors, each holding an nbstream
``Client`` (``rayworker.Worker``), while everything else stays in this process: the
dispatcher of the local engine (``local.Dispatcher``: rate limits, retries, Stop), the
job, its store and its progress view. Only ``Dispatcher._send`` differs: it hands
the attempt to the least busy actor and awaits the answer, so each result reaches the
store and the view as it finishes.

**Rate limits hold across workers** because one driver hands out every start: an
attempt goes to an actor only once the rate limiter (``nbstream._core.ratelimit``)
allows it here, and an actor sends at once what it is given. So ``rpm`` / ``tpm`` are
the whole batch's, whatever the number of workers or nodes (per-worker shares would
waste what an idle worker does not use, and overshoot when a worker restarts). The
actors report each answer's status and rate-limit headers with the turn; the driver's
limiter reads them as the local engine's does (a 429 pauses every start). The cost:
one Ray call per attempt (see bench/README.md), and a ``retry-after`` seen a little
later than in process, when the attempt's result arrives.

**Where it runs**: on the Ray instance this process is already connected to
(``ray.is_initialized()``, e.g. your own ``ray.init(...)``); else on the cluster at
``ray_address=`` (connected for the job, disconnected after); else on a new local
instance, shut down when the job ends. nbstream shuts down only what it started. Ray
calls that block (``init``, ``shutdown``, starting actors) run on one long-lived
thread of their own: a local instance's processes die with the thread that started
them (Linux's parent-death signal is per thread), so not a short-lived one.

**Workers**: ``ray_workers=`` actors (default: one per CPU of the cluster, at most one
per 8 requests of ``concurrency``), spread over the nodes, each sending up to its
share of ``concurrency`` at once on its own event loop (the least busy one gets the
next attempt). They need nbstream (the same
version) installed where they run. Each holds a client built from the job client's
settings: base URL, model, API, timeouts, headers, and the key, which travels only in
Ray's object store (``rayworker.Credentials``). A client's middleware, fallbacks and
reply cache stay here: such a client is refused (use ``engine="local"``).

**Stop**: each request in flight is stopped in its actor (``Worker.stop``), which
closes its connection and returns the partial reply: stored as ``cancelled``, as the
local engine does.

**After the job** the actors are ended with the instance nbstream started; on an
instance that stays up they wait ``_Pool.IDLE_S`` (2 minutes) for the next job with
the same settings, key and worker count, then end: an actor takes seconds to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from .._core.errors import ConfigurationError, NbstreamError
from .._core.transcript import ErrorInfo, Turn
from .engine import Run, Work
from .local import Dispatcher
from .rayworker import Credentials, Settings, Worker

if TYPE_CHECKING:
    from .._http.client import Client

__all__ = ["RayEngine"]

STOP_WAIT_S = 10.0  # for a stopped request's partial reply from its actor
START_TIMEOUT_S = 300.0  # for the actors to start (a busy cluster may queue them)
PER_WORKER = 8  # requests of ``concurrency`` a worker at least, choosing how many
MAX_CONCURRENCY = 1000  # calls an actor runs at once (its share, + stop and close)

_executor: ThreadPoolExecutor | None = None


def _ray_thread() -> ThreadPoolExecutor:
    """The one thread that calls Ray's blocking functions (kept for the process)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(1, thread_name_prefix="nbstream-ray")
    return _executor


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError(
            "engine='ray' needs Ray: pip install 'nbstream[ray]' (or pip install ray)."
        ) from None
    return ray


class RayEngine:
    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        if workers is not None and (
            not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
        ):
            raise ConfigurationError(
                f"batch(ray_workers={workers!r}): give a whole number above 0."
            )
        _import_ray()
        self.address = address
        self.workers = workers
        self._state: dict[str, Any] = {}

    def check(self, client: Client) -> None:
        """Refuse what cannot be carried to the workers, before anything is sent."""
        what = [
            name
            for name, there in (
                ("middleware", client.middleware),
                ("fallbacks", client.fallbacks),
                ("a reply cache", client.cache),
            )
            if there
        ]
        if what:
            raise ConfigurationError(
                f"engine='ray': this client has {' and '.join(what)}, which stay in "
                "this process and would not apply on the Ray workers. Use "
                "engine='local', or a client without them."
            )

    def status(self) -> dict[str, Any]:
        return dict(self._state)

    async def run(self, run: Run) -> None:
        if not run.work:
            return
        loop = asyncio.get_running_loop()
        thread = _ray_thread()
        started = await loop.run_in_executor(thread, _connect, self.address)
        try:
            ray = _import_ray()
            self._state = {
                "ray_address": ray.get_runtime_context().gcs_address,
                "started_by_nbstream": started,
            }
            if run.stop.is_set():
                return
            settings, credentials = Settings.of(run.client)
            count = self.workers or _workers(run.options.concurrency)
            pool = await loop.run_in_executor(
                thread, _Pool.get, settings, credentials, count
            )
            self._state["workers"] = pool.infos
            try:
                await _RayDispatcher(run, pool).main()
            finally:
                # kept a while for the next job on this instance; ended with it
                end = pool.close if started else pool.park
                await loop.run_in_executor(thread, end)
        finally:
            if started:
                await loop.run_in_executor(thread, _disconnect)


def _connect(address: str | None) -> bool:
    """Connect (or start a local instance); True if this call did."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        ray.init(address=address, **quiet)
    else:
        ray.init(include_dashboard=False, **quiet)
    return True


def _disconnect() -> None:
    _import_ray().shutdown()


def _workers(concurrency: int) -> int:
    ray = _import_ray()
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    return max(1, min(cpus, math.ceil(concurrency / PER_WORKER)))


class _Pool:
    """The actors of a job; ``load`` counts each one's requests in flight.

    Starting actors takes seconds (a new worker process each). So when a job ends on
    an instance nbstream did not start, its actors are parked for ``IDLE_S`` seconds,
    and the next job with the same settings, key and workers takes them; else they
    are ended. (They also end with this process: they are not detached.)
    """

    IDLE_S = 120.0
    _parked: ClassVar[dict[tuple[Any, ...], tuple[_Pool, threading.Timer]]] = {}
    _lock = threading.Lock()

    def __init__(
        self, actors: list[Any], infos: list[dict[str, Any]], ident: tuple[Any, ...]
    ) -> None:
        self.actors = actors
        self.infos = infos
        self.ident = ident
        self.load = [0] * len(actors)

    @classmethod
    def get(cls, settings: Settings, credentials: Credentials, count: int) -> _Pool:
        """A parked pool for the same job, if its actors still answer; else new."""
        ray = _import_ray()
        secret = hashlib.sha256(repr(credentials.__getstate__()).encode()).hexdigest()
        address = ray.get_runtime_context().gcs_address
        ident = (address, repr(settings), secret, count)
        with cls._lock:
            parked = cls._parked.pop(ident, None)
        if parked is not None:
            pool, timer = parked
            timer.cancel()
            try:
                ray.get([a.hello.remote() for a in pool.actors], timeout=30)
                return pool
            except Exception:
                pool.close()
        return cls.start(settings, credentials, count, ident)

    def park(self) -> None:
        timer = threading.Timer(self.IDLE_S, self._expire)
        timer.daemon = True
        with self._lock:
            old = self._parked.pop(self.ident, None)
            self._parked[self.ident] = (self, timer)
        if old is not None:
            old[1].cancel()
            old[0].close()
        timer.start()

    def _expire(self) -> None:
        with self._lock:
            mine = self._parked.get(self.ident, (None,))[0] is self
            if mine:
                del self._parked[self.ident]
        if mine:
            with contextlib.suppress(RuntimeError):  # the process is exiting
                _ray_thread().submit(self.close)

    @classmethod
    def start(
        cls,
        settings: Settings,
        credentials: Credentials,
        count: int,
        ident: tuple[Any, ...],
    ) -> _Pool:
        ray = _import_ray()
        import nbstream

        remote = ray.remote(Worker)
        sealed = ray.put(credentials)  # the key goes by reference, in the object store
        actors = [
            # Ray's default for actors: a CPU to be placed, none held while they
            # run, so parked ones keep nothing from other work
            # The driver keeps each to its share of ``concurrency``: the actor's own
            # cap (Ray's default for async actors) only has to be above any share.
            remote.options(
                max_concurrency=MAX_CONCURRENCY, scheduling_strategy="SPREAD"
            ).remote(settings, sealed)
            for _ in range(count)
        ]
        del sealed
        try:
            infos: list[dict[str, Any]] = ray.get(
                [a.hello.remote() for a in actors], timeout=START_TIMEOUT_S
            )
        except Exception as exc:
            for a in actors:
                with contextlib.suppress(Exception):
                    ray.kill(a)
            raise ConfigurationError(
                f"engine='ray': the {count} Ray workers did not start "
                f"({type(exc).__name__}). Is nbstream installed where Ray runs its "
                "workers, and does the cluster have a free CPU to place them? "
                "ray_workers= sets how many."
            ) from None
        wrong = {i["version"] for i in infos} - {nbstream.__version__}
        if wrong:
            for a in actors:
                ray.kill(a)
            raise ConfigurationError(
                f"engine='ray': the Ray workers have nbstream {', '.join(wrong)}, "
                f"this process {nbstream.__version__}. Install the same version on "
                "the cluster (or pass runtime_env to your ray.init)."
            )
        return cls(actors, infos, ident)

    def pick(self) -> int:
        load = self.load
        return load.index(min(load))

    def close(self) -> None:
        ray = _import_ray()
        if not ray.is_initialized():
            return  # gone with the instance
        with contextlib.suppress(Exception):
            ray.get([a.close.remote() for a in self.actors], timeout=10)
        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a)


class _RayDispatcher(Dispatcher):
    def __init__(self, run: Run, pool: _Pool) -> None:
        super().__init__(run)
        self.pool = pool

    async def _send(self, work: Work) -> tuple[Turn, NbstreamError | None, bool]:
        pool = self.pool
        i = pool.pick()
        actor = pool.actors[i]
        pool.load[i] += 1
        stopped = False
        try:
            ref = actor.send.remote(
                work.key, work.messages, work.system, work.model, work.params
            )
            answer = asyncio.wrap_future(ref.future())
            try:
                out = await asyncio.shield(answer)
            except asyncio.CancelledError:
                stopped = True  # Stop: the actor closes it and sends what came
                actor.stop.remote(work.key)
                try:
                    out = await asyncio.wait_for(answer, STOP_WAIT_S)
                except Exception:
                    out = None
        except Exception as exc:  # the actor died, Ray failed: asked again
            return self._lost(work, exc), None, False
        finally:
            pool.load[i] -= 1
        if out is None or out.get("turn") is None:
            if stopped:
                turn = self._blank(work)
                turn.status = "cancelled"
                return turn, None, True
            return self._lost(work, out and out.get("error")), None, False
        turn = Turn.from_dict(out["turn"])
        self._observe(out["observed"])
        error = out.get("error")
        raised = NbstreamError(error, turn=turn) if error else None
        return turn, raised, stopped or bool(out.get("stopped"))

    def _observe(self, seen: list[tuple[int, dict[str, str], float]]) -> None:
        now, wall_now = self.loop.time(), time.time()
        for status, headers, wall in seen:
            at = now - max(0.0, wall_now - wall)
            self.limiter.observe(at, status, headers, wall)

    def _blank(self, work: Work) -> Turn:
        _plan, turn = self.client._request(
            work.messages, work.system, work.model, work.params
        )
        return turn

    def _lost(self, work: Work, why: object) -> Turn:
        """A worker that failed to answer: a connection-like failure, asked again."""
        turn = self._blank(work)
        turn.status = "error"
        what = why if isinstance(why, str) else type(why).__name__
        turn.error = ErrorInfo(
            "APIConnectionError", f"the Ray worker did not answer ({what})"
        )
        return turn
