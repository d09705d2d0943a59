"""The clients the ``%%chat`` cells use: one per combination of settings, the most
recently used kept (their connection pools stay warm), older ones closed — every change
of a cell option or an ``NBSTREAM_`` variable used to leave a client open for good."""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .._core.errors import ConfigurationError
from .._http.client import Client
from .._http.replay import ReplayError
from .._http.settings import Timeouts
from .cell_request import Options

if TYPE_CHECKING:
    from .magics import ChatMagics

__all__ = ["MAX_CLIENTS", "ClientCache"]

MAX_CLIENTS = 8  # clients (connection pools) kept for recently used settings
_ENV = ("NBSTREAM_", "OPENAI_", "ANTHROPIC_", "XDG_CACHE_HOME")


class ClientCache:
    def __init__(self) -> None:
        # most recently used last
        self._clients: OrderedDict[tuple[Any, ...], Client] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def values(self) -> list[Client]:
        return list(self._clients.values())

    def get(self, magics: ChatMagics, opts: Options) -> Client:
        """The client for a cell's options over the magics' settings."""
        base_url = opts.base_url or magics.base_url
        models = [m.strip() for m in (opts.model or magics.model or "").split(",")]
        if len(models) > 1 and not all(models):
            raise UsageError(
                f"-m {opts.model!r} has an empty model name: list models separated by "
                "commas, e.g. -m gpt-4o-mini,llama3."
            )
        model, fallbacks = (models[0] or None), models[1:]
        recover = opts.recover or magics.recover
        api = opts.api or magics.api
        timeout = opts.timeout if opts.timeout is not None else magics.timeout
        # %env changes between cells count too (a hash: no key kept in plain text here)
        env = hash(
            tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV)))
        )
        cache = magics.cache_path()
        key = (
            base_url,
            model,
            tuple(fallbacks),
            recover,
            api,
            timeout,
            opts.record,
            opts.replay,
            cache,
            env,
        )
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
        else:
            try:
                client = Client(
                    base_url=base_url,
                    model=model,
                    api=api,
                    timeout=Timeouts(first_byte=timeout, idle=timeout)
                    if timeout
                    else None,
                    record=opts.record,
                    replay=opts.replay,
                    fallbacks=fallbacks,
                    recover=recover,
                    cache=cache or False,
                )
            except (ConfigurationError, ReplayError) as exc:
                raise UsageError(str(exc)) from None
            self._clients[key] = client
            while len(self._clients) > MAX_CLIENTS:
                _, old = self._clients.popitem(last=False)
                old.close()
        return client

    def close(self) -> None:
        while self._clients:
            _, client = self._clients.popitem()
            client.close()
