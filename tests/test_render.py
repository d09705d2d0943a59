"""What a finished reply looks like in a saved notebook: ``final_bundle``, the readout
line, and ``escape_html_outside_code``, which keeps a model's HTML from running.

Where node and the front end's ``marked`` are installed (``js/node_modules``, as
``scripts/setup.sh`` does), the escaped Markdown is also parsed by ``marked``, the
renderer JupyterLab and the widget use: every ``<`` left in it must be inside code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nbstream import ErrorInfo, Request, Turn
from nbstream._core.pipeline import Pipeline
from nbstream._core.transcript import Api
from nbstream._notebook.render import (
    escape_html_outside_code,
    final_bundle,
    readout,
    readout_text,
)
from tests.conftest import STREAMS, api_of, expected
from tests.loopback import openai_chunks

EXP = expected()
T0, STEP = 0.5, 0.25  # event i of a stream arrives at T0 + i * STEP
XSS = '<img src=x onerror="alert(1)">'
SCRIPT = "<script>alert(document.cookie)</script>"


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
    data: bytes, api: str = "openai", *, end: str = "close", prompt_chars: int = 0
) -> Turn:
    """Feed a stream one SSE event at a time; ``end``: close, cancel or open."""
    the_api = cast(Api, api)
    turn = Turn(Request([{"role": "user", "content": "Hi"}], "m", the_api, "u"))
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


# -- marked, the renderer JupyterLab and the widget use, as a second opinion ------------

MARKED = (
    Path(__file__).resolve().parents[1] / "js/node_modules/marked/lib/marked.esm.js"
)

ORACLE_JS = """
import { marked } from %s;
import readline from "node:readline";
const walk = (tokens, acc) => {
  for (const t of tokens || []) {
    if (t.type === "html") acc.html.push(t.raw);
    if (t.type === "code" || t.type === "codespan")
      acc.lt += ((t.text || "") + (t.lang || "")).split("<").length - 1;
    if (t.tokens) walk(t.tokens, acc);
    if (t.items) for (const i of t.items) walk(i.tokens, acc);
    if (t.type === "table") {
      for (const h of t.header) walk(h.tokens, acc);
      for (const r of t.rows) for (const c of r) walk(c.tokens, acc);
    }
  }
};
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const acc = { html: [], lt: 0, crash: null };
  try { walk(marked.lexer(JSON.parse(line), { gfm: true }), acc); }
  catch (e) { acc.crash = String(e); }
  process.stdout.write(JSON.stringify(acc) + "\\n");
});
"""

Oracle = Callable[[str], dict[str, Any]]


@pytest.fixture(scope="module")
def marked_or_none() -> Iterator[Oracle | None]:
    """``marked(md)``: the raw HTML tokens marked finds, and how many ``<`` it puts
    in code (code blocks, code spans, info strings). One node process per module;
    None where node or the front end's packages are not installed."""
    node = shutil.which("node")
    if node is None or not MARKED.exists():
        yield None
        return
    script = ORACLE_JS % json.dumps(MARKED.as_uri())
    proc = subprocess.Popen(
        [node, "--input-type=module", "-e", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def ask(md: str) -> dict[str, Any]:
        stdin.write(json.dumps(md) + "\n")
        stdin.flush()
        answer = stdout.readline()
        assert answer, "the marked process died"
        return cast(dict[str, Any], json.loads(answer))

    yield ask
    stdin.close()  # node exits at the end of its input
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def marked(marked_or_none: Oracle | None) -> Oracle:
    if marked_or_none is None:
        pytest.skip("needs node and js/node_modules (scripts/setup.sh installs them)")
    return marked_or_none


def assert_no_live_html(
    marked: Oracle, md: str, allowed: int = 0, *, in_given: bool = False
) -> None:
    """marked finds no raw HTML in ``md`` (but ``allowed`` tags of our own), and
    every other ``<`` is inside code."""
    got = marked(md)
    if in_given:
        assume(got["crash"] is None)  # marked itself fails on some input: not ours
    assert got["crash"] is None, got["crash"]
    assert len(got["html"]) == allowed, got["html"]
    assert md.count("<") == got["lt"] + allowed


# -- escape_html_outside_code: examples ------------------------------------------------------

KEPT = [
    # (markdown, what must come out)
    ("a <b> c", "a &lt;b> c"),
    ("if a<b and b<c", "if a&lt;b and b&lt;c"),
    ("use `a<b` and <i>", "use `a<b` and &lt;i>"),
    ("``x<`y``, then <i>", "``x<`y``, then &lt;i>"),
    ("```\n<b>\n```\n<i>", "```\n<b>\n```\n&lt;i>"),
    ("~~~\n<b>\n~~~\n<i>", "~~~\n<b>\n~~~\n&lt;i>"),
    ("```python\nif a < b:\n    pass\n```\n", "```python\nif a < b:\n    pass\n```\n"),
    # a longer fence: a shorter run inside does not close it
    ("````\n```\n<b>\n````\n<i>", "````\n```\n<b>\n````\n&lt;i>"),
    # a tilde fence is not closed by backticks, nor the other way round
    ("~~~\n```\n<b>\n~~~\n<i>", "~~~\n```\n<b>\n~~~\n&lt;i>"),
    ("```\n~~~\n<b>\n```\n<i>", "```\n~~~\n<b>\n```\n&lt;i>"),
    # an unclosed fence runs to the end (a reply stopped in a code block)
    ("see <this>:\n```c\nint *p = a<b;\n", "see &lt;this>:\n```c\nint *p = a<b;\n"),
    # up to three spaces before a fence (as in a numbered list)
    (
        "1. Run:\n\n   ```\n   <b>\n   ```\n<i>",
        "1. Run:\n\n   ```\n   <b>\n   ```\n&lt;i>",
    ),
    # in doubt (that line may have ended a list item, and the fence in it): escaped
    ("   ```\n<b>\n   ```\n<i>", "   ```\n&lt;b>\n   ```\n&lt;i>"),
    # four spaces is not a fence (it is indented code); escaping there is harmless
    ("    ```\n<b>", "    ```\n&lt;b>"),
    # a closing fence has nothing after it; with an info string it is content
    ("```\n```js\n<b>\n```\n<i>", "```\n```js\n<b>\n```\n&lt;i>"),
    # Windows line endings
    ("```\r\n<b>\r\n```\r\n<i>", "```\r\n<b>\r\n```\r\n&lt;i>"),
]


@pytest.mark.parametrize(("md", "want"), KEPT)
def test_escapes_prose_but_not_code(md: str, want: str) -> None:
    assert escape_html_outside_code(md) == want


# Replies that put live HTML on the page with a naive "skip what looks like code":
# each is prose to CommonMark or to marked (checked against marked below).
ATTACKS = [
    # a line that only looks like a closing fence
    "```\ncode\n```js\n```\n" + XSS,
    # a backtick in the info string: not a fence at all
    "```a`\n" + XSS,
    # unpaired backtick runs are literal, not code
    "`` " + XSS + " `",
    "a ``` " + XSS + " ```` b",
    # a code span cannot cross a blank line, nor an HTML block that starts a line
    "`a\n\n" + XSS + "\n\nb`",
    "`a\n<div onmouseover=alert(1)>x</div>`",
    "`a\n# b ` `" + XSS + "`",
    # an escaped backtick opens nothing
    "\\`" + XSS + "`",
    "\\`` `" + XSS + "` ",
    # table cells split code spans; links and autolinks swallow backticks
    "| a | b |\n|---|---|\n| `x | " + XSS + " ` | y |",
    "[x](`) " + XSS + " `",
    "https://x.com/` " + XSS + " `",
    # a fence inside a list item ends with the item, not where it seems to
    "- ```\n  x\n  ```\n  " + XSS + "\n",
    "1. a\n\n   ```\n   x\n```\n<b>\n```\n" + XSS + "\n",
    # closers that only some renderers accept
    "```\nx\n```~\n" + XSS + "\n```\n" + XSS,
    "```\nx\n```\t\n" + XSS + "\n```\n" + XSS,
    # a link definition may take the next line as its target (marked)
    "[a]:\n```\n" + XSS + "\n",
    # only \n, \r\n and \r end a line in Markdown
    "x\u2028```\u2028" + XSS,
    # script, too
    "Sure! " + SCRIPT,
]


@pytest.mark.parametrize("md", ATTACKS)
def test_html_that_a_renderer_would_run_is_escaped(md: str) -> None:
    out = escape_html_outside_code(md)
    assert "<img" not in out and "<div" not in out and "<script" not in out
    assert out.replace("&lt;", "<") == md  # nothing else changed


@pytest.mark.parametrize("md", ATTACKS)
def test_marked_finds_no_html_in_the_attacks(marked: Oracle, md: str) -> None:
    assert_no_live_html(marked, escape_html_outside_code(md))


# -- escape_html_outside_code: properties ------------------------------------------------------

PIECES = st.sampled_from(
    [
        "`", "``", "```", "````", "~~~", "~", "<", ">", XSS, "<div x>", SCRIPT,
        "\n", "\n\n", "\r\n", " ", "   ", "    ", "\t", "|", "-", "- ", "1. ", "> ",
        "*", "_", "\\", "[x]", "](", "]:", "(", ")", "#", "---", "$", "http://x.y/",
        "a", "b c", "js", "&",
    ]
)  # fmt: skip
MARKDOWNISH = st.one_of(st.lists(PIECES, max_size=30).map("".join), st.text())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MARKDOWNISH)
def test_for_any_text_marked_finds_no_lt_outside_code(
    marked: Oracle, text: str
) -> None:
    assert_no_live_html(marked, escape_html_outside_code(text), in_given=True)


@given(MARKDOWNISH)
def test_only_lt_is_ever_changed_and_escaping_twice_changes_nothing(text: str) -> None:
    out = escape_html_outside_code(text)
    if "&lt;" not in text:
        assert out.replace("&lt;", "<") == text
    assert escape_html_outside_code(out) == out  # code is never escaped on a re-render


PROSE = st.text(
    alphabet=st.characters(exclude_characters="`~]\\$|\r\n", exclude_categories=["Cs"])
)
CODE_LINE = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"])
).filter(lambda s: not re.match(r"[ \t]*[`~]{3}", s))


@given(PROSE)
def test_prose_without_code_has_every_lt_escaped(text: str) -> None:
    assert escape_html_outside_code(text) == text.replace("<", "&lt;")


@given(st.lists(PROSE.map(str.strip), max_size=3), st.lists(CODE_LINE, max_size=5))
def test_a_fenced_block_is_kept_whole_and_the_prose_around_it_escaped(
    prose: list[str], code: list[str]
) -> None:
    before, after = " ".join(prose[:2]), " ".join(prose[2:])
    block = "```python\n" + "".join(line + "\n" for line in code) + "```\n"
    md = f"{before}\n\n{block}\n{after}"
    want = f"{before.replace('<', '&lt;')}\n\n{block}\n{after.replace('<', '&lt;')}"
    assert escape_html_outside_code(md) == want


@given(
    PROSE.filter(lambda s: "://" not in s and "www." not in s),
    st.text(alphabet="<>=ab ()[]{}:;.,'\"/*+-_!?#", min_size=1).filter(
        lambda s: s.strip() == s and "](" not in s and "]:" not in s
    ),
)
def test_an_inline_code_span_is_kept(prose: str, code: str) -> None:
    md = f"{prose} `{code}` {prose}"
    esc = prose.replace("<", "&lt;")
    assert escape_html_outside_code(md) == f"{esc} `{code}` {esc}"


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
    assert readout_text(r) == (
        f"complete · first token {fmt_s(ttft)} · {usage['prompt_tokens']} in · "
        f"{out} out tokens · {tps:.1f} tok/s · {fmt_s(elapsed)} · finish: stop"
    )
    json.dumps(r)  # plain data, for the widget


# -- final_bundle ------------------------------------------------------------------------------


def test_final_bundle_has_the_reply_and_the_readout_in_both_formats() -> None:
    name = "openai_chat_text_usage.sse"
    turn = fixture_turn(name)
    bundle = final_bundle(turn)
    assert set(bundle) == {"text/markdown", "text/plain"}
    md, plain = bundle["text/markdown"], bundle["text/plain"]
    text = EXP[name]["choices"]["0"]["content"]
    line = readout_text(readout(turn))
    assert line.startswith("complete · first token ")
    assert line.endswith(" · finish: stop") and " tok/s · " in line
    assert md == f"{text}\n\n<sub>{line}</sub>"
    assert plain == f"{text}\n\n[{line}]"
    quiet = final_bundle(turn, show_readout=False)
    assert quiet == {"text/markdown": text, "text/plain": text}


def test_estimated_tokens_are_marked_as_estimated() -> None:
    # no usage from the server (llama.cpp): nbstream counts, and says so
    data = sse(openai_chunks(["one", " two", " three"]))
    turn = build(data, prompt_chars=40)
    line = readout_text(readout(turn))
    assert re.search(r" · ~\d+ in · ~3 out tokens \(estimated\) · ", line), line
    assert f"<sub>{line}</sub>" in final_bundle(turn)["text/markdown"]


def test_tool_calls_are_shown_with_their_arguments() -> None:
    name = "openai_chat_parallel_tool_calls.sse"
    bundle = final_bundle(fixture_turn(name))
    md, plain = bundle["text/markdown"], bundle["text/plain"]
    for call in EXP[name]["choices"]["0"]["tool_calls"]:
        assert f"**Tool call** `{call['name']}`" in md
        assert f"```json\n{call['arguments']}\n```" in md
        assert call["name"] in plain and call["arguments"] in plain
    assert "finish: tool_calls" in md
    assert "(no reply)" not in plain  # the model did answer: with tool calls


def test_reasoning_refusal_and_error_are_shown() -> None:
    name = "deepseek_reasoner_reasoning_content.sse"
    md = final_bundle(fixture_turn(name))["text/markdown"]
    c = EXP[name]["choices"]["0"]
    assert md.startswith("> **Reasoning**\n>\n> ")
    first_line = c["reasoning_content"].splitlines()[0]
    assert f"> {first_line}" in md and c["content"] in md

    name = "openai_chat_refusal.sse"
    bundle = final_bundle(fixture_turn(name))
    refusal = EXP[name]["choices"]["0"]["refusal"]
    assert f"**Refusal:** {refusal}" in bundle["text/markdown"]
    assert refusal in bundle["text/plain"]

    name = "groq_midstream_error_event.sse"
    turn = fixture_turn(name)
    assert turn.error is not None
    message = EXP[name]["errors"][0]["message"]
    bundle = final_bundle(turn)
    assert message in turn.error.message
    assert f"**Error:** {turn.error.message}" in bundle["text/markdown"]
    assert f"Error: {turn.error.message}" in bundle["text/plain"]
    assert "<sub>error · " in bundle["text/markdown"]


def test_a_turn_that_failed_before_any_reply() -> None:
    turn = Turn(Request([{"role": "user", "content": "Hi"}], "m", "openai", "u"))
    turn.status = "error"
    turn.error = ErrorInfo("APIStatusError", "Unauthorized (401): check your key")
    bundle = final_bundle(turn, show_readout=False)
    assert bundle == {
        "text/markdown": "**Error:** Unauthorized (401): check your key",
        "text/plain": "Error: Unauthorized (401): check your key",
    }
    empty = Turn(Request([], "m", "openai", "u"))
    assert final_bundle(empty, show_readout=False) == {
        "text/markdown": "*(no reply)*",
        "text/plain": "(no reply)",
    }


def test_html_in_a_reply_never_reaches_the_markdown_unescaped() -> None:
    reply = f"Here you go: {XSS}\n\n{SCRIPT}\n\nand `<b>` in code"
    turn = text_turn(reply)
    bundle = final_bundle(turn)
    md = bundle["text/markdown"]
    assert "<img" not in md and "<script" not in md
    assert "&lt;img" in md and "&lt;script>" in md  # shown as text, not dropped
    assert "`<b>`" in md  # code shows what the model wrote
    assert reply in bundle["text/plain"]  # plain text is plain


def test_html_in_every_other_part_is_escaped_too(
    marked_or_none: Oracle | None,
) -> None:
    datas = [
        json.dumps(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "reasoning_content": f"think {XSS}",
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "function": {
                                        "name": f"x` {XSS} `",
                                        # a fence of its own, to break out of ours
                                        "arguments": f'{{"a": 1}}\n```\n{XSS}\n',
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ),
        chunk({"refusal": f"No {SCRIPT}"}),
        chunk({}, f"stop{XSS}"),  # the finish reason is the server's text, too
    ]
    turn = build(sse(datas))
    turn.status = "error"
    turn.error = ErrorInfo("APIStatusError", f"Invalid value: '{XSS}'")
    md = final_bundle(turn)["text/markdown"]
    assert "finish: stop&lt;img" in md
    args = turn.tool_calls[0].arguments
    m = re.search(r"^(`{3,})json\n" + re.escape(args) + r"\n\1$", md, re.MULTILINE)
    assert m is not None and len(m[1]) > 3  # its fence is longer than any in it
    outside = md.replace(m[0], "")
    assert "<img" not in outside and "<script" not in outside
    if marked_or_none is not None:
        assert_no_live_html(marked_or_none, md, allowed=2)  # only our <sub></sub>


def test_a_reply_stopped_inside_a_code_block(marked_or_none: Oracle | None) -> None:
    reply = "Here:\n\n```python\nif a < b:\n    print('<', a)\n"
    turn = text_turn(reply, end="cancel")
    assert turn.status == "cancelled"
    md = final_bundle(turn)["text/markdown"]
    assert md.startswith(reply)  # the code as written
    before_readout = md[: md.index("<sub>")]
    fences = re.findall(r"^```", before_readout, re.MULTILINE)
    assert len(fences) == 2  # closed before the readout, which is not shown as code
    assert "<sub>cancelled · " in md
    if marked_or_none is not None:
        assert_no_live_html(marked_or_none, md, allowed=2)
