"""What a provider's batch API is to ``provider.py`` (the engine both share): a
``BatchAPI`` (``openai_batch.py``, ``anthropic_batch.py``) submits, polls, cancels and
reads results; a ``Poll`` is what the provider says about a batch, a ``Line`` one
request's result. ``custom_id_for`` makes a request key a ``custom_id``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from .rest import Rest

__all__ = ["BatchAPI", "Line", "Poll", "counts_of", "custom_id_for", "result_object"]

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def custom_id_for(key: str) -> str:
    """The request key as a ``custom_id`` both providers take."""
    if _CUSTOM_ID.fullmatch(key):
        return key
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:63]


@dataclass(frozen=True)
class Poll:
    """What the provider says about one batch."""

    status: str  # the provider's own word
    terminal: bool
    counts: dict[str, int]
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Line:
    """One request's result, as the provider gave it."""

    custom_id: str
    kind: Literal["done", "failed", "expired", "cancelled", "missing"]
    body: Any = None  # done: the whole answer (a chat completion, a Message)
    status_code: int | None = None
    message: str | None = None
    code: str | None = None


class BatchAPI(Protocol):
    name: str  # the engine's name
    label: str  # for people: "OpenAI batch"
    api: str  # the wire format of the requests
    max_requests: int
    max_bytes: int

    def entry(self, custom_id: str, body: dict[str, Any]) -> bytes: ...

    async def submit(self, rest: Rest, entries: list[bytes]) -> str: ...

    async def retrieve(self, rest: Rest, batch_id: str) -> Poll: ...

    async def cancel(self, rest: Rest, batch_id: str) -> None: ...

    async def results(
        self, rest: Rest, batch_id: str, poll: Poll, ids: list[str]
    ) -> Iterator[Line]:
        """Every result line; for requests the files leave out, a ``missing``
        line or what the batch's end says about them (``ids``: its custom ids)."""
        ...


def result_object(raw: bytes) -> tuple[str, dict[str, Any]] | None:
    """One line of a results file as ``(custom_id, the line's object)``; None for a line
    that is not a JSON object with a string ``custom_id``."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
        return None
    return obj["custom_id"], obj


def counts_of(counts: Any) -> dict[str, int]:
    """A batch's ``request_counts``: the whole-number ones, whatever else it holds."""
    if not isinstance(counts, dict):
        return {}
    return {str(k): v for k, v in counts.items() if type(v) is int}
