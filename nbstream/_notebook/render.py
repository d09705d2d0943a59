"""Pure presentation helpers shared by the magic, the widget and the terminal: the final
HTML of a reply (the usage readout is ``readout.py``). No I/O, no IPython.

Model text is Markdown rendered by markdown-it-py, a port of markdown-it 14.1.0, the
renderer the live views use (js/src/md.js), with the same options and rules, so the
saved output shows what the live view showed:

- CommonMark, plus GFM tables and strikethrough; no linkify, no typographer.
- Raw HTML in the text is shown as text.
- Links only to ``http:``, ``https:`` and ``mailto:``, opening in a new tab without the
  opener or the referrer; anything else (``javascript:``, ``data:``, relative) is text.
- Images are links ("image: ALT", not loaded) unless ``allow_images``: a remote image
  loads without a click, the usual way a prompt-injected reply sends data out. Even when
  allowed, only ``http(s)`` images load.

Everything else (reasoning, tool calls, refusal, error, the readout) is escaped text.
The whole output sits in an element with the class ``mathjax_ignore``: JupyterLab does
not typeset ``$…$`` in it (the live view does not either).

>>> render_markdown("Raw <b>, `<b>` and [x](javascript:alert(1))")
'<p>Raw &lt;b&gt;, <code>&lt;b&gt;</code> and [x](javascript:alert(1))</p>\\n'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

from .._core.transcript import Turn
from .readout import readout, readout_text
from .sent import content_html, sent_html, sent_text
from .toolview import Html, is_loop, loop_parts, loop_text

__all__ = [
    "final_bundle",
    "message_html",
    "render_markdown",
    "reply_html",
    "wrap_html",
]

# re.ASCII: no Unicode case folding (U+017F is not "s"), as in JavaScript's /i
_LINK_OK = re.compile(r"(?:https?|mailto):", re.IGNORECASE | re.ASCII)
_IMAGE_OK = re.compile(r"https?:", re.IGNORECASE | re.ASCII)
_ALIGN = re.compile(r"text-align:(left|right|center)")
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]*(?:[ \t].*)?", re.DOTALL)
# JupyterLab's MathJax 3 skips mathjax_ignore; MathJax 2 (nbconvert, classic) tex2jax_ignore
_WRAPPER = "mathjax_ignore tex2jax_ignore"


# -- Markdown ---------------------------------------------------------------------------


def _plain(tokens: Sequence[Token] | None) -> str:
    """An image's alt text: the text of its description, markup stripped."""
    out: list[str] = []
    for t in tokens or ():
        if t.type in ("text", "text_special", "code_inline"):
            out.append(t.content)
        elif t.type == "image":
            out.append(_plain(t.children))
        elif t.type in ("softbreak", "hardbreak"):
            out.append("\n")
    return "".join(out)


def _to_text(token: Token) -> None:
    token.type = "text"
    token.tag = ""
    token.nesting = 0
    token.attrs = {}
    token.content = ""


def _safety(state: StateCore) -> None:
    """After inline parsing: a fence keeps a plain language name only; a link to a scheme that is not allowed becomes its text
    (``[a]()`` gets this far), an allowed one gets rel and target, an image inside a
    link is marked (shown as text, not as a link in a link); table alignment becomes an
    ``align`` attribute instead of a style."""
    for block in state.tokens:
        # a language name of letters, digits and _+#.- only (it becomes a class)
        if block.type == "fence" and not _LANGUAGE.fullmatch(block.info):
            block.info = ""
        if block.type in ("th_open", "td_open") and block.attrs:
            style = str(block.attrs.get("style", ""))
            block.attrs = {}
            m = _ALIGN.fullmatch(style)
            if m:
                block.attrSet("align", m[1])
        if block.type != "inline" or not block.children:
            continue
        kept: list[bool] = []  # is each enclosing link kept?
        for token in block.children:
            if token.type == "link_open":
                ok = bool(_LINK_OK.match(str(token.attrGet("href") or "")))
                kept.append(ok)
                if ok:
                    token.attrSet("rel", "noopener noreferrer")
                    token.attrSet("target", "_blank")
                else:
                    _to_text(token)
            elif token.type == "link_close":
                if not (kept.pop() if kept else False):
                    _to_text(token)
            elif token.type == "image" and any(kept):
                token.meta["inLink"] = True


class _Renderer(RendererHTML):
    def image(
        self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
    ) -> str:
        token = tokens[idx]
        src = str(token.attrGet("src") or "")
        alt = _plain(token.children)
        if env.get("allowImages") and _IMAGE_OK.match(src):
            token.attrSet("alt", alt)
            return self.renderToken(tokens, idx, options, env)
        label = escapeHtml(f"image: {alt or src}")
        if token.meta.get("inLink") or not _LINK_OK.match(src):
            return f'<span class="nbs-image">{label}</span>'
        return (
            f'<a href="{escapeHtml(src)}" rel="noopener noreferrer" target="_blank"'
            f' class="nbs-image">{label}</a>'
        )


class _Markdown(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        return bool(_LINK_OK.match(url))


def _parser() -> MarkdownIt:
    options = {"html": False, "linkify": False, "typographer": False, "breaks": False}
    md = _Markdown("commonmark", options, renderer_cls=_Renderer)
    md.enable(["table", "strikethrough"])
    md.core.ruler.push("nbstream_safety", _safety)
    return md


_MD = _parser()


def render_markdown(text: str, *, allow_images: bool = False) -> str:
    """Model text (Markdown) → HTML, as the live views render it (js/src/md.js)."""
    return str(_MD.render(text, {"allowImages": allow_images}))


# -- the pieces of an output ------------------------------------------------------------


def _lines(text: str) -> str:
    """Escaped text with its line breaks kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return escapeHtml(text).replace("\n", "<br />\n")


def _loop_parts(turn: Turn, allow_images: bool, timings: bool) -> list[str]:
    """A tool loop's earlier steps: their texts, and a block per call (toolview.py)."""
    return [
        p + "\n"
        if isinstance(p, Html)
        else f'<div class="nbs-text">\n{render_markdown(p, allow_images=allow_images)}</div>\n'
        for p in loop_parts(turn, timings=timings)
    ]


def takeovers(turn: Turn) -> tuple[list[str], list[str]]:
    """How each later attempt took over (``the connection dropped at 1,204
    characters; continued by llama3``), and the partial replies a restart replaced."""
    attempts = turn.attempts
    notes = [n for a in attempts if (n := a.takeover())]
    superseded = [
        a.text
        for i, a in enumerate(attempts)
        if a.text and a.span is None and i + 1 < len(attempts)
    ]
    return notes, superseded


def _takeover_parts(turn: Turn) -> tuple[list[str], list[str]]:
    """HTML: the superseded replies (before the reply) and the notes (after it)."""
    if len(turn.attempts) < 2:
        return [], []
    notes, superseded = takeovers(turn)
    before = [
        '<details class="nbs-superseded"><summary>Superseded reply</summary>\n'
        f"<p>{_lines(text)}</p>\n</details>\n"
        for text in superseded
    ]
    after = [f'<p class="nbs-takeover">↻ {escapeHtml(n)}</p>\n' for n in notes]
    return before, after


def _reply_parts(turn: Turn, allow_images: bool, timings: bool = True) -> list[str]:
    before, after = _takeover_parts(turn)
    parts = before + _loop_parts(turn, allow_images, timings)
    if turn.reasoning:
        parts.append(
            '<details class="nbs-reasoning"><summary>Reasoning</summary>\n'
            f"<p>{_lines(turn.reasoning)}</p>\n</details>\n"
        )
    if turn.structured is not None:  # response_format=: a table or tree, and the JSON
        from .structured_html import structured_html

        parts.append(structured_html(turn))
    elif turn.text:
        body = render_markdown(turn.text, allow_images=allow_images)
        parts.append(f'<div class="nbs-text">\n{body}</div>\n')
    for call in [] if is_loop(turn) else turn.tool_calls:  # a loop's calls are blocks
        parts.append(
            '<details class="nbs-tool-call" open><summary>Tool call '
            f"<code>{escapeHtml(call.name)}</code></summary>\n"
            f"<pre><code>{escapeHtml(call.arguments)}</code></pre>\n</details>\n"
        )
    if turn.refusal:
        parts.append(
            f'<p class="nbs-refusal"><strong>Refusal:</strong> {_lines(turn.refusal)}</p>\n'
        )
    if turn.error is not None:
        parts.append(
            '<p class="nbs-error"><strong>Error:</strong> '
            f"{_lines(turn.error.message)}</p>\n"
        )
    return parts + after


def wrap_html(parts: Iterable[str], kind: str = "reply") -> str:
    """The parts of one output in the element that keeps MathJax out."""
    return f'<div class="nbstream-{kind} {_WRAPPER}">\n{"".join(parts)}</div>\n'


def message_html(
    role: str,
    content: Any = None,
    *,
    note: str | None = None,
    body_html: str | None = None,
    allow_images: bool = False,
) -> str:
    """One message of a conversation as a block of its own: the role label in its own
    element, the content in another (Markdown if it is text; ``body_html`` if given,
    HTML already made safe), so nothing the content holds can run into the label.

    >>> message_html("user", "Hi <b>")
    '<div class="nbs-message nbs-user">\\n<div class="nbs-role"><strong>user</strong></div>\\n<div class="nbs-content">\\n<p>Hi &lt;b&gt;</p>\\n</div>\\n</div>\\n'
    """
    label = escapeHtml(role) + (f" <em>({escapeHtml(note)})</em>" if note else "")
    if body_html is not None:
        body = body_html
    elif isinstance(content, str):
        body = render_markdown(content, allow_images=allow_images)
    elif content is None:
        body = ""
    elif isinstance(content, list):  # text and images: text escaped, thumbnails
        body = content_html(content)
    else:  # anything else: shown as it is
        body = f"<pre><code>{escapeHtml(str(content))}</code></pre>\n"
    return (
        f'<div class="nbs-message nbs-{_css_word(role)}">\n'
        f'<div class="nbs-role"><strong>{label}</strong></div>\n'
        f'<div class="nbs-content">\n{body}</div>\n</div>\n'
    )


def _css_word(role: str) -> str:
    return re.sub(r"[^a-z0-9-]", "", role.lower()) or "message"


def reply_html(turn: Turn, *, allow_images: bool = False) -> str:
    """The reply's HTML parts (reasoning, text, tool calls, refusal, error), unwrapped."""
    return "".join(_reply_parts(turn, allow_images))


def final_bundle(
    turn: Turn,
    *,
    show_readout: bool = True,
    readout_line: str | None = None,
    allow_images: bool = False,
    timings: bool = True,
) -> dict[str, str]:
    """The reply as a display bundle (HTML and plain text) that shows without a kernel
    or widget manager: in a saved notebook, nbconvert, GitHub. ``readout_line`` replaces
    the readout (the batch output's has no timings); ``timings=False`` leaves the time
    of each tool call out too."""
    parts = _reply_parts(turn, allow_images, timings) or [
        "<p><em>(no reply)</em></p>\n"
    ]
    sent = sent_html(turn.request.messages)  # thumbnails of the images sent
    if sent:
        parts.insert(0, sent)
    said = loop_text(turn, timings=timings) + ([turn.text] if turn.text else [])
    calls = [] if is_loop(turn) else turn.tool_calls
    said += [f"Tool call {c.name}: {c.arguments}" for c in calls]
    if turn.refusal:
        said.append(f"Refusal: {turn.refusal}")
    if turn.parse_error is not None:
        said.append(f"Not valid: {turn.parse_error}")
    if turn.error is not None:
        said.append(f"Error: {turn.error.message}")
    said += [f"↻ {n}" for n in takeovers(turn)[0]] if len(turn.attempts) > 1 else []
    plain = "\n\n".join(said) or "(no reply)"
    if sent:
        plain = f"[{sent_text(turn.request.messages)}]\n\n{plain}"
    if show_readout:
        line = readout_line if readout_line is not None else readout_text(readout(turn))
        parts.append(f'<p class="nbs-readout"><sub>{escapeHtml(line)}</sub></p>\n')
        plain += f"\n\n[{line}]"
    return {"text/html": wrap_html(parts), "text/plain": plain}
