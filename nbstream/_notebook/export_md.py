"""A conversation as Markdown: readable as plain text, and inert in every common renderer
(GitHub, VS Code, JupyterLab, or any CommonMark renderer with raw HTML switched on).

How what others wrote is kept inert — model text, reasoning, prompts, tool arguments
and results, error messages, and short labels such as the model's name:

- **Anything that may span lines goes in a fenced code block**, as it was written.
  Inside a fence CommonMark parses nothing (no HTML, no links, no images, no entities,
  no emphasis), every renderer shows it as text, and a copy of it is the exact text.
  The fence is a run of backticks longer than any run of backticks anywhere in the
  document's fenced text, so no line of the text can close it early; every fence of
  the document has that same length, and they open and close in pairs with nothing
  but our own lines between them.
- **A label goes in a code span** (line breaks made spaces, a backtick run longer than
  any inside it), likewise parsed as nothing.
- **Our own words** are fixed text and numbers; a title the caller gives is written
  with every character but letters, digits and spaces as a numeric character
  reference (``&#60;``), which Markdown shows as that character and never parses.

Why not escape the model's Markdown and let it render (tables, emphasis)? Escaping
rules differ between renderers and their extensions (GitHub's autolinks and math,
JupyterLab's math, which it lifts out of the text *before* parsing Markdown), and a
rule missed is a live element. A code block is the one construct that all of them
leave alone. JupyterLab's math pass is the subtle one: it protects fenced blocks and
code spans from it, and ``$`` appears nowhere else in the document (costs are inside
code spans), so no math span can start outside a fence; and since every fence has the
same length, even a renderer whose math pass ignored fences would, at worst, hide
whole fences in pairs. The HTML export (export_html.py) is the one that renders the
model's Markdown.

Images that were sent are embedded as thumbnails from their bytes: an image
reference in the text and its ``data:`` URL in a definition at the end of the document
(base64 we wrote again ourselves), so the text stays readable. An image sent by URL is
its address in a code span, never loaded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .export import (
    Attempts,
    Block,
    Call,
    Heading,
    Message,
    Other,
    Part,
    Picture,
    Readout,
    Reply,
    Step,
    System,
    Text,
    ToolRun,
    TurnStart,
)

__all__ = ["to_markdown"]

_TICKS = re.compile(r"`+")
# every line break a Markdown, HTML or JavaScript reader knows, and other controls
_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_ROLES = {
    "user": "You",
    "assistant": "Assistant",
    "system": "System",
    "tool": "Tool result",
}


class _Fence:
    """A fenced block, written once the document's fence length is known."""

    __slots__ = ("info", "text")

    def __init__(self, text: str, info: str = "text") -> None:
        self.text, self.info = text, info


Piece = str | _Fence


def to_markdown(blocks: Iterable[Block]) -> str:
    pieces: list[Piece] = []
    images: list[str] = []
    for b in blocks:
        pieces += _block(b, images)
    fenced = [p.text for p in pieces if isinstance(p, _Fence)]
    longest = max((len(run) for t in fenced for run in _TICKS.findall(t)), default=0)
    fence = "`" * max(3, longest + 1)
    out: list[str] = []
    for p in pieces:
        if isinstance(p, _Fence):
            body = (
                p.text if p.text.endswith(("\n", "\r")) or not p.text else p.text + "\n"
            )
            out.append(f"{fence}{p.info}\n{body}{fence}\n\n")
        else:
            out.append(p)
    if images:
        out.append("\n".join(images) + "\n")
    return "".join(out).rstrip("\n") + "\n"


def span(text: str) -> str:
    """``text`` as a code span on one line: parsed as nothing."""
    text = _BREAKS.sub(" ", text)
    if not text:
        return "` `"
    longest = max((len(run) for run in _TICKS.findall(text)), default=0)
    ticks = "`" * (longest + 1)
    return f"{ticks} {text} {ticks}"


def words(text: str) -> str:
    """A caller's text (a title) as plain words: every other character a reference."""
    text = _BREAKS.sub(" ", text)
    return "".join(c if c.isalnum() or c == " " else f"&#{ord(c)};" for c in text)


def _block(b: Block, images: list[str]) -> list[Piece]:
    match b:
        case Heading(title=title, summary=summary):
            out: list[Piece] = [f"# {words(title) or 'Conversation'}\n\n"]
            if summary:
                out.append(f"{span(summary)}\n\n")
            return out
        case System(text=text):
            return ["**System prompt**\n\n", _Fence(text)]
        case TurnStart(number=n, when=when):
            return [f"---\n\n## Turn {n}\n\n", f"*{when}*\n\n"]
        case Message(role=role, parts=parts, name=name):
            label = _ROLES.get(role, "Message")
            head = f"**{label}**" + (f" {span(name)}" if name else "")
            if role not in _ROLES:
                head += f" ({span(role)})"
            out = [head + "\n\n"]
            for part in parts:
                out += _part(part, images)
            return out
        case Reply(steps=steps):
            out = []
            for s in steps:
                out += _step(s) if isinstance(s, Step) else _tool_run(s)
            return out
        case Attempts(lines=lines):
            items = "".join(
                f"{i}. {span(m)} {span(said)}\n" for i, (m, said) in enumerate(lines, 1)
            )
            return [f"*Attempts*\n\n{items}\n"]
        case Readout(line=line):
            return [f"{span(line)}\n\n"]
    return []


def _step(b: Step) -> list[Piece]:
    turn = b.turn
    head = f"**Assistant** {span(b.model)}"
    if b.mark:
        head += f" · **{words(b.mark)}**"
    out: list[Piece] = [head + "\n\n"]
    if turn.reasoning:
        out += ["*Reasoning*\n\n", _Fence(turn.reasoning)]
    if turn.text:
        out.append(_Fence(turn.text))
    for call in turn.tool_calls:
        out += _call(Call(call.name, call.arguments, call.id))
    if turn.refusal:
        out += ["*Refusal*\n\n", _Fence(turn.refusal)]
    if turn.error is not None:
        out += [f"*Error* {span(turn.error.kind)}\n\n", _Fence(turn.error.message)]
    if not (
        turn.text or turn.reasoning or turn.tool_calls or turn.refusal or turn.error
    ):
        out.append("*(no reply)*\n\n")
    return out


def _tool_run(b: ToolRun) -> list[Piece]:
    took = f" · {b.elapsed_s:.2f} s" if b.elapsed_s is not None else ""
    out: list[Piece] = [f"**Tool result** {span(b.name)} · {span(b.status)}{took}\n\n"]
    out.append(_Fence(b.result))
    if b.error and b.error != b.result:
        out += ["*Error*\n\n", _Fence(b.error)]
    return out


def _call(c: Call) -> list[Piece]:
    ident = f" {span(c.id)}" if c.id else ""
    return [f"**Tool call** {span(c.name)}{ident}\n\n", _Fence(c.arguments, "json")]


def _part(part: Part, images: list[str]) -> list[Piece]:
    match part:
        case Text(text=text):
            return [_Fence(text)]
        case Picture(number=n, thumbnail=thumb, said=said):
            if thumb is None:
                return [f"*Image {n}:* {span(said)}\n\n"]
            images.append(f"[image-{n}]: {thumb.url}")
            return [f"![image {n}][image-{n}]\n*Image {n}:* {span(said)}\n\n"]
        case Call():
            return _call(part)
        case Other(kind=kind, text=text):
            return [f"*A {span(kind)} part*\n\n", _Fence(text, "json")]
    return []
