"""The live view of one streaming reply: an anywidget that receives only deltas.

The text travels as numbered delta messages, coalesced by the caller, so kernel→browser
traffic stays linear in the reply's length; a view that starts late or misses a delta
asks for a snapshot. The view lives only while the reply streams: the magic then replaces
it with static HTML (render.py, the same rules as the view's js/src/md.js), so its one
trait is whether images may load.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import anywidget
import traitlets

from .._core.events import AttemptStart
from .._core.transcript import Turn
from .readout import readout

__all__ = ["LiveText", "ReplyView", "static_asset"]


def static_asset(name: str) -> Path:
    path = Path(str(resources.files("nbstream"))) / "static" / name
    if not path.exists():
        raise FileNotFoundError(
            f"nbstream's widget front end ({path}) is missing: this is a source checkout "
            "whose JavaScript was not built. Reinstall with `pip install .` (it builds "
            "it), or run `npm install && npm run build` in js/."
        )
    return path


class LiveText:
    """The kernel's side of the delta protocol (js/src/text_stream.js is the browser's):
    numbered deltas of a reply's text and reasoning, and a snapshot of everything so
    far for a view that starts late or missed a delta."""

    __slots__ = (
        "_notes",
        "_reasoning",
        "_seq",
        "_superseded",
        "_text",
        "_text_len",
        "_tools",
        "id",
    )

    def __init__(self, id: str = "") -> None:
        self.id = id  # which reply (a panel has several); "" for a single-reply view
        self._seq = 0
        self._text: list[str] = []
        self._text_len = 0
        self._reasoning: list[str] = []
        self._tools: dict[str, dict[str, Any]] = {}  # tool-call blocks, by key
        self._notes: list[str] = []  # how each later attempt took over
        self._superseded: list[str] = []  # replies a restart replaced

    @property
    def text_len(self) -> int:
        """How much text the views have been sent (where a tool block goes)."""
        return self._text_len

    def tool(self, block: dict[str, Any]) -> dict[str, Any]:
        """A tool-call block, new or changed (``toolblocks.py``). Not numbered: the
        newest state of a block replaces the one before; a snapshot has them all."""
        self._tools[block["key"]] = block
        msg = self._msg("tool", None)
        msg["block"] = block
        return msg

    def _msg(self, kind: str, readout: dict[str, Any] | None) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": kind, "seq": self._seq}
        if self.id:
            msg["id"] = self.id
        if readout is not None:
            msg["readout"] = readout
        return msg

    def delta(
        self, text: str, reasoning: str, readout: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self._seq += 1
        msg = self._msg("delta", readout)
        if text:
            self._text.append(text)
            self._text_len += len(text)
            msg["text"] = text
        if reasoning:
            self._reasoning.append(reasoning)
            msg["reasoning"] = reasoning
        return msg

    def attempt(
        self, note: str, superseded: bool, readout: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Another attempt takes over (fallback, recovery): a numbered delta, so it
        lands between the right pieces of text. A restart moves the text so far aside
        (shown as superseded) and the reply starts again."""
        self._seq += 1
        msg = self._msg("delta", readout)
        msg["attempt"] = {"note": note, "superseded": superseded}
        self._notes.append(note)
        if superseded:
            self._superseded.append("".join(self._text))
            self._text, self._text_len = [], 0
        return msg

    def snapshot(self, readout: dict[str, Any] | None = None) -> dict[str, Any]:
        msg = self._msg("snapshot", readout)
        msg["text"] = "".join(self._text)
        msg["reasoning"] = "".join(self._reasoning)
        if self._notes:
            msg["notes"] = list(self._notes)
            msg["superseded"] = list(self._superseded)
        if self._tools:
            msg["tools"] = list(self._tools.values())
        return msg


class ReplyView(anywidget.AnyWidget):
    """One reply, live. ``push()`` sends a delta; the magic replaces the view with
    static HTML when the turn ends."""

    _esm = static_asset("reply.js")
    _css = static_asset("reply.css")
    allow_images = traitlets.Bool(
        False, help="Show images; otherwise each is a link (not loaded)."
    ).tag(sync=True)
    structured = traitlets.Bool(
        False,
        help="The reply is JSON (response_format=): show its value so far as a table "
        "or tree, parsed in the browser from the same text deltas.",
    ).tag(sync=True)

    def __init__(
        self,
        on_stop: Callable[[], None] | None = None,
        on_approve: Callable[[Any, Any], Any] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self._live = LiveText()
        self._on_stop = on_stop
        self._on_approve = on_approve  # (call id, ok): an Approve or Deny click
        self._turn: Turn | None = None
        self.on_msg(self._handle)

    def __repr__(self) -> str:
        return "ReplyView()"

    def push(self, text: str, reasoning: str, turn: Turn | None = None) -> None:
        """Send one coalesced delta (and the live readout) to every view."""
        if turn is not None:
            self._turn = turn  # for a snapshot's readout
        self.send(self._live.delta(text, reasoning, readout(turn) if turn else None))

    @property
    def text_len(self) -> int:
        return self._live.text_len

    def tool(self, block: dict[str, Any]) -> None:
        """Send a tool-call block (new or changed) to every view."""
        self.send(self._live.tool(block))

    def attempt(self, ev: AttemptStart) -> None:
        """Another model took over: the views show how (and set aside a superseded
        reply)."""
        self.send(self._live.attempt(ev.note or ev.reason, ev.superseded))

    def _handle(self, _w: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "stop" and self._on_stop is not None:
            self._on_stop()
        elif kind == "approve" and self._on_approve is not None:
            self._on_approve(content.get("id"), content.get("ok"))
        elif kind == "resync":
            turn = self._turn
            self.send(self._live.snapshot(readout(turn) if turn else None))
