"""Every error nbstream raises, in one hierarchy.

```
NbstreamError                  base of everything below; ``.turn`` holds the turn, if any
├── ConfigurationError         bad arguments or settings (unknown api, no model …)
│   └── ImageTooLargeError     an image over the provider's documented limit, refused
│                              before anything is sent; ``.limit`` names it
├── APIError                   the provider answered, but not with a usable stream
│   ├── APIStatusError         a non-2xx answer: status, provider message, request id,
│   │                          retry-after
│   ├── ProviderStreamError    an ``error`` event or error object in the middle of a stream
│   └── NotAStreamError        a 2xx answer whose body is not ``text/event-stream``
├── APIConnectionError         could not connect, or the connection broke mid-stream
├── APITimeoutError            a wait ran out: ``.phase`` is ``connect``, ``pool``,
│                              ``first_byte``, ``first_token``, ``idle`` or ``total``
├── EventTooLargeError         one server-sent event exceeded ``max_event_size``
└── InternalError              nbstream itself failed on a reply (a bug; the partial
                               reply is kept)
```

Whatever a server sends, only these escape: anything unexpected inside the engine ends
the turn as ``error`` with an ``InternalError``; ``cancelled`` means someone stopped it.

Every message names the cause and the fix, and never contains an API key: the client
scrubs its key from any text that came from the network before it reaches an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .transcript import Turn

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "ConfigurationError",
    "EventTooLargeError",
    "ImageTooLargeError",
    "InternalError",
    "NbstreamError",
    "NotAStreamError",
    "ProviderStreamError",
]


class NbstreamError(Exception):
    """Base class of every nbstream error. ``turn`` is the turn it ended, if any."""

    def __init__(self, message: str, *, turn: Turn | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.turn = turn

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: the message is the whole story."""
        return [f"{type(self).__name__}: {self.message}"]


class ConfigurationError(NbstreamError, ValueError):
    """A setting or argument is wrong; the message says which and how to fix it."""


class ImageTooLargeError(ConfigurationError):
    """An image is over the documented limit of the provider it would go to (its size,
    its sides, or the images of one request together). Raised before anything is sent;
    ``limit`` is the limit in words, ``api`` the wire format whose limit it is.

    >>> err = ImageTooLargeError("too big", limit="5 MB an image", api="anthropic")
    >>> isinstance(err, ValueError), err.limit
    (True, '5 MB an image')
    """

    def __init__(
        self, message: str, *, limit: str, api: str, turn: Turn | None = None
    ) -> None:
        super().__init__(message, turn=turn)
        self.limit = limit
        self.api = api


class APIError(NbstreamError):
    """The provider answered, but not with a usable stream."""


class APIStatusError(APIError):
    """The provider answered with a non-2xx status.

    >>> err = APIStatusError("429 Too Many Requests", status_code=429, retry_after=2.0)
    >>> err.status_code, err.retry_after
    (429, 2.0)
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider_message: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        error_type: str | None = None,
        body: str | None = None,
        turn: Turn | None = None,
    ) -> None:
        super().__init__(message, turn=turn)
        self.status_code = status_code
        self.provider_message = provider_message
        self.request_id = request_id
        self.retry_after = retry_after
        self.error_type = error_type
        self.body = body


class ProviderStreamError(APIError):
    """The stream carried an error event or error object; the partial reply is kept."""


class NotAStreamError(APIError):
    """A successful answer whose body is not an event stream."""


class APIConnectionError(NbstreamError):
    """Could not connect to the server, or the connection broke mid-stream."""


TimeoutPhase = Literal["connect", "pool", "first_byte", "first_token", "idle", "total"]


class APITimeoutError(NbstreamError):
    """A wait ran out; ``phase`` says which (see ``Timeouts``)."""

    def __init__(
        self,
        message: str,
        *,
        phase: TimeoutPhase,
        turn: Turn | None = None,
    ) -> None:
        super().__init__(message, turn=turn)
        self.phase = phase


class EventTooLargeError(NbstreamError):
    """One server-sent event was larger than the configured ``max_event_size``."""


class InternalError(NbstreamError):
    """nbstream failed while handling a reply: a bug. The turn is ``error`` and keeps
    the partial reply; the message names the failure."""
