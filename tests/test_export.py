"""A conversation as a document: ``to_markdown()``, ``to_html()``, ``save("chat.md" |
"chat.html")``.

What a reader would check: every part of every turn is there as it was written (the
system prompt, prompts, images that were sent, replies, reasoning, tool calls and
results, errors, readouts and cost; stopped and failed turns marked), and nothing in
it is live. For Markdown, "live" is judged by rendering the document with markdown-it-py
with raw HTML switched on, as a permissive renderer would: no element may come out but
the document's own (headings, paragraphs, code blocks and the thumbnails), whatever the
model wrote. For HTML, by parsing the page, and in tests/test_export_browser.py by
opening it in Chromium.
"""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from nbstream import ErrorInfo, Request, ToolResult, Transcript, Turn, Usage
from nbstream._core.pricing import format_usd
from nbstream._core.record import Attempt
from nbstream._notebook import export_html
from nbstream._notebook.export import walk
from nbstream._notebook.readout import readout, readout_text
from tests.test_render import (
    CASES,
    CHARS,
    MARKDOWN,
    TEXT,
    chunk,
    everything_turn,
    fixture_turn,
    sse,
    text_turn,
)

PIL = pytest.importorskip("PIL.Image")

REPO = Path(__file__).resolve().parents[1]
# What a permissive Markdown renderer does: CommonMark with raw HTML passed through.
PERMISSIVE = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
THUMB_SRC = re.compile(r"data:image/(?:png|jpeg);base64,[A-Za-z0-9+/]+=*")


def png(w: int, h: int) -> str:
    buf = io.BytesIO()
    PIL.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


RED, SMALL = png(640, 480), png(64, 64)


def tool_loop_turn(other: str) -> Turn:
    """A turn as the tool loop leaves it: a model step that called a tool, the tool's
    result, then the final step (``turn.steps``, this turn last)."""
    first = build_turn(
        sse(
            [
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_7",
                                "function": {"name": "lookup", "arguments": other},
                            }
                        ]
                    }
                ),
                chunk({}, "tool_calls"),
            ]
        )
    )
    final = text_turn("It is warmer in Rome.")
    result = ToolResult("call_7", "lookup", other)
    result.finish("error", other, now=0.12, error=other)
    final._steps = [first, result]  # as the tool loop leaves them
    return final


def build_turn(data: bytes) -> Turn:
    from tests.test_render import build

    return build(data)


def transcript(md: str, other: str) -> Transcript:
    """``md`` and ``other`` in every place a conversation holds text."""
    failed = everything_turn(md, other, prompt=md)
    failed.model = other
    stopped = text_turn(md, end="cancel")
    pictured = text_turn("A red rectangle.")
    pictured.request.messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": other},
                {"type": "image", "media_type": "image/png", "data": RED},
                {"type": "image", "url": "https://evil.example/" + other},
                {"type": "image", "media_type": other, "data": other},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + SMALL},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "name": other, "content": other},
    ]
    return Transcript([failed, stopped, pictured, tool_loop_turn(other)], system=other)


# -- what a permissive Markdown renderer makes of it -----------------------------------------

MD_ELEMENTS = {"h1", "h2", "p", "pre", "code", "strong", "em", "hr", "ol", "li", "img"}


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_comment(self, data: str) -> None:
        self.found.append(("!--", {}))

    def unknown_decl(self, data: str) -> None:
        self.found.append(("!decl", {}))

    def handle_pi(self, data: str) -> None:
        self.found.append(("?pi", {}))


def elements(html: str) -> list[tuple[str, dict[str, str | None]]]:
    p = _Elements()
    p.feed(html)
    p.close()
    return p.found


def md_problems(markdown: str) -> list[str]:
    """Every element of the rendered Markdown that is not the document's own."""
    out = []
    for tag, attrs in elements(PERMISSIVE.render(markdown)):
        if tag not in MD_ELEMENTS:
            out.append(f"<{tag}>")
            continue
        allowed = {"code": {"class"}, "img": {"src", "alt"}}.get(tag, set())
        for name, value in attrs.items():
            if name not in allowed:
                out.append(f"{name} on <{tag}>")
            elif tag == "code" and value not in ("language-text", "language-json"):
                out.append(f"class {value!r}")
            elif (
                tag == "img" and name == "src" and not THUMB_SRC.fullmatch(value or "")
            ):
                out.append(f"src {value!r}")
            elif (
                tag == "img"
                and name == "alt"
                and not re.fullmatch(r"image \d+", value or "")
            ):
                out.append(f"alt {value!r}")
    return out


def code_blocks(markdown: str) -> list[str]:
    return [t.content for t in PERMISSIVE.parse(markdown) if t.type == "fence"]


def as_read(text: str) -> str:
    """``text`` as a CommonMark reader gives back a code block's content."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    return text if not text or text.endswith("\n") else text + "\n"


def outside_code(markdown: str) -> str:
    """The document's own words: its lines outside fences, code spans taken out."""
    lines = re.split(r"\r\n|\r|\n", markdown)
    keep = [True] * len(lines)
    for t in PERMISSIVE.parse(markdown):
        if t.type == "fence" and t.map:
            for i in range(t.map[0], t.map[1]):
                keep[i] = False
    own = "\n".join(line for line, k in zip(lines, keep, strict=True) if k)
    return re.sub(r"(`+) .*? \1(?!`)", "", own)


# -- Markdown ---------------------------------------------------------------------------------


def test_the_markdown_holds_every_part_of_every_turn() -> None:
    tr = transcript("The **reply**.", "other <b>text</b>")
    tr.turns.insert(0, fixture_turn("openai_chat_text_usage.sse"))
    md = tr.to_markdown(title="Weather <chat>")
    blocks = code_blocks(md)
    # the model's and the user's words, as written, in code blocks
    for text in ("The **reply**.", "other <b>text</b>", "It is warmer in Rome."):
        assert as_read(text) in blocks
    assert md.startswith("# Weather &#60;chat&#62;\n")
    assert md.count("\n## Turn ") == 5
    assert "**Assistant** ` other <b>text</b> ` · **failed**" in md
    assert "· **stopped**" in md  # the cancelled turn
    assert (
        "*Reasoning*" in md and "*Refusal*" in md and "*Error* ` APIStatusError `" in md
    )
    assert "**Tool call** ` other <b>text</b> ` ` call_1 `" in md
    assert "**Tool call** ` lookup ` ` call_7 `" in md  # a tool loop's first step
    assert "**Tool result** ` lookup ` · ` error ` · 0.12 s" in md
    assert "**Tool result** ` other <b>text</b> `" in md  # a tool message that was sent
    # readouts and cost, as the notebook shows them
    first = tr[0]
    line = readout_text(readout(first))
    assert first.cost is not None and format_usd(first.cost) in line
    assert f"\n` {line} `\n" in md
    assert md.count(" · cost unknown · ") == 4  # model "m" and the hostile name
    assert "$" not in outside_code(md)  # JupyterLab's math never starts outside code


def test_sent_images_are_embedded_thumbnails_and_urls_are_never_loaded() -> None:
    tr = transcript("hi", "x")
    md = tr.to_markdown()
    html = tr.to_html()
    # the 640x480 PNG and the 64x64 OpenAI-form one: thumbnails from their bytes
    defs = re.findall(r"^\[image-(\d+)\]: (\S+)$", md, re.MULTILINE)
    assert [n for n, _ in defs] == ["1", "4"]
    for _, url in defs:
        assert THUMB_SRC.fullmatch(url)
        img = PIL.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert max(img.size) <= 256
    assert "*Image 1:* ` image/png, 640x480, 1 KB `" in md
    assert "*Image 2:* ` https://evil.example/x (not loaded) `" in md
    assert "*Image 3:* ` x (not an image that can be shown) `" in md
    srcs = [a["src"] for tag, a in elements(html) if tag == "img"]
    assert len(srcs) == 2 and all(THUMB_SRC.fullmatch(s or "") for s in srcs)
    assert 'width="256" height="192"' in html
    assert "evil.example" in html and 'src="https://evil' not in html


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MARKDOWN, TEXT, st.text(CHARS, max_size=20))
def test_hostile_markdown_renders_nothing_live_from_the_markdown_export(
    md: str, other: str, title: str
) -> None:
    tr = transcript(md, other)
    out = tr.to_markdown(title=title)
    assert md_problems(out) == []
    blocks = code_blocks(out)
    assert as_read(md) in blocks and as_read(other) in blocks  # kept as written
    assert "$" not in outside_code(out)


@pytest.mark.parametrize(("name", "md"), CASES, ids=[n for n, _ in CASES])
def test_the_corpus_renders_nothing_live_from_either_export(name: str, md: str) -> None:
    tr = transcript(md, md)
    out = tr.to_markdown(title=md)
    assert md_problems(out) == []
    assert as_read(md) in code_blocks(out)
    assert html_problems(tr.to_html(title=md)) == []


# -- HTML -----------------------------------------------------------------------------------------

CORPUS = json.loads((REPO / "tests/markdown_corpus.json").read_text("utf-8"))
HTML_ELEMENTS = set(CORPUS["allowed"]["elements"]) | {
    "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "small",
    "figure", "figcaption", "img", "ol", "li",
}  # fmt: skip
HTML_ATTRIBUTES: dict[str, set[str]] = {
    tag: set(names) for tag, names in CORPUS["allowed"]["attributes"].items()
}
HTML_ATTRIBUTES |= {
    "html": {"lang"},
    "meta": {"charset", "http-equiv", "content", "name"},
    "main": {"class"},
    "h2": {"id"},
    "img": {"src", "alt", "width", "height"},
    "details": {"class", "open", "data-status"},  # a tool call's block (toolview.py)
}


def html_problems(html: str) -> list[str]:
    out = []
    found = elements(html)
    metas = [a for tag, a in found if tag == "meta"]
    assert metas[0] == {"charset": "utf-8"}
    assert metas[1] == {
        "http-equiv": "Content-Security-Policy",
        "content": export_html.CSP,
    }
    styles = 0
    for tag, attrs in found:
        if tag not in HTML_ELEMENTS:
            out.append(f"<{tag}>")
        styles += tag == "style"
        for name, value in attrs.items():
            if name not in HTML_ATTRIBUTES.get(tag, set()) or name.startswith("on"):
                out.append(f"{name} on <{tag}>")
            if name == "href" and not re.match(r"(?i)(https?|mailto):", value or ""):
                out.append(f"href {value!r}")
            if name == "src" and not THUMB_SRC.fullmatch(value or ""):
                out.append(f"src {value!r}")
            if tag == "meta" and name == "http-equiv" and attrs is not metas[1]:
                out.append("a second http-equiv")
    if styles != 1:
        out.append(f"{styles} style elements")
    return out


def test_the_html_page_is_standalone_with_a_policy_that_allows_nothing_to_run() -> None:
    tr = transcript(
        "The **reply** [x](https://example.org) ![i](https://e.org/i.png)", "o"
    )
    html = tr.to_html(title="A <title>")
    assert html.startswith("<!DOCTYPE html>\n")
    assert "default-src 'none'" in export_html.CSP and "script" not in export_html.CSP
    assert "<title>A &lt;title&gt;</title>" in html
    assert html_problems(html) == []
    assert "<p>The <strong>reply</strong>" in html  # rendered as in the notebook
    assert 'class="nbs-image">image: i</a>' in html  # the model's image: a link
    assert "stopped" in html and "failed" in html
    # the tool loop as the cell shows it: a block per call, its result inside
    assert '<details class="nbs-tool" data-status="error"><summary>lookup(o) · ' in html
    assert html.count('<h2 id="turn-') == 4


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MARKDOWN, TEXT)
def test_hostile_markdown_renders_nothing_live_in_the_html_export(
    md: str, other: str
) -> None:
    assert html_problems(transcript(md, other).to_html(title=other)) == []


def test_attempts_and_their_errors_are_listed() -> None:
    turn = text_turn("Fresh.")
    turn._attempts = [
        Attempt("gpt-4o", "openai", "https://api.openai.com/v1", status="error",
                error=ErrorInfo("APIStatusError", "overloaded <b>", status_code=529)),
        Attempt("claude-haiku-4-5", "anthropic", "https://api.anthropic.com",
                "fallback", "complete", usage=Usage(input_tokens=10, output_tokens=3)),
    ]  # fmt: skip
    tr = Transcript([turn])
    md, html = tr.to_markdown(), tr.to_html()
    assert "1. ` gpt-4o ` ` first · failed · APIStatusError: overloaded <b> `" in md
    assert "2. ` claude-haiku-4-5 ` ` fallback · complete `" in md
    assert "<summary>2 attempts</summary>" in html and "overloaded &lt;b&gt;" in html


def test_an_empty_transcript_is_a_document_too() -> None:
    tr = Transcript()
    assert tr.to_markdown() == "# Conversation\n"
    assert "<h1>Conversation</h1>" in tr.to_html()
    assert [type(b).__name__ for b in walk(tr)] == ["Heading"]


# -- save -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["chat.md", "chat.MARKDOWN", "chat.html", "chat.HTM", "chat.json", "chat"]
)
def test_save_writes_the_format_its_suffix_names(tmp_path: Path, name: str) -> None:
    tr = transcript("reply", "other")
    path = tmp_path / name
    tr.save(path)
    data = path.read_text("utf-8")
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown"):
        assert data == tr.to_markdown()
    elif suffix in (".html", ".htm"):
        assert data == tr.to_html()
    else:  # JSON, the form that loads back
        assert Transcript.load(path).to_json() == tr.to_json()
    assert list(tmp_path.iterdir()) == [path]  # written atomically, nothing left over


def test_a_lone_surrogate_does_not_stop_a_document_saving(tmp_path: Path) -> None:
    tr = Transcript([text_turn("half an emoji: \ud83d")])
    tr.save(tmp_path / "chat.md")
    tr.save(tmp_path / "chat.html")
    assert "half an emoji: ?" in (tmp_path / "chat.md").read_text("utf-8")


def test_a_turn_still_streaming_is_exported_as_it_is() -> None:
    turn = Turn(Request([{"role": "user", "content": "Go"}], "m", "openai", "u"))
    turn.choice(0).add_text("So far")
    md = Transcript([turn]).to_markdown()
    assert "**still streaming when exported**" in md and as_read(
        "So far"
    ) in code_blocks(md)
