"""The record: ``Turn`` (one request and its reply) and ``Transcript`` (a conversation).

Plain data, no I/O but ``save``/``load``. A turn is always current: while it streams,
``turn.text`` is the text so far. Stopped and failed turns are kept, partial text included.

The one import that runs up a layer: ``to_markdown`` / ``to_html`` (and ``save`` to
``.md`` / ``.html``) are here because a user looks for them on the transcript, but the
documents are drawn by the renderers in ``nbstream._notebook.export*``, imported when
called. Nothing else in ``_core`` reaches above it.

>>> t = Transcript()
>>> len(t), t.to_messages()
(0, [])
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from .record import Attempt
from .reply import Choice, TextBuffer, ToolCall
from .toolresult import ToolResult
from .turn import Api, ErrorInfo, Metrics, Request, Status, Turn

if TYPE_CHECKING:
    import pandas

__all__ = [
    "Api",
    "Attempt",
    "Choice",
    "ErrorInfo",
    "Metrics",
    "Request",
    "Status",
    "TextBuffer",
    "ToolCall",
    "ToolResult",
    "Transcript",
    "Turn",
]

FORMAT_VERSION = 1


class Transcript:
    """The turns of a conversation, every one kept: finished, stopped or failed.

    >>> tr = Transcript()
    >>> tr.to_json()[:31]
    '{"format": "nbstream.transcript'
    """

    def __init__(
        self, turns: list[Turn] | None = None, *, system: str | None = None
    ) -> None:
        self.turns: list[Turn] = list(turns or [])
        self.system = system

    def append(self, turn: Turn) -> None:
        self.turns.append(turn)

    def clear(self) -> None:
        self.turns.clear()

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self) -> Iterator[Turn]:
        return iter(self.turns)

    def __getitem__(self, i: int) -> Turn:
        return self.turns[i]

    def __repr__(self) -> str:
        by: dict[str, int] = {}
        for t in self.turns:
            by[t.status] = by.get(t.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in by.items())
        return (
            f"<Transcript {len(self.turns)} turns{': ' + summary if summary else ''}>"
        )

    def to_messages(
        self, api: Api = "openai", *, include_system: bool = True
    ) -> list[dict[str, Any]]:
        """The history to send next, in ``api``'s format.

        Failed turns (``status == "error"``) are left out entirely, so a retried question
        is not sent twice; stopped and incomplete turns go in with their partial reply.
        For ``api="openai"`` the system prompt is the first message; Anthropic takes it
        as a separate parameter, so it is left out there.
        """
        from .providers import provider_for

        system = self.system if include_system else None
        out = provider_for(api).history(self.turns, system)
        return copy.deepcopy(out)  # editing the history must not edit the record

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "nbstream.transcript",
            "version": FORMAT_VERSION,
            "system": self.system,
            "turns": [t.to_dict() for t in self.turns],
        }

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transcript:
        if not isinstance(d, dict) or d.get("format") != "nbstream.transcript":
            raise ValueError(
                "not an nbstream transcript (no 'format': 'nbstream.transcript')"
            )
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"transcript format version {d.get('version')!r} is not supported by this "
                f"nbstream (it reads version {FORMAT_VERSION}); upgrade nbstream"
            )
        return cls([Turn.from_dict(t) for t in d["turns"]], system=d.get("system"))

    @classmethod
    def from_json(cls, text: str) -> Transcript:
        return cls.from_dict(cast(dict[str, Any], json.loads(text)))

    def to_markdown(self, *, title: str | None = None) -> str:
        """The conversation as a Markdown document, readable as plain text: the system
        prompt, each turn's messages (images as thumbnails), reply, reasoning, tool
        calls, readout and cost, stopped and failed turns marked. What the model or a
        server wrote is in code blocks, inert in any Markdown renderer."""
        from .._notebook.export import walk
        from .._notebook.export_md import to_markdown

        return to_markdown(walk(self, title))

    def to_html(self, *, title: str | None = None) -> str:
        """The conversation as a standalone HTML page: replies rendered as in the
        notebook, nothing that can run or load (a Content-Security-Policy says so)."""
        from .._notebook.export import walk
        from .._notebook.export_html import to_html

        return to_html(walk(self, title))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the transcript, atomically (a crash leaves the old file): as a
        document for ``.md`` / ``.markdown`` and ``.html`` / ``.htm``
        (``to_markdown``, ``to_html``), else as JSON, the form ``load`` reads back."""
        suffix = os.path.splitext(os.fspath(path))[1].lower()
        if suffix in (".md", ".markdown"):  # serialise before any file is touched
            data = self.to_markdown().encode("utf-8", "replace")
        elif suffix in (".html", ".htm"):
            data = self.to_html().encode("utf-8", "replace")
        else:
            try:
                data = self.to_json(indent=1).encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates (a pair split across chunks):
                data = json.dumps(self.to_dict(), indent=1).encode()  # \u escapes
        tmp = f"{os.fspath(path)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Transcript:
        with open(path, encoding="utf-8") as f:
            return cls.from_json(f.read())

    def to_pandas(self) -> pandas.DataFrame:
        """One row per turn (per model step of a tool loop, with its tool calls in
        ``tool_results``): status, tokens, latency, tokens/s, text …"""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "Transcript.to_pandas() needs pandas, which is not installed. "
                'Install it with: pip install "nbstream[pandas]"  (or: pip install pandas)'
            ) from None
        return pd.DataFrame([row for t in self.turns for row in _rows(t)])


def _rows(turn: Turn) -> list[dict[str, Any]]:
    """A row per model step of ``turn`` (one for a turn without tools): its numbers,
    ``step`` (0, 1 …), and ``tool_results``: the calls it made and what came of each
    (name, arguments, result, status, time). ``turn_id`` and ``prompt`` are the
    turn's, so ``groupby("turn_id")`` gathers a tool loop."""
    first = turn.to_row()
    rows: list[dict[str, Any]] = []
    for s in turn.steps:
        if isinstance(s, ToolResult):
            if rows:
                rows[-1]["tool_results"].append(s.to_row())
            continue
        row = first if s is turn else s.to_row()
        row.update(
            turn_id=turn.id,
            prompt=first["prompt"],
            step=len(rows),
            step_id=s.id,
            tool_results=[],
        )
        rows.append(row)
    return rows
