"""Wire formats. One provider object per format owns everything that differs between
them: the request path, headers and body, the event parser and its usage rules, the
reading of error bodies, a non-streamed answer, and the history messages sent back.
"openai or anthropic" is asked once, in ``provider_for``.

>>> provider_for("anthropic").path
'/messages'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..events import Event
from ..secrets import Scrubber
from ..sse import ServerSentEvent

if TYPE_CHECKING:
    from ..transcript import Api, Turn

__all__ = [
    "MAX_CHOICES",
    "Parser",
    "Provider",
    "clip",
    "history_turns",
    "provider_for",
    "quote",
    "split_system",
    "turn_messages",
]

MAX_CHOICES = 128  # ``n`` above this is refused by every provider; an index beyond it
# is a broken or hostile stream, not a reply (a chunk with index 200000 must not
# allocate 200,001 choices).


class Parser(Protocol):
    """One server-sent event → neutral events. Keeps the state a format needs."""

    def parse(self, sse: ServerSentEvent) -> list[Event]: ...

    def parse_data(self, data: bytes) -> list[Event]:
        """The same for an unnamed event given by its data alone, as bytes (the fast
        path for one whole ``data:`` event per read)."""
        ...


class Provider(Protocol):
    api: Api
    path: str

    def headers(self, api_key: str | None) -> dict[str, str]: ...

    def body(
        self,
        model: str,
        messages: list[dict[str, Any]],
        system: str | None,
        params: dict[str, Any],
        *,
        stream_options: bool = True,
        tools: Sequence[dict[str, Any]] = (),
        tool_choice: str | None = None,
    ) -> dict[str, Any]:
        """The request body. ``tools``: neutral tool descriptions (``{"name",
        "description", "parameters"}``); ``tool_choice``: ``"auto"``, ``"required"``,
        ``"none"`` or a tool's name."""
        ...

    def tool_messages(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Neutral tool-result messages in this format (Anthropic: one user message)."""
        ...

    def parser(self, scrubber: Scrubber | None = None) -> Parser: ...

    def completion(self, obj: Any, scrubber: Scrubber | None = None) -> list[Event]:
        """The events of a whole JSON answer (a server that ignored ``stream``)."""
        ...

    def error_details(self, body: Any) -> tuple[str | None, str | None, str | None]:
        """``(message, type, code)`` from an error body or error event."""
        ...

    def rejects_stream_options(self, status: int, body: str) -> bool: ...

    def reply_message(self, turn: Turn) -> dict[str, Any] | None: ...

    def history(
        self, turns: Sequence[Turn], system: str | None = None
    ) -> list[dict[str, Any]]:
        """The messages of ``turns`` to send again, in this format (with ``system``
        first where the format takes it as a message)."""
        ...


def provider_for(api: Api) -> Provider:
    if api == "anthropic":
        from .anthropic import PROVIDER as anthropic

        return anthropic
    from .openai import PROVIDER as openai

    return openai


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


def history_turns(turns: Sequence[Turn]) -> list[Turn]:
    """The turns that go into the history: failed ones are left out entirely (a retried
    question is not sent twice); stopped and incomplete ones go in with their partial
    reply."""
    return [t for t in turns if t.status not in ("error", "streaming")]


def turn_messages(provider: Provider, turn: Turn) -> list[dict[str, Any]]:
    """One turn of the history in ``provider``'s format: what was asked, then each step
    of a tool loop (the assistant's calls and their results), then the reply. Calls of
    the final step that never ran (the reply was stopped while it asked for them) get
    a result that says so: both formats refuse a call without one."""
    from ..toolresult import ToolResult

    out = list(turn.request.messages)
    results: list[dict[str, Any]] = []
    for step in turn._steps:
        if isinstance(step, ToolResult):
            results.append(step.message())
            continue
        if results:
            out += provider.tool_messages(results)
            results = []
        reply = provider.reply_message(step)
        if reply is not None:
            out.append(reply)
    if results:
        out += provider.tool_messages(results)
    reply = provider.reply_message(turn)
    if reply is not None:
        out.append(reply)
        if turn.request.tools and turn.tool_calls:
            out += provider.tool_messages(
                [
                    {
                        "role": "tool",
                        "tool_call_id": c.id,
                        "name": c.name,
                        "content": "Not run: the reply was stopped before this call "
                        "was made.",
                        "is_error": True,
                    }
                    for c in turn.tool_calls
                ]
            )
    return out


def clip(scrubber: Scrubber | None, text: str, limit: int = 120) -> str:
    """``text`` cut to ``limit`` characters for a message, scrubbed *before* the cut
    (a key cut in the middle would otherwise leave most of itself behind)."""
    if scrubber:
        return scrubber.cut(text, limit)
    return text if len(text) <= limit else text[:limit] + "…"


def quote(scrubber: Scrubber | None, text: str, limit: int = 120) -> str:
    """``clip`` in quotes, for quoting what a server sent."""
    return repr(clip(scrubber, text, limit))
