"""A conversation as a document: what ``Transcript.to_markdown()``, ``to_html()`` and
``save("chat.md" | "chat.html")`` write.

``walk`` reads a transcript once into a flat list of blocks (the title and totals, the
system prompt, and per turn: its messages, its reply with each model step and tool
result, the attempts, the readout); export_md.py and export_html.py each write every
kind of block. A tool loop's steps are read in one place, ``_steps``.

Everything the model, a server or a prompt wrote is hostile to the document: each
writer says how it keeps it inert.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .._core.messages import neutral_calls
from .._core.transcript import Transcript, Turn
from .readout import readout, readout_text
from .thumbnail import Thumbnail, thumbnail_of
from .totals import totals, totals_text

__all__ = [
    "Attempts",
    "Call",
    "Heading",
    "Message",
    "Other",
    "Picture",
    "Readout",
    "Reply",
    "Step",
    "System",
    "Text",
    "ToolRun",
    "TurnStart",
    "walk",
]

DEFAULT_TITLE = "Conversation"
MAX_OTHER = 2000  # characters of a content part nbstream does not know, shown as JSON


# -- the parts of a message ---------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Picture:
    """An image that was sent: a thumbnail from its bytes, or (sent by URL, or not an
    image that can be embedded) only what it was."""

    number: int
    thumbnail: Thumbnail | None
    said: str  # "image/png, 1280x720, 412 KB" or "https://… (not loaded)"


@dataclass(frozen=True)
class Call:
    """A tool call inside a sent message (history, or a tool loop's)."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class Other:
    """A content part of a kind shown as its JSON (a file, audio, a tool result …)."""

    kind: str
    text: str


Part = Text | Picture | Call | Other


# -- the blocks of the document ------------------------------------------------------------


@dataclass(frozen=True)
class Heading:
    title: str
    summary: str  # the totals line
    turns: int


@dataclass(frozen=True)
class System:
    text: str


@dataclass(frozen=True)
class TurnStart:
    number: int
    when: str  # UTC, to the minute


@dataclass(frozen=True)
class Message:
    role: str  # user, assistant, tool, system
    parts: list[Part]
    name: str = ""  # a tool message's tool


@dataclass(frozen=True)
class Step:
    """One model step of a turn: its reply (reasoning, text, tool calls, refusal,
    error); ``model`` is who wrote it, ``mark`` a status worth saying."""

    turn: Turn
    model: str
    mark: str


@dataclass(frozen=True)
class ToolRun:
    """What a tool call of a tool loop did (a ``ToolResult``)."""

    name: str
    arguments: str
    status: str
    result: str
    error: str | None
    elapsed_s: float | None


@dataclass(frozen=True)
class Reply:
    """The reply to a turn: its model steps and tool results in order (one step, for
    a reply without tools); ``turn`` is the turn itself (the last step)."""

    turn: Turn
    steps: list[Step | ToolRun]


@dataclass(frozen=True)
class Attempts:
    """Every try at a reply, when it took more than one (fallback, recovery)."""

    lines: list[tuple[str, str]]  # (model, "fallback · error: …")


@dataclass(frozen=True)
class Readout:
    line: str


Block = Heading | System | TurnStart | Message | Reply | Attempts | Readout

MARKS = {
    "complete": "",
    "cancelled": "stopped",
    "error": "failed",
    "incomplete": "incomplete: the stream ended early",
    "streaming": "still streaming when exported",
}


def walk(transcript: Transcript, title: str | None = None) -> list[Block]:
    """The document, block by block."""
    blocks: list[Block] = [
        Heading(
            title or DEFAULT_TITLE,
            totals_text(totals(transcript)),
            len(transcript),
        )
    ]
    if transcript.system:
        blocks.append(System(transcript.system))
    pictures = _Counter()
    for number, turn in enumerate(transcript, 1):
        blocks.append(TurnStart(number, _when(turn.created_at)))
        system = turn.request.system
        if system and system != transcript.system:
            blocks.append(System(system))
        for m in turn.request.messages:
            blocks.append(_message(m, pictures))
        blocks.append(Reply(turn, list(_steps(turn))))
        attempts = turn.attempts
        if len(attempts) > 1:
            blocks.append(Attempts([_attempt_line(a) for a in attempts]))
        blocks.append(Readout(readout_text(readout(turn))))
    return blocks


def _steps(turn: Turn) -> Iterator[Step | ToolRun]:
    """The model steps and tool results of a reply, in order (``turn.steps``: a
    tool loop's, the turn itself last; a reply without tools is its only step)."""
    for s in turn.steps:
        if isinstance(s, Turn):
            yield Step(s, s.model or s.request.model, MARKS.get(s.status, s.status))
        else:
            yield ToolRun(s.name, s.arguments, s.status, s.result, s.error, s.elapsed_s)


def _attempt_line(a: Any) -> tuple[str, str]:
    said = [a.strategy, MARKS.get(a.status, a.status) or "complete"]
    if a.error is not None:
        said.append(f"{a.error.kind}: {a.error.message}")
    if a.note:
        said.append(a.note)
    return a.model, " · ".join(said)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- messages ------------------------------------------------------------------------------


@dataclass
class _Counter:
    n: int = field(default=0)

    def next(self) -> int:
        self.n += 1
        return self.n


def _message(m: Any, pictures: _Counter) -> Message:
    if not isinstance(m, dict):
        return Message("user", [Other("message", _json(m))])
    role = str(m.get("role") or "user")
    content = m.get("content")
    parts: list[Part] = []
    if isinstance(content, str):
        parts.append(Text(content))
    elif isinstance(content, list):
        parts += [_part(p, pictures) for p in content]
    elif content is not None:
        parts.append(Other("content", _json(content)))
    for c in neutral_calls(m.get("tool_calls")):
        parts.append(Call(str(c["name"]), str(c["arguments"]), str(c["id"])))
    name = m.get("name") if role == "tool" else ""
    return Message(role, parts, str(name or ""))


def _part(p: Any, pictures: _Counter) -> Part:
    if not isinstance(p, dict):
        return Text(p) if isinstance(p, str) else Other("part", _json(p))
    kind = p.get("type")
    if kind == "text" and isinstance(p.get("text"), str):
        return Text(p["text"])
    found = _image(p)
    if found is not None:
        media, data, url = found
        number = pictures.next()
        if data is not None:
            thumb = thumbnail_of(media, data)
            said = thumb.sent if thumb else f"{media} (not an image that can be shown)"
            return Picture(number, thumb, said)
        return Picture(number, None, f"{url} (not loaded)")
    if kind == "tool_use":  # Anthropic's own form, in a history
        return Call(str(p.get("name", "")), _json(p.get("input")), str(p.get("id", "")))
    return Other(str(kind or "part"), _json(p))


def _image(p: dict[str, Any]) -> tuple[str, str | None, str | None] | None:
    """(media type, base64, url) of an image part in any of the forms a message may
    hold: nbstream's neutral one, OpenAI's ``image_url``, Anthropic's ``source``."""
    kind = p.get("type")
    if kind == "image_url":
        url = (p.get("image_url") or {}).get("url")
        if not isinstance(url, str):
            return None
        if url.startswith("data:") and ";base64," in url:
            declared, b64 = url[5:].split(";base64,", 1)
            return declared or "image", b64, None
        return "image", None, url
    if kind != "image":
        return None
    source = p.get("source")
    if isinstance(source, dict):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            return str(source.get("media_type") or "image"), source["data"], None
        link = source.get("url")
        return ("image", None, link) if isinstance(link, str) else None
    data, address = p.get("data"), p.get("url")
    media = str(p.get("media_type") or "image")
    if isinstance(data, str):
        return media, data, None
    return (media, None, address) if isinstance(address, str) else None


def _json(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, indent=1, default=repr)
    except ValueError:
        text = repr(value)
    return text if len(text) <= MAX_OTHER else text[:MAX_OTHER] + " …"
