"""Calling a client's middleware around one request (see ``nbstream.middleware``).

Requests pass the middleware in list order; responses, events and endings in reverse
(the first one wraps the others). A hook that raises becomes a ``MiddlewareError``
naming it, its message scrubbed of the key.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from .._core.errors import NbstreamError
from .._core.events import Event
from .._core.transcript import Turn
from ..middleware import Incoming, Middleware, MiddlewareError, Outgoing
from .request import RequestSpec, SealedHeaders

__all__ = ["Hooks"]

_tasks: set[asyncio.Task[Any]] = set()  # endings of stopped requests, still running


class Hooks:
    __slots__ = ("_events", "_mw", "request", "spec")

    def __init__(self, spec: RequestSpec) -> None:
        self.spec = spec
        self._mw = spec.middleware
        # only the middleware that look at events cost anything per event
        self._events = [
            m for m in reversed(self._mw) if type(m).on_event is not Middleware.on_event
        ]
        self.request: Outgoing | None = None

    def _error(self, m: Middleware, hook: str, exc: BaseException) -> MiddlewareError:
        detail = self.spec.scrubber.cut(f"{type(exc).__name__}: {exc}", 300)
        return MiddlewareError(
            f"The middleware {m.name} failed in {hook} ({detail}). The turn ends here; "
            "its partial reply is kept. Fix or remove that middleware.",
            middleware=m.name,
        )

    async def before(self, attempt: int) -> tuple[dict[str, Any], dict[str, str]]:
        """The body and headers to send, after every ``before_request``."""
        spec = self.spec
        if not self._mw:
            return spec.body(), spec.headers()
        req = Outgoing(
            spec.settings.model,
            spec.api,
            spec.url,
            spec.body(),
            spec.public_headers(),
            attempt,
            self.request.state if self.request is not None else {},
        )
        self.request = req
        for m in self._mw:
            try:
                result = m.before_request(req)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise self._error(m, "before_request", exc) from None
        return req.body, SealedHeaders({**req.headers, **spec._key_headers})

    def response(self, status: int, headers: dict[str, str]) -> None:
        req = self.request
        if req is None:
            return
        scrub = self.spec.scrubber.scrub
        seen = Incoming(
            status,
            {k: scrub(v) for k, v in headers.items()},
            self.spec.url,
            self.spec.settings.model,
        )
        for m in reversed(self._mw):
            try:
                m.on_response(req, seen)
            except Exception as exc:
                raise self._error(m, "on_response", exc) from None

    def events(self, turn: Turn) -> Callable[[Event], Event | None] | None:
        """The chain of ``on_event`` hooks, or ``None`` when none looks at events."""
        hooks = self._events
        if not hooks:
            return None

        def chain(ev: Event) -> Event | None:
            for m in hooks:
                try:
                    out = m.on_event(ev, turn)
                except Exception as exc:
                    raise self._error(m, "on_event", exc) from None
                if out is None:
                    return None
                ev = out
            return ev

        return chain

    async def after(self, turn: Turn, error: NbstreamError | None) -> None:
        req = self.request
        if req is None:
            return
        for m in reversed(self._mw):
            try:
                result = m.after(req, turn, error)
                if inspect.isawaitable(result):
                    await result
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise self._error(m, "after", exc) from None

    def after_stop(self, turn: Turn) -> None:
        """The request was stopped: endings run without being waited for."""
        req = self.request
        if req is None:
            return
        for m in reversed(self._mw):
            try:
                result = m.after(req, turn, None)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    _tasks.add(task)
                    task.add_done_callback(_tasks.discard)
            except Exception:
                pass  # a stop is not the time to report a middleware's failure
