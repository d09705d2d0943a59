"""Wire formats: build a request body, and turn one SSE event into neutral events.

One module per format; both have the same shape (``build_body``, ``headers``, ``path``,
a ``Parser`` with ``parse(sse) -> list[Event]``, ``error_details(body)``).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..events import Event
from ..sse import ServerSentEvent

__all__ = ["Parser", "split_system"]


class Parser(Protocol):
    def parse(self, sse: ServerSentEvent) -> list[Event]: ...


def split_system(
    messages: list[dict[str, Any]], system: str | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """Pull system messages out of a message list and join them with ``system``."""
    parts = [system] if system else []
    rest: list[dict[str, Any]] = []
    for m in messages:
        if m.get("role") == "system" and isinstance(m.get("content"), str):
            parts.append(m["content"])
        else:
            rest.append(m)
    return ("\n\n".join(parts) if parts else None), rest
