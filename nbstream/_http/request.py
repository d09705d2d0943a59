"""One request, described: what the producer needs to send it and read its answer.

Below the transport, the retry policy and the stream handles, so all of them can use
it without importing each other. Its repr shows no header: the headers hold the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .._core.events import Event
from .._core.images import without_image_data
from .._core.providers import Provider
from .._core.secrets import Scrubber
from .._core.transcript import Api, Turn
from .settings import Settings, Timeouts

if TYPE_CHECKING:
    from ..middleware import Middleware

__all__ = [
    "ERROR_BODY_LIMIT",
    "MAX_RETRY_WAIT",
    "RETRY_STATUSES",
    "ReplyCache",
    "RequestSpec",
    "SealedHeaders",
    "encode_body",
]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_WAIT = 60.0  # a longer retry-after is reported, not waited for
ERROR_BODY_LIMIT = 64 * 1024


class SealedHeaders(dict[str, str]):
    """Headers that carry the key: a dict whose repr shows only their names, so a
    traceback that shows local variables shows no key."""

    def __repr__(self) -> str:
        return "SealedHeaders(" + ", ".join(sorted(self)) + ")"


class ReplyCache(Protocol):
    """Answers a request from stored replies (``Client(cache=...)``;
    ``nbstream._store.cache``)."""

    def answer(self, spec: RequestSpec, turn: Turn) -> list[Event] | None:
        """Fill ``turn`` from a stored reply and return its events, or None."""
        ...

    def keep(self, spec: RequestSpec, turn: Turn) -> None:
        """A reply ended without an error: store it if it is worth keeping."""
        ...


@dataclass(eq=False, repr=False)
class RequestSpec:
    """Everything the producer needs for one request."""

    settings: Settings
    provider: Provider
    url: str
    messages: list[dict[str, Any]]
    system: str | None
    params: dict[str, Any]
    timeouts: Timeouts
    max_retries: int
    retry_delay: float
    max_event_size: int | None
    keep_raw_events: bool
    scrubber: Scrubber
    stream_options: bool = True
    middleware: tuple[Middleware, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()  # neutral descriptions of the tools offered
    tool_choice: str | None = None
    # The reply cache (None: none): asked before anything is sent (``Plan.run``).
    cache: ReplyCache | None = None
    _headers: dict[str, str] = field(default_factory=dict)
    _key_headers: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> Api:
        return self.settings.api

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def headers(self) -> SealedHeaders:
        """Every header to send, the key's included."""
        return SealedHeaders({**self._headers, **self._key_headers})

    def public_headers(self) -> dict[str, str]:
        """The headers a middleware may see and change (not the key's)."""
        return dict(self._headers)

    def body(self) -> dict[str, Any]:
        return self.provider.body(
            self.settings.model,
            self.messages,
            self.system,
            self.params,
            stream_options=self.stream_options,
            tools=self.tools,
            tool_choice=self.tool_choice,
        )

    def prompt_chars(self) -> int:
        """The size of what is sent, to estimate input tokens before usage arrives (an
        image counts as the tokens it costs, not as the length of its data)."""
        messages, image_chars = without_image_data(self.messages)
        sent = len(json.dumps(messages, ensure_ascii=False)) + image_chars
        if self.tools:  # tool descriptions are input tokens too
            sent += len(json.dumps(self.tools, ensure_ascii=False))
        return sent + len(self.system or "")

    def scrub(self, text: str) -> str:
        return self.scrubber.scrub(text)

    def __repr__(self) -> str:
        return f"<RequestSpec POST {self.url} model={self.settings.model!r}>"


def encode_body(body: dict[str, Any]) -> bytes:
    """A request's JSON, as both HTTP clients send it: orjson (compact UTF-8); what
    orjson refuses (a lone surrogate in a prompt, an integer beyond 64 bits) in
    ``json``'s ASCII form, the same JSON value with ``\\u`` escapes."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":")).encode()
