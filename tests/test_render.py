"""What a finished reply looks like in a saved notebook: ``final_bundle``, the batch
output, ``%chat history`` and the readout line.

Model text is rendered by markdown-it-py with nbstream's rules (render.py); the live
views render it with markdown-it and the same rules (js/src/md.js). Where node and the
front end's packages are installed (``js/node_modules``, as ``scripts/setup.sh`` does),
both renderers are run on the corpus in ``tests/markdown_corpus.json`` and on generated
Markdown, and must give the same HTML: what was saved is what was shown.

Every path nbstream writes HTML through is checked with ``html.parser`` for live
elements and attributes: the corpus, and Markdown from a grammar of fences, math, raw
HTML, entities, links and images (TESTING.md, section 7).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable, Iterator
from html import entities as html_entities
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbstream import ErrorInfo, Request, Turn
from nbstream._core.pipeline import Pipeline
from nbstream._core.pricing import format_usd
from nbstream._core.transcript import Api
from nbstream._http.conversation import Conversation
from nbstream._notebook.cell_output import batch_bundle as _batch_bundle
from nbstream._notebook.cell_output import history_html as _history_html
from nbstream._notebook.cell_output import history_text as _history_text
from nbstream._notebook.readout import readout, readout_text
from nbstream._notebook.render import final_bundle, render_markdown
from nbstream._notebook.totals import totals, totals_text
from tests.conftest import STREAMS, api_of, expected
from tests.loopback import openai_chunks

EXP = expected()
T0, STEP = 0.5, 0.25  # event i of a stream arrives at T0 + i * STEP
XSS = '<img src=x onerror="alert(1)">'
SCRIPT = "<script>alert(document.cookie)</script>"
REPO = Path(__file__).resolve().parents[1]
CORPUS = json.loads((REPO / "tests/markdown_corpus.json").read_text("utf-8"))
CASES = [(c["name"], c["markdown"]) for c in CORPUS["cases"]]
ELEMENTS = set(CORPUS["allowed"]["elements"])
ATTRIBUTES: dict[str, list[str]] = CORPUS["allowed"]["attributes"]


def fmt_s(s: float) -> str:
    """Seconds as the readout shows them (README: ``240 ms``, ``1.02 s``)."""
    return f"{round(s * 1000)} ms" if s < 1 else f"{s:.2f} s"


def sse(datas: list[str]) -> bytes:
    return b"".join(f"data: {d}\n\n".encode() for d in datas)


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )


def build(
    data: bytes,
    api: str = "openai",
    *,
    end: str = "close",
    prompt_chars: int = 0,
    prompt: str = "Hi",
) -> Turn:
    """Feed a stream one SSE event at a time; ``end``: close, cancel or open."""
    the_api = cast(Api, api)
    turn = Turn(Request([{"role": "user", "content": prompt}], "m", the_api, "u"))
    pipe = Pipeline(the_api, turn, prompt_chars=prompt_chars)
    blocks = [b + b"\n\n" for b in data.split(b"\n\n") if b.strip()]
    for i, block in enumerate(blocks):
        pipe.feed(block, T0 + i * STEP)
    end_at = T0 + len(blocks) * STEP
    if end == "close":
        pipe.close(end_at)
    elif end == "cancel":
        turn.status = "cancelled"
        pipe.abort(end_at)
    return turn


def fixture_turn(name: str) -> Turn:
    return build((STREAMS / name).read_bytes(), api_of(name))


def text_turn(text: str, *, end: str = "close") -> Turn:
    finish = [chunk({}, "stop"), "[DONE]"] if end == "close" else []
    return build(sse([chunk({"content": text}), *finish]), end=end)


def everything_turn(text: str, other: str, *, prompt: str = "Hi") -> Turn:
    """A turn with ``text`` as its reply and ``other`` in every other part a server
    sends: reasoning, a tool call's name and arguments, a refusal, the finish reason,
    and an error."""
    datas = [
        chunk(
            {
                "reasoning_content": other,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "function": {"name": other, "arguments": other},
                    }
                ],
            }
        ),
        chunk({"content": text}),
        chunk({"refusal": other}),
        chunk({}, f"stop{other}"),
    ]
    turn = build(sse(datas), prompt=prompt)
    turn.status = "error"
    turn.error = ErrorInfo("APIStatusError", f"Invalid value: '{other}'")
    return turn


# -- what may be in the HTML ---------------------------------------------------------------


class _Checker(HTMLParser):
    def __init__(self, allow_images: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.allow_images = allow_images
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ELEMENTS and not (tag == "img" and self.allow_images):
            self.problems.append(f"element <{tag}>")
        for name, value in attrs:
            if name not in ATTRIBUTES.get(tag, []) or name.startswith("on"):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "href" and not re.match(r"(?i)(https?|mailto):", value or ""):
                self.problems.append(f"href {value!r}")
            if name == "src" and not re.match(r"(?i)https?:", value or ""):
                self.problems.append(f"src {value!r}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.problems.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.problems.append(f"declaration {decl!r}")

    def handle_pi(self, data: str) -> None:
        self.problems.append(f"processing instruction {data!r}")

    def unknown_decl(self, data: str) -> None:
        self.problems.append(f"declaration {data!r}")


def problems(html: str, *, allow_images: bool = False) -> list[str]:
    """What in ``html`` is not an allowed element or attribute (empty: nothing)."""
    checker = _Checker(allow_images)
    checker.feed(html)
    checker.close()
    return checker.problems


def shown_text(html: str) -> str:
    checker = _Checker(True)
    checker.feed(html)
    checker.close()
    return "".join(checker.text)


def every_path(text: str, other: str, allow_images: bool) -> dict[str, str]:
    """The HTML of every output nbstream writes, for a reply ``text`` and ``other`` in
    every other part: the final output, the batch output, ``%chat history``."""
    turn = everything_turn(text, other, prompt=text)
    conv = Conversation()
    conv.transcript.append(turn)
    conv.transcript.append(text_turn(text))
    return {
        "final": final_bundle(turn, allow_images=allow_images)["text/html"],
        "batch": _batch_bundle(turn, allow_images)["text/html"],
        "history": _history_html(conv, allow_images),
    }


# -- markdown-it (node), the live views' renderer -----------------------------------------

RENDER_CLI = REPO / "js/test/render_cli.mjs"
Render = Callable[[str, bool], str]


@pytest.fixture(scope="module")
def js_render() -> Iterator[Render]:
    """``js_render(markdown, allow_images)``: js/src/md.js's HTML (before DOMPurify),
    bundled as the widgets bundle it. One node process per module."""
    node = shutil.which("node")
    if node is None or not (REPO / "js/node_modules/markdown-it").exists():
        pytest.skip("needs node and js/node_modules (scripts/setup.sh installs them)")
    proc = subprocess.Popen(
        [node, str(RENDER_CLI)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def ask(markdown: str, allow_images: bool) -> str:
        stdin.write(json.dumps({"markdown": markdown, "allowImages": allow_images}))
        stdin.write("\n")
        stdin.flush()
        answer = stdout.readline()
        assert answer, "the node process died"
        reply = json.loads(answer)
        assert "error" not in reply, reply["error"]
        return cast(str, reply["html"])

    yield ask
    stdin.close()  # node exits at the end of its input
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- Markdown that has broken renderers ------------------------------------------------------

URLS = [
    "https://e.org/x?a=1&b=<2>", "http://e.org", "javascript:alert(1)",
    "JaVaScRiPt:alert(1)", "data:text/html,<script>alert(1)</script>", "vbscript:x",
    "mailto:a@b.c", "/api/contents", "./x.ipynb", "#top", "", "java\tscript:x",
    "//e.org", "<https://e.org/a b>", 'https://e.org/"onmouseover="x',
    "https://bücher.example/ä",
]  # fmt: skip
HTML = [
    XSS, SCRIPT, "<svg onload=alert(1)>", "<iframe src=javascript:alert(1)>",
    "<a href=javascript:x>", "<style>*{}</style>", "<div onmouseover=alert(1)>",
    "</code>", "<!-- x -->", "<details open ontoggle=alert(1)>", "<?php x ?>",
    "<![CDATA[x]]>", "<!DOCTYPE html>",
]  # fmt: skip
INLINE = [
    "`", "``", "```", "~~", "~", "*", "_", "**", "$", "$$", "\\(", "\\)", "\\[", "\\]",
    "\\$", "\\", "&lt;", "&#60;", "&#x3C;", "&amp;lt;script&amp;gt;", "&notit;",
    "&copy;", "&ampxx;", "&#0;", "|", "[", "]", "(", ")", "<", ">", "!", "a", "b c",
    "😀", "é", " ", "://", "std::vector<int>", "\u00a0",
]  # fmt: skip


def _assigned(c: str) -> bool:
    # Characters this Python's Unicode has no category for may be punctuation to the
    # newer Unicode of node's tables (markdown-it's emphasis rules ask): left out.
    return unicodedata.category(c) not in ("Cn", "Cs")


CHARS = st.characters(codec="utf-8").filter(_assigned)
LINK = st.tuples(
    st.sampled_from(["", "!"]),
    st.sampled_from(["x", "*y*", "`z`", "![i](https://i.org/i.png)", ""]),
    st.sampled_from(URLS),
    st.sampled_from(["", ' "title"', " 'a\"b'"]),
).map(lambda t: f"{t[0]}[{t[1]}]({t[2]}{t[3]})")
INLINE_PIECE = st.one_of(
    st.sampled_from(INLINE),
    st.sampled_from(HTML),
    LINK,
    st.sampled_from(URLS).map(lambda u: f"<{u}>"),
    st.text(CHARS, max_size=6),
)
TEXT = st.lists(INLINE_PIECE, max_size=8).map("".join)
FENCE = st.tuples(
    st.sampled_from(["```", "````", "~~~", "``"]),
    st.sampled_from(["", " ", "   ", "    "]),
    st.sampled_from(["", "html", "js`x", "<b>", "py extra"]),
    st.lists(TEXT, max_size=3),
    st.booleans(),
).map(
    lambda t: (
        f"{t[1]}{t[0]}{t[2]}\n"
        + "".join(f"{t[1]}{line}\n" for line in t[3])
        + (f"{t[1]}{t[0]}\n" if t[4] else "")
    )
)
LINE = st.one_of(
    TEXT,
    FENCE,
    st.tuples(
        st.sampled_from(["- ", "1. ", "> ", "    ", "# ", "| ", "   ", "\t", "$$ "]),
        TEXT,
    ).map("".join),
    st.sampled_from(
        [
            "---",
            "===",
            "| a | b |\n|---|:-:|",
            "[r]: javascript:x",
            "[r]: https://r.org",
        ]
    ),
)
MARKDOWN = st.tuples(
    st.lists(LINE, max_size=10), st.sampled_from(["\n", "\n\n", "\r\n", "\r"])
).map(lambda t: t[1].join(t[0]))


# -- the same HTML in the kernel and in the browser ------------------------------------------


@pytest.mark.parametrize("allow_images", [False, True], ids=["links", "images"])
@pytest.mark.parametrize(("name", "md"), CASES, ids=[n for n, _ in CASES])
def test_python_and_js_render_the_corpus_alike(
    js_render: Render, name: str, md: str, allow_images: bool
) -> None:
    assert render_markdown(md, allow_images=allow_images) == js_render(md, allow_images)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MARKDOWN, st.booleans())
def test_python_and_js_render_any_markdown_alike(
    js_render: Render, md: str, allow_images: bool
) -> None:
    assert render_markdown(md, allow_images=allow_images) == js_render(md, allow_images)


def test_md_js_follows_markdown_it_py_where_markdown_it_14_1_0_differs(
    js_render: Render,
) -> None:
    # the places where md.js follows markdown-it-py rather than markdown-it 14.1.0
    for md, html in [
        ("[`a`b`", "<p>[<code>a</code>b`</p>\n"),  # a code span after a "["
        ("`   `", "<p><code>   </code></p>\n"),  # spaces only: kept
        ("😀*[*", "<p>😀<em>[</em></p>\n"),  # an emoji is punctuation
        ("&notit; &ampxx;", "<p>&amp;notit; &amp;ampxx;</p>\n"),  # whole names only
    ]:
        assert render_markdown(md) == html
        assert js_render(md, False) == html


def test_every_entity_name_decodes_alike(js_render: Render) -> None:
    # The browser's bundles decode entities with its HTML parser (js/src/entities.js),
    # the kernel with the table of every HTML5 entity: whole names decode, a legacy
    # entity that is only the start of a name does not ("&notit;", "&ampxx;").
    names = sorted({n.rstrip(";") for n in html_entities.html5})
    legacy = sorted(n for n in html_entities.html5 if not n.endswith(";"))
    md = " ".join(
        [f"&{n};" for n in names]
        + [f"&{n}x;" for n in legacy]
        + [f"&{n}" for n in legacy]
        + [f"[a](https://e.org/&{n}x;&{n};)" for n in legacy]
    )
    assert render_markdown(md) == js_render(md, False)
    assert "&amp;notit;" in render_markdown("&notit;")


# -- nothing live, on any path ---------------------------------------------------------------


@pytest.mark.parametrize("allow_images", [False, True], ids=["links", "images"])
@pytest.mark.parametrize(("name", "md"), CASES, ids=[n for n, _ in CASES])
def test_the_corpus_renders_nothing_live_on_any_path(
    name: str, md: str, allow_images: bool
) -> None:
    for path, html in every_path(md, md, allow_images).items():
        assert problems(html, allow_images=allow_images) == [], path


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MARKDOWN, TEXT, st.booleans())
def test_any_markdown_renders_nothing_live_on_any_path(
    md: str, other: str, allow_images: bool
) -> None:
    for path, html in every_path(md, other, allow_images).items():
        assert problems(html, allow_images=allow_images) == [], path


@given(st.text(CHARS))
def test_text_outside_the_reply_is_shown_as_written(other: str) -> None:
    turn = everything_turn("", other)
    # line ends as an HTML parser reads them: \r\n and \r are \n
    lf = {ord("\r"): "\n"}
    shown = (
        shown_text(final_bundle(turn)["text/html"]).replace("\r\n", "\n").translate(lf)
    )
    flat = other.replace("\r\n", "\n").translate(lf)
    assert shown.count(flat) >= 4  # reasoning, name, arguments, refusal (and error)


# -- the rules -------------------------------------------------------------------------------


def test_raw_html_is_text_and_code_is_as_written() -> None:
    html = render_markdown(f"Here: {XSS}\n\n{SCRIPT}\n\n`<b>` and `std::vector<int>`")
    assert "<img" not in html and "<script" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "<code>&lt;b&gt;</code>" in html
    assert "<code>std::vector&lt;int&gt;</code>" in html


def test_code_next_to_a_url_is_not_escaped_twice() -> None:
    # The escaping this replaced wrote `std::vector&lt;int>` here: `&lt;` shown in code.
    md = "Use `std::vector<int>` (see https://en.cppreference.com) | $x$ \\ [a](b)"
    shown = shown_text(render_markdown(md))
    assert "std::vector<int>" in shown and "&lt;" not in shown


def test_a_reply_that_starts_with_a_fence_stays_code() -> None:
    page = "```html\n<!DOCTYPE html>\n<html><script>alert(1)</script></html>\n```"
    turn = text_turn(page)
    conv = Conversation()
    conv.transcript.append(turn)
    history = _history_html(conv)
    # the label is an element of its own: the fence still opens a code block
    assert "<strong>assistant <em>(complete)</em></strong></div>" in history
    assert '<pre><code class="language-html">&lt;!DOCTYPE html&gt;' in history
    assert problems(history) == []


def test_math_is_left_alone_and_kept_from_mathjax() -> None:
    md = "$ a\n   ```\n" + XSS + "\n   ```\n$ and \\\\(x\\\\)"
    html = final_bundle(text_turn(md))["text/html"]
    assert html.startswith('<div class="nbstream-reply mathjax_ignore tex2jax_ignore">')
    assert problems(html) == []
    assert "$ a" in html and "\\(x\\)" in html


def test_links_only_to_http_https_and_mailto() -> None:
    html = render_markdown(
        "[a](javascript:alert(1)) [b](https://e.org) [c](data:text/html,x) "
        "[d](mailto:a@b.c) [e](./rel) [f]() <vbscript:x> <https://g.org>"
    )
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == ["https://e.org", "mailto:a@b.c", "https://g.org"]
    assert html.count('rel="noopener noreferrer" target="_blank"') == 3
    assert "[a](javascript:alert(1))" in html  # shown as written


def test_images_are_links_unless_allowed() -> None:
    md = "![a cat](https://e.org/cat.png) ![x](data:image/png;base64,AA==)"
    off = render_markdown(md)
    assert "<img" not in off
    assert (
        '<a href="https://e.org/cat.png" rel="noopener noreferrer" target="_blank"'
        ' class="nbs-image">image: a cat</a>'
    ) in off
    on = render_markdown(md, allow_images=True)
    assert on.count("<img") == 1
    assert '<img src="https://e.org/cat.png" alt="a cat" />' in on
    bundle = final_bundle(text_turn(md), allow_images=True)
    assert '<img src="https://e.org/cat.png"' in bundle["text/html"]
    assert "<img" not in final_bundle(text_turn(md))["text/html"]


def test_table_alignment_is_an_attribute_not_a_style() -> None:
    html = render_markdown("| a | b |\n|:-|-:|\n| 1 | 2 |")
    assert '<th align="left">a</th>' in html and '<td align="right">2</td>' in html
    assert "style" not in html


# -- the readout line ------------------------------------------------------------------------


def test_readout_text_reads_like_the_readme() -> None:
    r = {
        "status": "complete",
        "ttft_s": 0.24,
        "input_tokens": 21,
        "output_tokens": 48,
        "estimated": False,
        "tokens_per_s": 61.3,
        "elapsed_s": 1.02,
        "finish_reason": "stop",
    }
    assert readout_text(r) == (
        "complete · first token 240 ms · 21 in · 48 out tokens · 61.3 tok/s · 1.02 s"
        " · finish: stop"
    )
    est = readout_text({**r, "estimated": True})
    assert "~21 in · ~48 out tokens (estimated)" in est
    assert readout_text({"status": "streaming"}) == "streaming"


def test_readout_of_a_recorded_turn() -> None:
    name = "openai_chat_text_usage.sse"
    turn = fixture_turn(name)
    blocks = [b for b in (STREAMS / name).read_bytes().split(b"\n\n") if b.strip()]
    # the first event whose delta says something (the one before has "content":"")
    first = next(i for i, b in enumerate(blocks) if re.search(rb'"content":"[^"]', b))
    ttft, elapsed = T0 + first * STEP, T0 + len(blocks) * STEP
    usage = EXP[name]["usage"]
    out = usage["completion_tokens"]
    tps = (out - 1) / (elapsed - ttft)
    r = readout(turn)
    assert r["ttft_s"] == ttft and r["elapsed_s"] == elapsed
    assert r["tokens_per_s"] == pytest.approx(tps)
    assert turn.cost is not None  # gpt-4o-2024-08-06: its price is known
    assert readout_text(r) == (
        f"complete · first token {fmt_s(ttft)} · {usage['prompt_tokens']} in · "
        f"{out} out tokens · {format_usd(turn.cost)} · {tps:.1f} tok/s · "
        f"{fmt_s(elapsed)} · finish: stop"
    )
    json.dumps(r)  # plain data, for the widget


# -- final_bundle ------------------------------------------------------------------------------


def wrapped(*parts: str) -> str:
    return (
        '<div class="nbstream-reply mathjax_ignore tex2jax_ignore">\n'
        + "".join(parts)
        + "</div>\n"
    )


def test_final_bundle_is_html_and_plain_text() -> None:
    name = "openai_chat_text_usage.sse"
    turn = fixture_turn(name)
    bundle = final_bundle(turn)
    # no text/markdown: a second Markdown renderer (one that applies math first, say)
    # could read it differently from the live view
    assert set(bundle) == {"text/html", "text/plain"}
    text = EXP[name]["choices"]["0"]["content"]
    line = readout_text(readout(turn))
    assert line.startswith("complete · first token ")
    assert line.endswith(" · finish: stop") and " tok/s · " in line
    body = f'<div class="nbs-text">\n{render_markdown(text)}</div>\n'
    readout_html = f'<p class="nbs-readout"><sub>{line}</sub></p>\n'
    assert bundle["text/html"] == wrapped(body, readout_html)
    assert bundle["text/plain"] == f"{text}\n\n[{line}]"
    quiet = final_bundle(turn, show_readout=False)
    assert quiet == {"text/html": wrapped(body), "text/plain": text}


def test_estimated_tokens_are_marked_as_estimated() -> None:
    # no usage from the server (llama.cpp): nbstream counts, and says so
    data = sse(openai_chunks(["one", " two", " three"]))
    turn = build(data, prompt_chars=40)
    line = readout_text(readout(turn))
    assert re.search(r" · ~\d+ in · ~3 out tokens \(estimated\) · ", line), line
    assert f"<sub>{line}</sub>" in final_bundle(turn)["text/html"]


def test_tool_calls_are_shown_with_their_arguments() -> None:
    name = "openai_chat_parallel_tool_calls.sse"
    bundle = final_bundle(fixture_turn(name))
    html, plain = bundle["text/html"], bundle["text/plain"]
    for call in EXP[name]["choices"]["0"]["tool_calls"]:
        args = call["arguments"].replace("&", "&amp;").replace('"', "&quot;")
        assert (
            '<details class="nbs-tool-call" open><summary>Tool call '
            f"<code>{call['name']}</code></summary>\n<pre><code>{args}</code></pre>"
        ) in html
        assert call["name"] in plain and call["arguments"] in plain
    assert "finish: tool_calls" in html
    assert "(no reply)" not in plain  # the model did answer: with tool calls


def test_reasoning_refusal_and_error_are_shown() -> None:
    name = "deepseek_reasoner_reasoning_content.sse"
    html = final_bundle(fixture_turn(name))["text/html"]
    c = EXP[name]["choices"]["0"]
    assert html.startswith(
        wrapped()[:-7] + '<details class="nbs-reasoning"><summary>Reasoning</summary>'
    )
    first_line = c["reasoning_content"].splitlines()[0]
    assert first_line in shown_text(html) and c["content"] in shown_text(html)

    name = "openai_chat_refusal.sse"
    bundle = final_bundle(fixture_turn(name))
    refusal = EXP[name]["choices"]["0"]["refusal"]
    assert f"Refusal: {refusal}" in shown_text(bundle["text/html"])
    assert refusal in bundle["text/plain"]

    name = "groq_midstream_error_event.sse"
    turn = fixture_turn(name)
    assert turn.error is not None
    message = EXP[name]["errors"][0]["message"]
    bundle = final_bundle(turn)
    assert message in turn.error.message
    assert f"Error: {turn.error.message}" in shown_text(bundle["text/html"])
    assert f"Error: {turn.error.message}" in bundle["text/plain"]
    assert "<sub>error · " in bundle["text/html"]


def test_a_turn_that_failed_before_any_reply() -> None:
    turn = Turn(Request([{"role": "user", "content": "Hi"}], "m", "openai", "u"))
    turn.status = "error"
    turn.error = ErrorInfo("APIStatusError", "Unauthorized (401): check your key")
    bundle = final_bundle(turn, show_readout=False)
    assert bundle == {
        "text/html": wrapped(
            '<p class="nbs-error"><strong>Error:</strong> Unauthorized (401): check '
            "your key</p>\n"
        ),
        "text/plain": "Error: Unauthorized (401): check your key",
    }
    empty = Turn(Request([], "m", "openai", "u"))
    assert final_bundle(empty, show_readout=False) == {
        "text/html": wrapped("<p><em>(no reply)</em></p>\n"),
        "text/plain": "(no reply)",
    }


def test_html_in_every_part_is_text() -> None:
    turn = everything_turn(f"Here you go: {XSS}", f"x` {XSS} `\n```\n{SCRIPT}\n")
    bundle = final_bundle(turn)
    html = bundle["text/html"]
    assert problems(html) == []
    assert "finish: stop" in shown_text(html) and XSS in shown_text(html)
    assert f"Here you go: {XSS}" in bundle["text/plain"]  # plain text is plain


def test_a_reply_stopped_inside_a_code_block() -> None:
    reply = "Here:\n\n```python\nif a < b:\n    print('<', a)\n"
    turn = text_turn(reply, end="cancel")
    assert turn.status == "cancelled"
    html = final_bundle(turn)["text/html"]
    # the code as written, its block closed before the readout
    code = "if a &lt; b:\n    print('&lt;', a)\n"
    assert f'<pre><code class="language-python">{code}</code></pre>\n</div>\n' in html
    assert '<p class="nbs-readout"><sub>cancelled · ' in html


# -- the batch output and %chat history ---------------------------------------------------------


def test_the_batch_output_has_no_timings() -> None:
    turn = fixture_turn("openai_chat_text_usage.sse")
    bundle = _batch_bundle(turn)
    assert set(bundle) == {"text/html", "text/plain"}
    usage = EXP["openai_chat_text_usage.sse"]["usage"]
    assert turn.cost is not None
    line = (
        f"complete · {usage['prompt_tokens']} in · {usage['completion_tokens']} out "
        f"tokens · {format_usd(turn.cost)} · finish: stop"
    )
    assert f'<p class="nbs-readout"><sub>{line}</sub></p>' in bundle["text/html"]
    assert bundle["text/plain"].endswith(f"[{line}]")
    assert (
        "first token" not in bundle["text/html"] and "tok/s" not in bundle["text/html"]
    )


def test_history_shows_each_message_in_its_own_block() -> None:
    conv = Conversation()
    conv.transcript.append(text_turn("<img src=x onerror=alert(1)>"))
    turn = build(
        sse([chunk({"content": "**ok**"}), chunk({}, "stop")]),
        prompt="<b>me</b> and `code`",
    )
    conv.transcript.append(turn)
    html = _history_html(conv)
    assert problems(html) == []
    assert html.count('<div class="nbs-message nbs-user">') == 2
    assert html.count('<div class="nbs-message nbs-assistant">') == 2
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<p>&lt;b&gt;me&lt;/b&gt; and <code>code</code></p>" in html
    assert "<strong>ok</strong>" in html
    assert _history_text(conv).splitlines() == [
        "user: Hi",
        "assistant (complete): <img src=x onerror=alert(1)>",
        "user: <b>me</b> and `code`",
        "assistant (complete): **ok**",
        f"[{totals_text(totals(conv.transcript))}]",
    ]
    # the model ("m") has no known price: the totals say so rather than guess
    assert "2 turns · " in html and " · cost unknown · " in html
    assert "(no turns yet)" in _history_html(Conversation())
