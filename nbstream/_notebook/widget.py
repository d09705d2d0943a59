"""``ChatWidget``: a chat panel in the notebook, on the same streaming engine.

Traits hold the truth: the committed messages (final text included, so saved widget
state is complete), the status and the totals. The ``messages`` trait grows by
appending: when a turn starts or ends, the browser gets only the messages that changed
(a numbered ``messages`` custom message, applied to the front end's model in
js/src/model_events.js), never the whole list again; a front end that finds a gap asks
for what it missed, and a new front end gets the whole list with the widget's state.
While a reply streams, its text travels as numbered delta messages (coalesced to
20 Hz); a view that starts late or misses one asks for a snapshot. The stream runs as a
task on the kernel's event loop, so the kernel stays free and Stop works from the moment
a request is sent; however that task ends (finished, stopped, failed or cancelled, even
before it started) the turn is committed and the panel returns to idle. The API key
never enters a trait.

>>> from nbstream import ChatWidget  # doctest: +SKIP
>>> chat = ChatWidget(model="gpt-4o-mini", system="You are helpful.")  # doctest: +SKIP
>>> chat  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import anywidget
import traitlets

from .._core.errors import NbstreamError
from .._core.events import AttemptStart
from .._core.pricing import warm_up
from .._core.reply import ToolCall
from .._core.transcript import Transcript, Turn
from .._http.client import Client
from .._http.conversation import Conversation
from .._http.streams import AsyncStream
from .._http.tooloptions import tool_options
from .coalesce import Coalescer
from .readout import readout
from .toolblocks import Approvals, ToolFeed
from .totals import totals
from .view import LiveText, static_asset
from .widget_messages import changes, message_of, user_message_of

__all__ = ["ChatWidget"]

# Traits the kernel updates incrementally (see ChatWidget._commit): their own sync is
# suppressed then, and the front end applies a ``messages`` custom message instead.
_INCREMENTAL = frozenset({"messages", "_messages_rev"})


class ChatWidget(anywidget.AnyWidget):
    """A streaming chat panel: message list, input box, Send, Stop, usage readouts.

    ``chat.transcript`` is the conversation's ``Transcript`` (live while a reply
    streams); ``chat.send("…")`` asks from Python, ``chat.stop()`` stops, and
    ``chat.on_turn(callback)`` observes each finished turn.
    """

    _esm = static_asset("chat.js")
    _css = static_asset("chat.css")

    messages = traitlets.List(
        traitlets.Dict(),
        help="Committed messages (user and assistant), final text included.",
    ).tag(sync=True, echo_update=False)
    _messages_rev = traitlets.Int(
        0, help="Revision of `messages`: +1 for each change sent to the browser."
    ).tag(sync=True, echo_update=False)
    status = traitlets.Unicode(
        "idle", help="'idle', or 'streaming' while a reply runs."
    ).tag(sync=True)
    totals = traitlets.Dict(help="Conversation totals: turns, tokens, cost, time.").tag(
        sync=True
    )
    title = traitlets.Unicode(
        "", help="What the panel shows as its heading (the model)."
    ).tag(sync=True)
    allow_images = traitlets.Bool(
        False,
        help="Show images in replies. Off: each is a link to click (a remote image "
        "loads without a click, so a prompt-injected reply could send data out in its "
        "URL). Only http(s) images load even when on.",
    ).tag(sync=True)

    def __init__(
        self,
        model: str | Sequence[str | Client] | None = None,
        system: str | None = None,
        *,
        base_url: str | None = None,
        api: str | None = None,
        client: Client | None = None,
        conversation: Conversation | None = None,
        recover: str | None = None,
        allow_images: bool = False,
        tools: Sequence[Callable[..., Any]] | None = None,
        approve: bool | Callable[[ToolCall], Any] | None = None,
        max_steps: int | None = None,
        **params: Any,
    ) -> None:
        r"""``model`` may be a list: the first is asked, the others take over in turn
        when it fails (model names on the same server, or other ``Client``\ s);
        ``recover`` says how one takes over a reply that broke after it started
        (``restart``, ``prefill``, ``user_turn``). ``allow_images``: show images in
        replies (off: each is a link; see the trait).

        ``tools``: Python functions the model may call; each call shows as a block
        in the reply. ``approve=True`` asks before each call (Approve / Deny on its
        block); a function ``approve(call) -> bool`` decides in code instead."""
        if tools:
            params["tools"] = list(tools)
            if max_steps is not None:
                params["max_steps"] = max_steps
            tool_options(params["tools"], None, None, max_steps, {})  # fails now
        self._approve = approve
        self._approvals = Approvals()
        if conversation is None:
            if client is None:
                asked, fallbacks = _models(model)
                client = Client(
                    base_url=base_url,
                    model=asked,
                    api=api,
                    fallbacks=fallbacks,
                    recover=recover,
                )
            conversation = Conversation(client, system=system, **params)
        elif params:
            conversation.params.update(params)
        self.conversation = conversation
        warm_up()  # the price dataset loads on a thread while the user types
        first = self._derive([])
        super().__init__(
            title=self.conversation.client.model,
            messages=first,
            totals=totals(self.transcript),
            allow_images=allow_images,
        )
        self._stream: AsyncStream | None = None
        self._task: asyncio.Task[Turn | None] | None = None
        self._callbacks: list[Callable[[Turn], None]] = []
        self._live = LiveText()
        # message id -> the revision that last changed it; revisions below _floor
        # (the last time the whole list was sent) cannot be brought up to date by a diff
        self._changed_at: dict[str, int] = {m["id"]: 0 for m in first}
        self._floor = 0
        self.on_msg(self._handle)

    def __repr__(self) -> str:
        return f"ChatWidget(model={self.title!r}, turns={len(self.transcript)})"

    @property
    def transcript(self) -> Transcript:
        return self.conversation.transcript

    # -- from Python ----------------------------------------------------------------
    def send(
        self, text: str | Sequence[Any], **params: Any
    ) -> asyncio.Task[Turn | None]:
        """Ask ``text`` (or text and objects, ``["Describe", fig, df]``, as ``chat``
        takes them); the reply streams into the panel. Returns the task (await it
        for the finished ``Turn``). Cancelling the task, at any moment, stops the reply
        as ``stop()`` does (the turn is kept, ``cancelled``) and then lets the
        cancellation through: awaiting it raises ``CancelledError``. Raises if a reply
        is already streaming."""
        if self.status == "streaming":
            raise RuntimeError(
                "A reply is still streaming: wait for it, or call chat.stop() first."
            )
        if not (text.strip() if isinstance(text, str) else len(text)):
            raise ValueError("Nothing to send: the message is empty.")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "ChatWidget.send needs a running event loop: call it in a notebook "
                "cell (the kernel's loop), or from async code."
            ) from None
        if self._approve is True:
            params.setdefault("approve", self._approvals.ask)  # the blocks' buttons
        elif self._approve:
            params.setdefault("approve", self._approve)
        stream = self.conversation.astream(text, **params)
        self._stream = stream
        self._start_live(stream.turn)
        task = loop.create_task(self._run(stream))
        # The turn ends when the task is done, however it ends: a task cancelled
        # before its first step never runs its body, so its own finally cannot be
        # relied on. First in line, so whoever awaits the task finds the turn ended.
        task.add_done_callback(lambda _t: self._end(stream))
        self._task = task
        return task

    def stop(self) -> None:
        """Stop the reply now: the connection closes; the partial reply is kept."""
        if self._stream is not None:
            self._stream.cancel()

    def retry(self) -> asyncio.Task[Turn | None] | None:
        """Ask the last question again (after an error or a stop)."""
        for turn in reversed(self.transcript.turns):
            if turn.request.messages:
                content = turn.request.messages[-1].get("content")
                if isinstance(content, str | list):  # text, or its parts as sent
                    return self.send(content)
        return None

    def on_turn(self, callback: Callable[[Turn], None]) -> None:
        """Call ``callback(turn)`` after each turn ends (finished, stopped or failed)."""
        self._callbacks.append(callback)

    # -- the stream -------------------------------------------------------------------
    def _start_live(self, turn: Turn) -> None:
        self._live = LiveText(turn.id)
        with self.hold_sync():
            self.status = "streaming"
            self._commit()

    async def _run(self, stream: AsyncStream) -> Turn | None:
        loop = asyncio.get_running_loop()
        coalescer = Coalescer(self._push, loop)
        live = self._live
        tools = ToolFeed(
            lambda b: self.send_msg(live.tool(b)),
            coalescer.flush,
            lambda: live.text_len,
            loop,
        )
        try:
            async with stream:
                async for ev in stream:
                    if isinstance(ev, AttemptStart):  # another model took over
                        coalescer.flush()
                        self.send_msg(live.attempt(ev.note or ev.reason, ev.superseded))
                    elif not tools.add(ev):
                        coalescer.add(ev)
        except NbstreamError:
            pass  # shown in the panel (status "error", message, Retry), kept in the transcript
        except asyncio.CancelledError:
            # The task itself was cancelled (task.cancel(), a timeout): the request is
            # closed by now; the turn ends "cancelled" and the cancellation goes on.
            stream.cancel()
            raise
        finally:
            coalescer.flush()
            tools.flush()
        return stream.turn

    def _push(self, text: str, reasoning: str, with_readout: bool) -> None:
        stream = self._stream
        live = readout(stream.turn) if with_readout and stream is not None else None
        self.send_msg(self._live.delta(text, reasoning, live))

    def send_msg(self, msg: dict[str, Any]) -> None:
        """Send a custom message to every view (``anywidget``'s ``send``)."""
        super().send(msg)

    def _end(self, stream: AsyncStream) -> None:
        """The task is done: commit the turn, back to idle, tell the callbacks."""
        turn = stream.turn
        if turn.status == "streaming":
            stream.cancel()  # the task was cancelled before it started: nothing was sent
        if self._stream is stream:
            self._stream = None
        with self.hold_sync():
            if self._stream is None:
                self.status = "idle"
            self._commit()
        for cb in list(self._callbacks):
            with contextlib.suppress(
                Exception
            ):  # a user's callback must not break the panel
                cb(turn)

    # -- the messages trait, kept complete, sent as changes ------------------------------
    def _derive(self, old: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages of the transcript; a message equal to one in ``old`` is that
        same object (so that what changed is what is not identical)."""
        by_id = {m["id"]: m for m in old}
        out: list[dict[str, Any]] = []
        for turn in self.transcript:
            for msg in (user_message_of(turn), message_of(turn)):
                prev = by_id.get(msg["id"])
                out.append(prev if prev == msg else msg)
        return out

    def _commit(self) -> None:
        """Bring ``messages`` and ``totals`` up to date with the transcript.

        The trait stays complete (for a new front end and saved widget state), but its
        own sync, which would send the whole list, is suppressed: every front end gets
        one ``messages`` custom message with the messages that changed, and the
        revision it applies to. If a message went away (the transcript was edited), the
        whole list is sent as state instead.
        """
        old = self.messages
        new = self._derive(old)
        self.totals = totals(self.transcript)
        if [m["id"] for m in new[: len(old)]] != [m["id"] for m in old]:
            rev = self._messages_rev + 1
            self._floor = rev
            self._changed_at = {m["id"]: rev for m in new}
            with self.hold_sync():
                self.messages = new
                self._messages_rev = rev
            return
        upsert = [m for i, m in enumerate(new) if i >= len(old) or old[i] is not m]
        if not upsert:
            return
        base = self._messages_rev
        rev = base + 1
        for m in upsert:
            self._changed_at[m["id"]] = rev
        self._quiet = True
        try:
            self.messages = new
            self._messages_rev = rev
        finally:
            self._quiet = False
        self.send_msg(changes(base, rev, len(new), upsert))

    def _catch_up(self, rev: Any) -> None:
        """A front end at revision ``rev`` asks for what it missed."""
        current = self._messages_rev
        if type(rev) is not int or not self._floor <= rev <= current:
            self.send_state(["messages", "_messages_rev"])  # the whole list
        elif rev < current:
            upsert = [
                m for m in self.messages if self._changed_at.get(m["id"], 0) > rev
            ]
            self.send_msg(changes(rev, current, len(self.messages), upsert))

    _quiet = False  # True while _commit updates the incremental traits

    def _should_send_property(self, key: str, value: Any) -> bool:
        if self._quiet and key in _INCREMENTAL:
            return False
        return bool(super()._should_send_property(key, value))

    def set_state(self, sync_data: dict[str, Any]) -> None:
        # The kernel owns the messages: a front end never writes them (a view that
        # saved its model's changes would otherwise send the whole list back).
        state = {k: v for k, v in sync_data.items() if k not in _INCREMENTAL}
        if state:
            super().set_state(state)

    # -- from the browser ---------------------------------------------------------------
    def _handle(self, _w: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "submit" and isinstance(content.get("text"), str):
            if self.status != "streaming" and content["text"].strip():
                self.send(content["text"])
        elif kind == "stop":
            self.stop()
        elif kind == "approve":
            self._approvals.answer(content.get("id"), content.get("ok"))
        elif kind == "retry":
            if self.status != "streaming":
                self.retry()
        elif kind == "resync":
            stream = self._stream
            self.send_msg(self._live.snapshot(readout(stream.turn) if stream else None))
        elif kind == "sync":
            self._catch_up(content.get("rev"))


def _models(
    model: str | Sequence[str | Client] | None,
) -> tuple[str | None, list[str | Client]]:
    if model is None or isinstance(model, str):
        return model, []
    items = list(model)
    if not items or not isinstance(items[0], str):
        raise ValueError(
            "ChatWidget(model=[...]) starts with a model name, e.g. "
            "model=['gpt-4o-mini', 'gpt-4.1-mini', other_client]."
        )
    return items[0], items[1:]
