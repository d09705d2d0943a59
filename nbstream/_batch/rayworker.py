"""The Ray side of ``engine="ray"``: one ``Worker`` per Ray actor, holding an nbstream
``Client`` built from the driver's settings. It sends what the driver hands it, one
attempt per call, and returns the turn as a dict; it decides nothing (rate limits,
retries and the store stay with the driver: ``rayengine.py``).

This module imports no Ray: ``rayengine`` wraps ``Worker`` in ``ray.remote``. A worker
process imports it (and so nbstream) to build the actor: nbstream must be installed
where the workers run.

The key reaches a worker only inside ``Credentials``, put in Ray's object store by the
driver and handed to the actor's constructor as that object's reference: never in an
actor's or a task's name, an environment variable or a repr, and the worker logs
nothing. Whatever a worker returns was scrubbed of the key first.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from .._core.errors import NbstreamError
from .._core.transcript import Turn
from .._http.client import Client
from .._http.settings import Timeouts
from .._http.streams import AsyncStream
from ..middleware import Incoming, Middleware, Outgoing

__all__ = ["Credentials", "Settings", "Worker"]

# Headers the driver's rate limiter reads (ratelimit.parse_limits); no other header
# goes back, so a header that echoes the key never leaves the worker.
_LIMIT_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-ratelimit-",
    "anthropic-ratelimit-",
)


class Credentials:
    """The key and the headers that may carry secrets. Pickles (Ray must move it);
    its repr shows nothing."""

    __slots__ = ("api_key", "headers")

    def __init__(self, api_key: str | None, headers: dict[str, str]) -> None:
        self.api_key = api_key
        self.headers = headers

    def __repr__(self) -> str:
        return "Credentials(***)"

    __str__ = __repr__

    def __getstate__(self) -> tuple[str | None, dict[str, str]]:
        return self.api_key, self.headers

    def __setstate__(self, state: tuple[str | None, dict[str, str]]) -> None:
        self.api_key, self.headers = state


@dataclass(frozen=True)
class Settings:
    """A client's settings but its secrets (those are in ``Credentials``)."""

    base_url: str
    model: str
    api: str
    timeouts: Timeouts
    retry_delay: float
    max_event_size: int | None
    max_connections: int | None
    prefill_params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, client: Client) -> tuple[Settings, Credentials]:
        key = client.api_key.get() if client.api_key is not None else None
        settings = cls(
            client.base_url,
            client.model,
            client.api,
            client.timeouts,
            client.retry_delay,
            client.max_event_size,
            client.max_connections,
            dict(client.prefill_params),
        )
        return settings, Credentials(key, dict(client._extra_headers))


class _Observer(Middleware):
    """Notes each answer's status and rate-limit headers (retries included)."""

    def __init__(self, client: Client) -> None:
        self.seen: list[tuple[int, dict[str, str], float]] = []
        self.scrub = client._scrubber.scrub

    def on_response(self, request: Outgoing, response: Incoming) -> None:
        kept = {
            k: self.scrub(v)
            for k, v in response.headers.items()
            if k.startswith(_LIMIT_HEADERS)
        }
        self.seen.append((response.status, kept, time.time()))


class Worker:
    """Sends batch requests with one ``Client`` (one connection pool) per actor."""

    def __init__(self, settings: Settings, credentials: Credentials) -> None:
        self.client = Client(
            base_url=settings.base_url,
            api_key=credentials.api_key,
            model=settings.model,
            api=settings.api,
            timeout=settings.timeouts,
            max_retries=0,  # the driver asks again, through its rate limiter
            retry_delay=settings.retry_delay,
            headers=credentials.headers,
            max_event_size=settings.max_event_size,
            max_connections=settings.max_connections,
            prefill_params=settings.prefill_params,
            cache=False,  # the driver's store already skips what is answered
        )
        self.inflight: dict[str, asyncio.Task[dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"Worker(pid={os.getpid()})"

    async def hello(self) -> dict[str, Any]:
        """Who answers: the driver checks the version and notes the process."""
        import nbstream

        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "version": nbstream.__version__,
            "file": nbstream.__file__,
        }

    async def send(
        self,
        key: str,
        messages: list[dict[str, Any]],
        system: str | None,
        model: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        """One attempt: ``{"turn": Turn.to_dict(), "observed": [(status, headers,
        unix time)], "error": message or None, "stopped": bool, "pid": …}``.
        ``stop(key)`` ends it early; the partial reply comes back all the same."""
        task = asyncio.get_running_loop().create_task(
            self._send(messages, system, model, params)
        )
        self.inflight[key] = task
        try:
            return await task
        finally:
            self.inflight.pop(key, None)

    async def _send(
        self,
        messages: list[dict[str, Any]],
        system: str | None,
        model: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        client = self.client
        observer = _Observer(client)
        error: str | None = None
        stopped = False
        try:
            plan, turn = client._request(messages, system, model, params)
        except NbstreamError as exc:  # checked by the driver already; say it anyway
            return {"turn": None, "observed": [], "error": str(exc), "stopped": False}
        spec = plan.spec
        spec.max_retries = 0
        spec.middleware = (*spec.middleware, observer)
        stream = AsyncStream(client, plan, turn)
        try:
            await stream.wait()
        except asyncio.CancelledError:
            stopped = True
            if turn.status == "streaming":
                turn.status = "cancelled"
        except NbstreamError as exc:
            error = client._scrubber.scrub(str(exc))
        except Exception as exc:  # a bug: the driver records it, nothing is logged
            error = client._scrubber.scrub(f"{type(exc).__name__}: {exc}")
        finally:
            await stream.aclose()
        return {
            "turn": _turn_dict(turn),
            "observed": observer.seen,
            "error": error,
            "stopped": stopped,
            "pid": os.getpid(),
        }

    async def stop(self, key: str | None = None) -> int:
        """Stop the request ``key`` (every request if None): its connection is closed
        and its ``send`` returns the partial reply. Returns how many were stopped."""
        tasks = (
            list(self.inflight.values())
            if key is None
            else [t for k, t in self.inflight.items() if k == key]
        )
        for t in tasks:
            t.cancel()
        return len(tasks)

    async def close(self) -> None:
        await self.stop()
        await self.client.aclose()


def _turn_dict(turn: Turn) -> dict[str, Any]:
    d = turn.to_dict()
    m = d["metrics"]  # float32 arrivals: a list of plain floats travels lighter
    m["arrivals"] = [round(a, 6) for a in m["arrivals"]]
    return d
