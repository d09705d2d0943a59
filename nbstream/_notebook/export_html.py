"""A conversation as a standalone HTML page, safe to open from anywhere.

Model text and prompts are Markdown rendered by the renderer of the cell outputs
(render.py: markdown-it-py with raw HTML shown as text, links only to http(s) and
mailto, images shown as links, never loaded); everything else (reasoning, tool
arguments and results, errors, labels) is escaped text. So the page holds no script,
no event handler and no remote resource by construction, and its Content-Security-
Policy says so too, for any browser that opens it: nothing may load or run but the
page's own inline styles and the ``data:`` thumbnails of the images that were sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from markdown_it.common.utils import escapeHtml

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
    TurnStart,
)
from .render import message_html, render_markdown, reply_html

__all__ = ["CSP", "to_html"]

CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'"
)
_ROLES = {"user": "you", "assistant": "assistant", "system": "system", "tool": "tool"}

_STYLE = """
:root { color-scheme: light dark; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --code: #f6f8fa; --accent: #1976d2; --bad: #d1242f; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1;
  --line: #3d444d; --code: #151b23; --accent: #4493f8; --bad: #f85149; } }
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.1rem; margin: 2.2rem 0 0.6rem; padding-top: 0.8rem;
  border-top: 1px solid var(--line); }
h2 small, .nbs-meta, .nbs-readout, .nbs-role em { color: var(--muted); font-weight: normal; }
.nbs-readout { font-size: 0.8rem; }
.nbs-message { margin: 0.8rem 0; }
.nbs-role { font-size: 0.85rem; text-transform: uppercase; letter-spacing: 0.03em; }
.nbs-role em { text-transform: none; letter-spacing: 0; }
.nbs-assistant > .nbs-content { border-left: 3px solid var(--accent); padding-left: 0.8rem; }
.nbs-system > .nbs-content { border-left: 3px solid var(--line); padding-left: 0.8rem; }
pre { background: var(--code); padding: 0.5rem 0.7rem; overflow-x: auto;
  white-space: pre-wrap; word-break: break-word; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
table { border-collapse: collapse; } th, td { border: 1px solid var(--line); padding: 2px 8px; }
details { margin: 0.4rem 0; } summary { cursor: pointer; color: var(--muted); }
.nbs-tool { border: 1px solid var(--line); border-radius: 4px; padding: 0.2rem 0.6rem; }
.nbs-tool-label { color: var(--muted); font-size: 0.8rem; }
.nbs-error { color: var(--bad); }
.nbs-mark { color: var(--bad); font-weight: 600; }
figure { margin: 0.5rem 0; } figcaption { color: var(--muted); font-size: 0.8rem; }
figure img { max-width: 256px; max-height: 256px; border: 1px solid var(--line); }
"""


def to_html(blocks: Iterable[Block]) -> str:
    title = "Conversation"
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            title = b.title
        body.append(_block(b))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="nbstream">\n'
        f"<title>{escapeHtml(title)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        '<body>\n<main class="nbstream-export mathjax_ignore tex2jax_ignore">\n'
        + "".join(body)
        + "</main>\n</body>\n</html>\n"
    )


def _block(b: Block) -> str:
    match b:
        case Heading(title=title, summary=summary):
            meta = f'<p class="nbs-meta">{escapeHtml(summary)}</p>\n' if summary else ""
            return f"<h1>{escapeHtml(title)}</h1>\n{meta}"
        case System(text=text):
            return message_html("system prompt", text)
        case TurnStart(number=n, when=when):
            return (
                f'<h2 id="turn-{n}">Turn {n} <small>{escapeHtml(when)}</small></h2>\n'
            )
        case Message(role=role, parts=parts, name=name):
            label = _ROLES.get(role, role)
            body = "".join(_part(p) for p in parts)
            return message_html(label, None, note=name or None, body_html=body)
        case Reply():
            return _reply(b)
        case Attempts(lines=lines):
            items = "".join(
                f"<li><code>{escapeHtml(m)}</code> · {escapeHtml(said)}</li>\n"
                for m, said in lines
            )
            return (
                f'<details class="nbs-attempts"><summary>{len(lines)} attempts'
                f"</summary>\n<ol>\n{items}</ol>\n</details>\n"
            )
        case Readout(line=line):
            return f'<p class="nbs-readout">{escapeHtml(line)}</p>\n'
    return ""


def _reply(b: Reply) -> str:
    """The reply as the cell's output shows it: a tool loop's earlier steps and a
    block per call (name, arguments, result, time), then the final step's reply."""
    marks = [s.mark for s in b.steps if isinstance(s, Step) and s.mark]
    models = list(dict.fromkeys(s.model for s in b.steps if isinstance(s, Step)))
    mark = "".join(f'<p class="nbs-mark">{escapeHtml(m)}</p>\n' for m in marks)
    body = reply_html(b.turn) or "<p><em>(no reply)</em></p>\n"
    return message_html(
        "assistant", None, note=", ".join(models), body_html=mark + body
    )


def _pre(text: str) -> str:
    return f"<pre><code>{escapeHtml(text)}</code></pre>\n"


def _part(part: Part) -> str:
    match part:
        case Text(text=text):
            return render_markdown(text)
        case Picture(number=n, thumbnail=thumb, said=said):
            caption = f"<figcaption>Image {n}: {escapeHtml(said)}</figcaption>"
            if thumb is None:
                return f"<figure>{caption}</figure>\n"
            size = (
                f' width="{thumb.width}" height="{thumb.height}"'
                if thumb.width and thumb.height
                else ""
            )
            return (
                f'<figure><img src="{thumb.url}" alt="image {n}"{size}>'
                f"{caption}</figure>\n"
            )
        case Call(name=name, arguments=arguments):
            return (
                '<details class="nbs-tool-call" open><summary>Tool call '
                f"<code>{escapeHtml(name)}</code></summary>\n"
                f"{_pre(arguments)}</details>\n"
            )
        case Other(kind=kind, text=text):
            return f"<p><em>A {escapeHtml(kind)} part:</em></p>\n{_pre(text)}"
    return ""
