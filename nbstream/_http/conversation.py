"""A conversation: a system prompt, a client, and the transcript of every turn.

Each new message is sent with the history (``transcript.to_messages``); the turn joins
the transcript as soon as it starts, so the transcript is live while a reply streams,
and it stays there whether the turn finishes, is stopped or fails.

>>> from nbstream import Client
>>> conv = Conversation(Client(base_url="http://127.0.0.1:8000/v1"), system="Be terse.")
>>> turn = conv.send("Hello")  # doctest: +SKIP
>>> conv.transcript.to_messages()[-1]["role"]  # doctest: +SKIP
'assistant'
"""

from __future__ import annotations

from typing import Any

from .._core.transcript import Transcript, Turn
from .client import Client, Messages
from .streams import AsyncStream, Stream
from .tooloptions import tool_options

__all__ = ["Conversation"]


class Conversation:
    """Sends each message with the history so far; keeps every turn.

    Parameters given here (``temperature=…``, ``tools=[fn]``, ``approve=…``,
    ``max_steps=…``) apply to every message; those given to ``send`` to that one.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        system: str | None = None,
        transcript: Transcript | None = None,
        **params: Any,
    ) -> None:
        self._client = client
        self.transcript = transcript if transcript is not None else Transcript()
        if system is not None:
            self.transcript.system = system
        self.params = params

    @property
    def client(self) -> Client:
        """The client it sends with; ``Client()`` from the environment if none was given."""
        if self._client is None:
            self._client = Client()
        return self._client

    @client.setter
    def client(self, value: Client) -> None:
        self._client = value

    @property
    def system(self) -> str | None:
        return self.transcript.system

    @system.setter
    def system(self, value: str | None) -> None:
        self.transcript.system = value

    def __repr__(self) -> str:
        return f"<Conversation {self._client!r} {self.transcript!r}>"

    def _prepare(self, message: Messages, params: dict[str, Any]) -> tuple[Any, Turn]:
        history = tuple(self.transcript.turns)  # rendered by whichever server answers
        params = {**self.params, **params}
        model = params.pop("model", None)
        tools = tool_options(
            params.pop("tools", None),
            params.pop("tool_choice", None),
            params.pop("approve", None),
            params.pop("max_steps", None),
            params,
        )
        spec, turn = self.client._request(
            message,
            self.transcript.system,
            model,
            params,
            history=history,
            tools=tools,
        )
        self.transcript.append(turn)
        return spec, turn

    def stream(self, message: Messages, **params: Any) -> Stream:
        """Send ``message`` with the history; iterate the stream for events."""
        return Stream(self.client, *self._prepare(message, params))

    def astream(self, message: Messages, **params: Any) -> AsyncStream:
        """Async twin of ``stream``."""
        return AsyncStream(self.client, *self._prepare(message, params))

    def send(self, message: Messages, **params: Any) -> Turn:
        """Send and wait for the whole reply; raises if it failed (the turn is kept)."""
        return self.stream(message, **params).wait()

    async def asend(self, message: Messages, **params: Any) -> Turn:
        """Async twin of ``send``."""
        s = self.astream(message, **params)
        try:
            return await s.wait()
        finally:
            await s.aclose()
