"""One request, described: what the producer needs to send it and read its answer.

Below the transport, the retry policy and the stream handles, so all of them can use
it without importing each other. Its repr shows no header: the headers hold the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .._core.providers import Provider
from .._core.secrets import Scrubber
from .._core.transcript import Api
from .settings import Settings, Timeouts

__all__ = ["ERROR_BODY_LIMIT", "MAX_RETRY_WAIT", "RETRY_STATUSES", "RequestSpec"]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_WAIT = 60.0  # a longer retry-after is reported, not waited for
ERROR_BODY_LIMIT = 64 * 1024


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
    _headers: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> Api:
        return self.settings.api

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    def headers(self) -> dict[str, str]:
        return dict(self._headers)

    def body(self) -> dict[str, Any]:
        return self.provider.body(
            self.settings.model,
            self.messages,
            self.system,
            self.params,
            stream_options=self.stream_options,
        )

    def prompt_chars(self) -> int:
        """The size of what is sent, to estimate input tokens before usage arrives."""
        return len(json.dumps(self.messages, ensure_ascii=False)) + len(
            self.system or ""
        )

    def scrub(self, text: str) -> str:
        return self.scrubber.scrub(text)

    def __repr__(self) -> str:
        return f"<RequestSpec POST {self.url} model={self.settings.model!r}>"
