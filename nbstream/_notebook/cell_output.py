"""What a ``%%chat`` cell shows: the live view while a reply streams (then the static
HTML that replaces it), the deterministic output of a batch run, the text a terminal
prints, and ``%chat history``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from IPython.display import display
from markdown_it.common.utils import escapeHtml

from .._core.events import AttemptStart, Event, TextDelta, ToolRun
from .._core.messages import summary
from .._core.transcript import Turn
from .._http.conversation import Conversation
from .coalesce import Coalescer
from .readout import readout as readout_of
from .readout import readout_text
from .render import final_bundle, message_html, reply_html, wrap_html
from .toolblocks import Approvals, ToolFeed
from .toolview import tool_line
from .totals import totals, totals_text

if TYPE_CHECKING:
    from .._http.streams import AsyncStream, Stream

__all__ = [
    "LiveOutput",
    "batch_bundle",
    "history_html",
    "history_text",
    "keep_loop_awake",
    "running_loop",
    "terminal_text",
]


class LiveOutput:
    """The cell's output while a reply streams: a ReplyView fed coalesced deltas, then
    replaced by static HTML when the turn ends."""

    def __init__(
        self,
        stream: AsyncStream | Stream,
        allow_images: bool = False,
        approvals: Approvals | None = None,
    ) -> None:
        from .view import ReplyView  # the widget stack loads only when needed

        self.turn = stream.turn
        self.allow_images = allow_images
        self.view = ReplyView(
            on_stop=stream.cancel,
            on_approve=approvals.answer if approvals else None,
            allow_images=allow_images,
            structured=stream.turn.structured is not None,
        )
        self.handle = display(self.view, display_id=True)
        loop = running_loop()
        self._coalescer = Coalescer(self._push, loop)
        self._tools = ToolFeed(
            self.view.tool, self._coalescer.flush, lambda: self.view.text_len, loop
        )

    def _push(self, text: str, reasoning: str, with_readout: bool) -> None:
        self.view.push(text, reasoning, self.turn if with_readout else None)

    def add(self, ev: Event) -> None:
        if isinstance(ev, AttemptStart):
            self._coalescer.flush()  # the text before it goes first
            self.view.attempt(ev)
        elif not self._tools.add(ev):
            self._coalescer.add(ev)

    def finish(self, turn: Turn) -> None:
        self._coalescer.flush()
        self._tools.flush()
        # The HTML replaces the live view, which then closes: its final traits would
        # never be seen or saved, so they are not sent (that saves the text once more).
        if self.handle is not None:
            bundle = final_bundle(turn, allow_images=self.allow_images)
            self.handle.update(bundle, raw=True)
        self.view.close()


def terminal_text(ev: Event) -> str:
    """What the terminal prints of an event: the reply's text, and a line per tool
    call when it ends."""
    if isinstance(ev, TextDelta):
        return ev.text if ev.choice == 0 else ""
    if isinstance(ev, ToolRun) and ev.result is not None:
        return (
            "\n"
            + tool_line(ev.name, ev.arguments, ev.status, ev.result, ev.elapsed_s)
            + "\n"
        )
    return ""


def batch_bundle(turn: Turn, allow_images: bool = False) -> dict[str, str]:
    """A deterministic final output: no timings (they differ run to run)."""
    r = readout_of(turn)
    timings = ("ttft_s", "tokens_per_s", "elapsed_s")
    line = readout_text({k: v for k, v in r.items() if k not in timings})
    return final_bundle(
        turn, readout_line=line, allow_images=allow_images, timings=False
    )


def history_html(conv: Conversation, allow_images: bool = False) -> str:
    # each message a block of its own, its role label in an element of its own: nothing
    # a message holds can run into the label or the next message
    blocks = []
    for turn in conv.transcript:
        for m in turn.request.messages:
            role = str(m.get("role", "user"))
            blocks.append(
                message_html(role, m.get("content"), allow_images=allow_images)
            )
        reply = reply_html(turn, allow_images=allow_images)
        blocks.append(
            message_html("assistant", None, note=turn.status, body_html=reply)
        )
    if not blocks:
        blocks.append("<p><em>(no turns yet)</em></p>\n")
    else:
        line = escapeHtml(totals_text(totals(conv.transcript)))
        blocks.append(f'<p class="nbs-totals"><sub>{line}</sub></p>\n')
    return wrap_html(blocks, "history")


def history_text(conv: Conversation) -> str:
    lines = []
    for turn in conv.transcript:
        for m in turn.request.messages:
            lines.append(f"{m.get('role', 'user')}: {summary(m.get('content'))}")
        lines.append(f"assistant ({turn.status}): {turn.text}")
    if lines:
        lines.append(f"[{totals_text(totals(conv.transcript))}]")
    return "\n".join(lines) or "(no turns yet)"


async def keep_loop_awake() -> None:
    """Tick the kernel's loop at 10 Hz while a cell awaits a reply.

    ipykernel 7.4 turns the interrupt button into a cancellation of the running cell, but
    schedules it without waking the event loop, so while a stream is quiet (a slow first
    token, a stall) the interrupt would wait for the next network event, or land on the
    next cell. Measured: without the tick, 2 interrupts in 4 did nothing for 6 s; with it,
    all landed within 0.35 s.
    """
    while True:
        await asyncio.sleep(0.1)


def running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
