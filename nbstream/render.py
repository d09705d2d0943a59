"""Pure presentation helpers shared by the magic, the widget and the terminal:
the usage readout, and the final Markdown of a reply. No I/O, no IPython.

>>> escape_html_outside_code("Use <b> but `<b>` stays")
'Use &lt;b> but `<b>` stays'
"""

from __future__ import annotations

import re
from typing import Any

from .transcript import Turn

__all__ = ["escape_html_outside_code", "final_bundle", "readout", "readout_text"]

_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})", re.MULTILINE)
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)


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
    text in every Markdown renderer (JupyterLab, nbconvert, GitHub)."""
    out: list[str] = []
    pos = 0
    in_fence: str | None = None
    for m in _FENCE.finditer(md):
        fence = m.group(2)
        if in_fence is None:
            out.append(_escape_prose(md[pos : m.start()]))
            pos = m.start()
            in_fence = fence[0] * len(fence)
        elif fence[0] == in_fence[0] and len(fence) >= len(in_fence):
            end = md.find("\n", m.end())
            end = len(md) if end < 0 else end + 1
            out.append(md[pos:end])
            pos = end
            in_fence = None
    out.append(md[pos:] if in_fence is not None else _escape_prose(md[pos:]))
    return "".join(out)


def _escape_prose(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _INLINE_CODE.finditer(text):
        out.append(text[pos : m.start()].replace("<", "&lt;"))
        out.append(m.group(0))
        pos = m.end()
    out.append(text[pos:].replace("<", "&lt;"))
    return "".join(out)


def final_bundle(turn: Turn, *, show_readout: bool = True) -> dict[str, str]:
    """The reply as a display bundle (Markdown and plain text) that renders without a
    kernel or widget manager: in a saved notebook, nbconvert, GitHub."""
    parts: list[str] = []
    if turn.reasoning:
        quoted = "\n".join("> " + line for line in turn.reasoning.splitlines())
        parts.append(f"> **Reasoning**\n>\n{escape_html_outside_code(quoted)}\n")
    if turn.text:
        parts.append(escape_html_outside_code(turn.text))
    for call in turn.tool_calls:
        parts.append(f"**Tool call** `{call.name}`\n\n```json\n{call.arguments}\n```")
    if turn.refusal:
        parts.append(f"**Refusal:** {escape_html_outside_code(turn.refusal)}")
    if turn.error is not None:
        parts.append(f"**Error:** {escape_html_outside_code(turn.error.message)}")
    line = readout_text(readout(turn))
    md = "\n\n".join(parts) if parts else "*(no reply)*"
    plain = turn.text or ("(no reply)" if turn.error is None else "")
    if turn.error is not None:
        plain = (plain + "\n\n" if plain else "") + f"Error: {turn.error.message}"
    if show_readout:
        md += f"\n\n<sub>{line}</sub>"
        plain += f"\n\n[{line}]"
    return {"text/markdown": md, "text/plain": plain}
