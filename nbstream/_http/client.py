"""``Client``: talks to one model server, reusing its connections across requests.

>>> client = Client(base_url="http://127.0.0.1:8000/v1", model="m", api_key="sk-x")
>>> client
Client(api='openai', base_url='http://127.0.0.1:8000/v1', model='m', api_key=***)
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .._core.context import as_messages
from .._core.errors import ConfigurationError
from .._core.limits import fit_images
from .._core.providers import provider_for
from .._core.recovery import Recover
from .._core.response_format import with_response_format
from .._core.secrets import Scrubber, Secret
from .._core.sse import DEFAULT_MAX_EVENT_SIZE
from .._core.structured import Structured
from .._core.transcript import Api, Request, Turn
from ..middleware import Middleware
from . import client_args as args
from .producer import stream_options_for
from .replay import Recording
from .request import ReplyCache, RequestSpec, SealedHeaders
from .runner import Entry, Plan
from .settings import Settings, Timeouts, context_budget_of, resolve
from .streams import AsyncStream, Stream, in_loop
from .tooloptions import Approve, ToolOptions, tool_options
from .transport import HTTP, guard_logs

if TYPE_CHECKING:
    from .._core.tools import Tool

__all__ = ["Client", "Messages"]

# a string, a list of messages, or text and objects for one message (context.py)
Messages = str | Sequence[Any]


class Client:
    """Talks to one model server; reuses its HTTP connections across requests.

    Every argument left ``None`` comes from the environment (``NBSTREAM_BASE_URL``,
    ``NBSTREAM_MODEL``, ``NBSTREAM_API``, ``NBSTREAM_API_KEY``, then ``OPENAI_*`` /
    ``ANTHROPIC_API_KEY``), and with nothing set, from the local model server.
    ``cache=PATH`` (or ``NBSTREAM_CACHE``): a request already answered in that store
    (``nbstream.batch`` writes the same kind) is answered from it, with no request sent
    (not a request with ``tools=``: its tools would not run).
    ``context_budget``: the tokens (estimated) that the objects of one message may take
    as text, e.g. a DataFrame in ``chat(["Describe", df])`` (``NBSTREAM_CONTEXT_BUDGET``,
    else 2000).
    ``http`` (or ``NBSTREAM_HTTP``): which HTTP client sends the requests: ``"auto"``
    (the default: nbstream's own HTTP/1.1 client, or httpx2 where a proxy or
    record/replay needs it), ``"httpx2"`` (always httpx2) or ``"h1"``.

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
        max_connections: int | None = None,
        fallbacks: Sequence[str | Client] | None = None,
        recover: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        prefill_params: dict[str, Any] | None = None,
        cache: str | os.PathLike[str] | bool | None = None,
        context_budget: int | None = None,
        http: str | None = None,
    ) -> None:
        self.settings = resolve(base_url, model, api, api_key)
        self.timeouts = Timeouts.of(timeout)
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.max_event_size = max_event_size
        self.keep_raw_events = keep_raw_events
        self._extra_headers = args.checked_headers(headers or {})
        # Record / replay (see nbstream.replay): argument, else environment.
        env = os.environ
        self.record = record or env.get("NBSTREAM_RECORD") or None
        replay = replay or env.get("NBSTREAM_REPLAY") or None
        self._recording = Recording.load(replay) if replay else None
        if replay_speed is None:
            replay_speed = float(env.get("NBSTREAM_REPLAY_SPEED") or 1.0)
        self.replay_speed = replay_speed
        self.max_connections = max_connections
        self.http = args.http_choice(http, env.get("NBSTREAM_HTTP"))
        if self.http == "h1" and (self.record or self._recording is not None):
            raise ConfigurationError(
                "Client(http='h1') cannot record or replay: recording and replay go "
                "through httpx2. Leave http unset (or 'auto') with record/replay."
            )
        # The reply cache (an nbstream store): a request found there is answered from
        # it, marked turn.extra["cached"]; complete replies are added to it. None:
        # NBSTREAM_CACHE if set; False: none.
        if cache is None:
            cache = env.get("NBSTREAM_CACHE") or None
        if cache is True:
            raise ConfigurationError(
                "Client(cache=True): give the path of the cache file, e.g. "
                "cache='nbstream-cache.sqlite' (or cache=False for none)."
            )
        self.cache = os.fspath(cache) if cache else None
        self._cache: ReplyCache | None = None
        if self.cache is not None:
            from .._store.cache import StoreCache  # sqlite3 loads only when used

            self._cache = StoreCache(self.cache)
        key = self.settings.api_key
        secrets = [key.get()] if key else []
        secrets += args.secret_headers(self._extra_headers)
        self._scrubber = Scrubber(secrets)
        guard_logs(self._scrubber)
        self.fallbacks: list[Entry] = args.entries(self, fallbacks or [])
        self.recover: Recover | None = args.recover(recover)
        self.middleware: tuple[Middleware, ...] = args.middleware(middleware or ())
        # extra parameters sent with a prefill (vLLM continues a trailing assistant
        # message with {"continue_final_message": True, "add_generation_prompt": False})
        self.prefill_params = dict(prefill_params or {})
        self._http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, HTTP]
        self._http = weakref.WeakKeyDictionary()
        self.context_budget = context_budget_of(context_budget)

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

    def _http_for(self, loop: asyncio.AbstractEventLoop) -> HTTP:
        http = self._http.get(loop)
        if http is None:
            http = self._http[loop] = HTTP(
                self.base_url,
                self.timeouts,
                max_connections=self.max_connections,
                record=os.fspath(self.record) if self.record else None,
                recording=self._recording,
                replay_speed=self.replay_speed,
                scrub_bytes=self._scrubber.scrub_bytes,
                http=self.http,
            )
        return http

    def _spec(
        self,
        messages: list[dict[str, Any]],
        system: str | None,
        model: str | None,
        params: dict[str, Any],
        history: Sequence[Turn] = (),
        *,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str | None = None,
    ) -> RequestSpec:
        """What to send: ``history`` (earlier turns, rendered in this client's wire
        format) then ``messages``; ``tools``: neutral tool descriptions."""
        s = self.settings
        if model is not None and model != s.model:
            s = Settings(s.base_url, model, s.api, s.api_key, s.source, s.withheld_key)
        provider = provider_for(s.api)
        key = s.api_key.get() if s.api_key else None
        headers = {
            "accept": "text/event-stream",
            "accept-encoding": "gzip, deflate",  # inflated step by step (transport)
            "user-agent": "nbstream/0.1",
            **self._extra_headers,
        }
        return RequestSpec(
            settings=s,
            provider=provider,
            url=s.base_url + provider.path,
            # earlier images go again while the request stays within the provider's
            # limits; a new image over them is refused here, before anything is sent
            messages=fit_images(provider.history(history), messages, s.api),
            system=system,
            params=dict(params),
            timeouts=self.timeouts,
            max_retries=self.max_retries,
            retry_delay=self.retry_delay,
            max_event_size=self.max_event_size,
            keep_raw_events=self.keep_raw_events,
            scrubber=self._scrubber,
            stream_options=stream_options_for(s.base_url),
            middleware=self.middleware,
            cache=self._cache,
            tools=tuple(tools),
            tool_choice=tool_choice,
            _headers=headers,
            _key_headers=SealedHeaders(provider.headers(key)),
        )

    def _request(
        self,
        messages: Messages,
        system: str | None,
        model: str | None,
        params: dict[str, Any],
        history: Sequence[Turn] = (),
        tools: ToolOptions | None = None,
    ) -> tuple[Plan, Turn]:
        """What to send, and the turn that will record it (``history``, earlier turns,
        goes into the request but not into the turn's record). With ``tools``, the
        plan runs the tool loop."""
        msgs = as_messages(messages, self.context_budget)
        structured: Structured | None = None
        if params.get("response_format") is not None:  # kept as data from here on
            params, structured = with_response_format(params, self.api)
        specs = tools.specs() if tools else ()
        spec = self._spec(
            msgs,
            system,
            model,
            params,
            history,
            tools=specs,
            tool_choice=tools.tool_choice if tools else None,
        )
        for api in {e.client.api for e in self.fallbacks} - {spec.api}:
            fit_images(provider_for(api).history(history), msgs, api)  # refused now
        request = Request(
            messages=msgs,
            model=spec.settings.model,
            api=spec.api,
            base_url=spec.base_url,
            params=dict(params),
            system=system,
            tools=[dict(t) for t in specs],
        )
        plan = Plan(self, spec, msgs, system, dict(params), tuple(history), tools)
        turn = Turn(request)
        turn.structured = structured
        return plan, turn

    def _ask(
        self,
        messages: Messages,
        system: str | None,
        model: str | None,
        params: dict[str, Any],
        tools: Any,
        tool_choice: Any,
        approve: Any,
        max_steps: Any,
    ) -> tuple[Plan, Turn]:
        opts = tool_options(tools, tool_choice, approve, max_steps, params)
        return self._request(messages, system, model, params, tools=opts)

    # -- public entry points -----------------------------------------------------
    def stream(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        tools: Sequence[Callable[..., Any] | Tool | dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        approve: bool | Approve | None = None,
        max_steps: int | None = None,
        **params: Any,
    ) -> Stream:
        """Start a request; iterate the returned ``Stream`` for events (sync).

        ``tools``: Python functions (sync or async) the model may call: the reply
        runs them and asks again with their results until the model answers without
        a call (at most ``max_steps`` model steps, 8 by default); ``turn.steps`` holds
        every step. ``approve=True`` asks before each call (``input()``); or give a
        function ``approve(call) -> bool``. ``tool_choice``: ``"auto"``,
        ``"required"``, ``"none"`` or a tool's name, for the first step. Tool
        descriptions in a provider's own form (dicts) are sent as they are and their
        calls come back in ``turn.tool_calls``, not run."""
        t = (tools, tool_choice, approve, max_steps)
        return Stream(self, *self._ask(messages, system, model, params, *t))

    def astream(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        tools: Sequence[Callable[..., Any] | Tool | dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        approve: bool | Approve | None = None,
        max_steps: int | None = None,
        **params: Any,
    ) -> AsyncStream:
        """Start a request; ``async for`` the returned ``AsyncStream`` for events.
        (``tools`` and its companions: see ``stream``.)"""
        t = (tools, tool_choice, approve, max_steps)
        return AsyncStream(self, *self._ask(messages, system, model, params, *t))

    def chat(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        tools: Sequence[Callable[..., Any] | Tool | dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        approve: bool | Approve | None = None,
        max_steps: int | None = None,
        **params: Any,
    ) -> Turn:
        """Ask and wait for the whole reply (sync). Raises an ``NbstreamError`` if the
        turn failed; the error's ``turn`` keeps the partial reply. With ``tools``,
        the returned turn is the final model step; ``turn.steps`` holds them all
        (see ``stream``)."""
        t = (tools, tool_choice, approve, max_steps)
        return Stream(self, *self._ask(messages, system, model, params, *t)).wait()

    async def achat(
        self,
        messages: Messages,
        *,
        system: str | None = None,
        model: str | None = None,
        tools: Sequence[Callable[..., Any] | Tool | dict[str, Any]] | None = None,
        tool_choice: str | None = None,
        approve: bool | Approve | None = None,
        max_steps: int | None = None,
        **params: Any,
    ) -> Turn:
        """Ask and wait for the whole reply (async); same contract as ``chat``."""
        t = (tools, tool_choice, approve, max_steps)
        s = AsyncStream(self, *self._ask(messages, system, model, params, *t))
        try:
            return await s.wait()
        finally:
            await s.aclose()

    async def aclose(self) -> None:
        """Close every connection pool this client opened (awaits each)."""
        here = asyncio.get_running_loop()
        pools, self._http = list(self._http.items()), weakref.WeakKeyDictionary()
        for loop, http in pools:
            if loop is here:
                await http.aclose()
            elif loop.is_running():
                fut = asyncio.run_coroutine_threadsafe(http.aclose(), loop)
                await asyncio.wrap_future(fut)
            elif not loop.is_closed():
                loop.run_until_complete(http.aclose())

    def close(self) -> None:
        """Close every connection pool this client opened, from any thread. Called on a
        running loop's own thread (a notebook cell), the pool of that loop is closed
        as soon as the cell yields (a sync call cannot wait for it there)."""
        pools, self._http = list(self._http.items()), weakref.WeakKeyDictionary()
        for loop, http in pools:
            if in_loop(loop):
                task = loop.create_task(http.aclose())
                _closing.add(task)
                task.add_done_callback(_closing.discard)
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(http.aclose(), loop).result(5)
            elif not loop.is_closed():
                loop.run_until_complete(http.aclose())


_closing: set[asyncio.Task[None]] = set()  # pools being closed (kept from the GC)
