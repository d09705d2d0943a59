"""The tool calls of a reply in the final output, as static HTML and plain text: each
call a compact block (name, arguments, status and time on one line; the arguments and
the result inside, collapsed), between the texts of the model steps around it. Pure
functions, no I/O. Everything a model or a tool wrote is escaped: a block is inert
whatever its arguments or result contain. js/src/tool_blocks.js draws the same block
in the live views.

>>> b = {"name": "lookup", "arguments": '{"city": "<b>"}', "status": "complete",
...      "result": "21 C", "is_error": False, "elapsed_s": 0.012}
>>> block_summary(b)
'lookup({"city": "<b>"}) · done · 12 ms'
"""

from __future__ import annotations

import html
import json
from typing import Any

from .._core.transcript import Turn
from .toolblocks import loop_view

__all__ = [
    "STATUS",
    "Html",
    "block_html",
    "block_summary",
    "is_loop",
    "loop_parts",
    "loop_text",
    "tool_line",
]

STATUS = {  # keep in step with js/src/tool_blocks.js
    "streaming": "…",
    "approval": "waiting for approval",
    "running": "running…",
    "complete": "done",
    "error": "error",
    "denied": "denied",
    "cancelled": "stopped",
    "background": "stopped (still running in the background)",
    "skipped": "not run (step limit)",
    "not run": "not run",
}
SUMMARY_ARGS = 80  # characters of the arguments on the block's one line


def _time(s: Any) -> str:
    if not isinstance(s, int | float):
        return ""
    return f"{round(s * 1000)} ms" if s < 1 else f"{s:.2f} s"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def block_summary(b: dict[str, Any], *, timings: bool = True) -> str:
    """The block's one line: ``name(arguments) · status · time`` (not escaped;
    without the time when ``timings`` is false: a batch run's output is the same run
    to run)."""
    status = str(b.get("status") or "")
    parts = [
        f"{b.get('name') or '?'}({_short(str(b.get('arguments') or ''), SUMMARY_ARGS)})",
        STATUS.get(status, status),
    ]
    took = _time(b.get("elapsed_s")) if timings else ""
    if took and status not in ("streaming", "approval", "running"):
        parts.append(took)
    return " · ".join(p for p in parts if p)


def _pretty(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def _esc(text: str) -> str:
    """Escaped, its line breaks as character references: a block stays on one line,
    so that it is one HTML block inside Markdown too (a blank line would end it)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return html.escape(text, quote=True).replace("\n", "&#10;")


def block_html(b: dict[str, Any], *, timings: bool = True) -> str:
    """One call as a collapsed ``<details>`` block, on one line; every text in it
    escaped."""
    inner = [
        '<div class="nbs-tool-label">arguments</div>'
        f"<pre><code>{_esc(_pretty(str(b.get('arguments') or '{}')))}</code></pre>"
    ]
    if b.get("result") is not None:
        label = "error" if b.get("is_error") else "result"
        inner.append(
            f'<div class="nbs-tool-label">{label}</div>'
            f"<pre><code>{_esc(str(b['result']))}</code></pre>"
        )
    status = _esc(str(b.get("status") or ""))
    return (
        f'<details class="nbs-tool" data-status="{status}">'
        f"<summary>{_esc(block_summary(b, timings=timings))}</summary>"
        + "".join(inner)
        + "</details>"
    )


class Html(str):
    """A part of an output that is HTML already (a block): not to be escaped."""

    __slots__ = ()


def is_loop(turn: Turn) -> bool:
    """Was ``turn`` asked with tools (a loop, even if no call was made)?"""
    return bool(turn._steps or turn.request.tools)


def _pieces(turn: Turn) -> list[str | dict[str, Any]]:
    """The earlier steps' texts and the calls' blocks, in order (the final step's
    text is the reply's own part); a call of the final step (stopped while the model
    wrote it) comes last."""
    text, blocks = loop_view(turn)
    final = len(text) - len(turn.text)  # where the final step's text starts
    out: list[str | dict[str, Any]] = []
    pos = 0
    for b in blocks:
        at = min(int(b["at"]), final)
        if at > pos:
            out.append(text[pos:at])
            pos = at
        out.append(b)
    if final > pos:
        out.append(text[pos:final])
    return out


def loop_parts(turn: Turn, *, timings: bool = True) -> list[str]:
    """The parts of a tool loop's output before its reply: each earlier step's text
    (model text: render it as the reply is) and each call's block (``Html``). Empty
    for a turn without tools, whose output is its reply alone."""
    if not is_loop(turn):
        return []
    return [
        p if isinstance(p, str) else Html(block_html(p, timings=timings))
        for p in _pieces(turn)
    ]


def loop_text(turn: Turn, *, timings: bool = True) -> list[str]:
    """The same as plain text: the earlier steps' texts and a line per call."""
    if not is_loop(turn):
        return []
    return [
        p
        if isinstance(p, str)
        else tool_line(
            p["name"],
            p["arguments"],
            p["status"],
            p["result"],
            p["elapsed_s"] if timings else None,
        )
        for p in _pieces(turn)
    ]


def tool_line(
    name: str,
    arguments: str,
    status: str,
    result: str | None,
    elapsed_s: float | None,
) -> str:
    """``[tool lookup({"city": "Paris"}) · done · 12 ms → 21 C]`` for the terminal and
    the plain-text output."""
    b = {"name": name, "arguments": arguments, "status": status, "elapsed_s": elapsed_s}
    said = f" → {_short(result, 200)}" if result else ""
    return f"[tool {block_summary(b)}{said}]"
