"""Pure presentation helpers shared by the magic, the widget and the terminal:
the usage readout, and the final Markdown of a reply. No I/O, no IPython.

>>> escape_html_outside_code("Use <b> but `<b>` stays")
'Use &lt;b> but `<b>` stays'
"""

from __future__ import annotations

import re
from typing import Any

from .._core.transcript import Turn

__all__ = ["escape_html_outside_code", "final_bundle", "readout", "readout_text"]

_NEWLINE = re.compile(r"(\r\n|\r|\n)")  # Markdown's line endings, and no others
_OPEN = re.compile(r"( {0,3})(`{3,}|~{3,})(.*)")
_CLOSE_LIKE = re.compile(r"[ \t]*(`+|~+)[`~]*[ \t]*")
_TICKS = re.compile(r"`+")
# In a paragraph with any of these, a renderer may pair backticks differently from
# CommonMark (links, autolinks, link definitions, table cells, escapes, math).
_UNSURE = ("](", "]:", "://", "www.", "|", "\\", "$")


def readout(turn: Turn) -> dict[str, Any]:
    """The numbers of the readout, as plain data (JSON-able)."""
    u, m = turn.usage, turn.metrics
    estimated = u.estimated if u is not None else m.output_tokens_estimated
    return {
        "status": turn.status,
        "ttft_s": m.ttft_s,
        "input_tokens": u.input_tokens if u else None,
        "output_tokens": u.output_tokens
        if u and u.output_tokens is not None
        else m.deltas,
        "estimated": estimated,
        "tokens_per_s": m.tokens_per_s,
        "elapsed_s": m.elapsed_s,
        "finish_reason": turn.finish_reason,
    }


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{round(s * 1000)} ms" if s < 1 else f"{s:.2f} s"


def readout_text(r: dict[str, Any]) -> str:
    """One line: ``complete · first token 120 ms · 12 in · 80 out tokens · …``."""
    parts = [str(r.get("status") or "")]
    if r.get("ttft_s") is not None:
        parts.append(f"first token {_fmt_s(r['ttft_s'])}")
    if r.get("input_tokens") is not None or r.get("output_tokens") is not None:
        est = "~" if r.get("estimated") else ""
        inp = r.get("input_tokens")
        out = r.get("output_tokens")
        parts.append(
            f"{est}{inp if inp is not None else '?'} in · "
            f"{est}{out if out is not None else '?'} out tokens"
            + (" (estimated)" if est else "")
        )
    if r.get("tokens_per_s") is not None:
        parts.append(f"{r['tokens_per_s']:.1f} tok/s")
    if r.get("elapsed_s") is not None:
        parts.append(_fmt_s(r["elapsed_s"]))
    if r.get("finish_reason"):
        parts.append(f"finish: {r['finish_reason']}")
    return " · ".join(p for p in parts if p)


def escape_html_outside_code(md: str) -> str:
    """Escape ``<`` outside code spans and fences, so raw HTML in a reply shows as
    text in every Markdown renderer (JupyterLab, nbconvert, GitHub).

    Code is left as it is only where CommonMark and marked agree that it is code;
    where that is in doubt, ``<`` is escaped there too: ``&lt;`` shown in code is a
    lesser evil than live HTML from a model.
    """
    return _escape(md)[0]


def _escape(md: str) -> tuple[str, str | None, bool]:
    """``(escaped, closer, unsure)``: ``closer`` is the line that closes the fence
    ``md`` ends in (if any); ``unsure``: the block structure at the end is in doubt."""
    out: list[str] = []
    para: list[str] = []  # the lines of the current paragraph, not yet escaped
    fence: tuple[str, int, int] | None = None  # its character, length, indentation
    unsure = False  # from here on, everything is escaped
    nested = False  # a fence may have opened inside a list item or quote ("- ```")
    pieces = _NEWLINE.split(md)
    for i in range(0, len(pieces), 2):
        line = pieces[i]
        end = pieces[i + 1] if i + 1 < len(pieces) else ""
        if unsure:
            out.append(line.replace("<", "&lt;") + end)
        elif fence is None:
            m = _OPEN.fullmatch(line)
            if m and not (m[2][0] == "`" and "`" in m[3]):
                # In doubt: an indented fence may close a nested one ("- ```") instead;
                # marked lets a link definition take this line as its target, and
                # markdown-it may read a line with a "|" as a table's first row.
                unsure = (
                    (nested and m[1] != "")
                    or "|" in m[3]
                    or any("]:" in p for p in para)
                )
                nested = nested and m[1] != ""  # at the margin it ends every list
                out.append(_escape_prose("".join(para)))
                para = []
                fence = (m[2][0], len(m[2]), len(m[1]))
                out.append(m[1] + m[2] + m[3].replace("<", "&lt;") + end)
            elif line.strip(" "):
                para.append(line + end)
                nested = nested or "```" in line or "~~~" in line
            else:  # a blank line ends the paragraph
                out.append(_escape_prose("".join(para)) + line + end)
                para = []
        else:
            char, length, indent = fence
            width = len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip(" "))
            c = _CLOSE_LIKE.fullmatch(line)
            if indent and line.strip(" \t") and width < indent:
                unsure = True  # this may have ended a list item, and the fence in it
            elif c is not None and c[1][0] == char and len(c[1]) >= length:
                if re.fullmatch(f" {{0,3}}{re.escape(char)}+ *", line):
                    out.append(line + end)
                    fence = None
                    continue
                unsure = width < 4 or indent > 0  # a closer to some renderers only
            out.append(line.replace("<", "&lt;") + end if unsure else line + end)
    out.append(_escape_prose("".join(para)))
    if fence is None or unsure:
        return "".join(out), None, unsure
    return "".join(out), " " * fence[2] + fence[0] * fence[1], False


def _escape_prose(text: str) -> str:
    """Escape ``<`` in one paragraph, except in its code spans (CommonMark pairing:
    a run of backticks closes at the next run of the same length)."""
    if "<" not in text:
        return text
    runs = list(_TICKS.finditer(text))
    following: list[int | None] = [None] * len(runs)
    last: dict[int, int] = {}
    for i in range(len(runs) - 1, -1, -1):
        n = len(runs[i][0])
        following[i] = last.get(n)
        last[n] = i
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(runs):
        j = following[i]
        if j is None:
            i += 1
            continue
        spans.append((runs[i].start(), runs[j].end()))
        i = j + 1
    if any(u in text for u in _UNSURE) or any(
        "\n" in text[a:b] or "\r" in text[a:b] for a, b in spans
    ):
        spans = []  # a renderer may pair these backticks differently
    out: list[str] = []
    pos = 0
    for a, b in spans:
        out.append(text[pos:a].replace("<", "&lt;"))
        out.append(text[a:b])
        pos = b
    out.append(text[pos:].replace("<", "&lt;"))
    return "".join(out)


def final_bundle(turn: Turn, *, show_readout: bool = True) -> dict[str, str]:
    """The reply as a display bundle (Markdown and plain text) that renders without a
    kernel or widget manager: in a saved notebook, nbconvert, GitHub."""
    parts: list[str] = []
    if turn.reasoning:
        quoted = "\n".join("> " + line for line in turn.reasoning.splitlines())
        parts.append(f"> **Reasoning**\n>\n{quoted}\n")
    if turn.text:
        parts.append(turn.text)
    for call in turn.tool_calls:
        # a fence longer than any run of backticks in the arguments, which cannot end it
        ticks = max((len(t) for t in _TICKS.findall(call.arguments)), default=0)
        fence = "`" * max(3, ticks + 1)
        parts.append(
            f"**Tool call** `{call.name}`\n\n{fence}json\n{call.arguments}\n{fence}"
        )
    if turn.refusal:
        parts.append(f"**Refusal:** {turn.refusal}")
    if turn.error is not None:
        parts.append(f"**Error:** {turn.error.message}")
    # Each part is escaped, and a fence it leaves open (a reply stopped in the middle
    # of a code block) is closed, so what follows is not shown as code.
    escaped: list[str] = []
    unsure = False
    for part in parts:
        if unsure:  # the structure is in doubt: nothing after it is left as it is
            escaped.append(part.replace("<", "&lt;"))
            continue
        text, closer, unsure = _escape(part)
        if closer is not None:
            text += ("" if text.endswith(("\n", "\r")) else "\n") + closer
        escaped.append(text)
    md = "\n\n".join(escaped) if escaped else "*(no reply)*"
    line = readout_text(readout(turn))
    said = [turn.text] if turn.text else []
    said += [f"Tool call {c.name}: {c.arguments}" for c in turn.tool_calls]
    if turn.refusal:
        said.append(f"Refusal: {turn.refusal}")
    if turn.error is not None:
        said.append(f"Error: {turn.error.message}")
    plain = "\n\n".join(said) or "(no reply)"
    if show_readout:
        # escaped too: the finish reason in it is whatever the server sent
        md += f"\n\n<sub>{line.replace('<', '&lt;')}</sub>"
        plain += f"\n\n[{line}]"
    return {"text/markdown": md, "text/plain": plain}
