"""How a tool loop's turn is shown when it is over: the blocks of its calls between the
texts of its steps, in the final output (HTML) and in plain text, the
offsets the live views use, and that nothing a model or a tool wrote can become live
HTML."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from nbstream import Client
from nbstream._notebook.render import final_bundle
from nbstream._notebook.toolblocks import loop_view
from nbstream._notebook.toolview import block_html
from tests.loopback import LoopbackServer
from tests.toolkit import Call, calls_reply, text_reply

HOSTILE = (
    '<img src=x onerror="alert(1)"></code></pre></details><script>alert(2)</script>'
)


def shout(text: str) -> str:
    """Returns hostile HTML."""
    return HOSTILE + "\n\nand a blank line"


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def tags_of(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    p = Tags()
    p.feed(html)
    return p.tags


def loop_turn(server: LoopbackServer) -> Any:
    server.enqueue(
        calls_reply(
            "openai",
            [Call("shout", {"text": HOSTILE})],
            text="First <b>step</b>.",
        ),
        text_reply("openai", ["Done", " <i>now</i>."]),
    )
    client = Client(base_url=server.base_url, model="m", api_key="sk-x")
    return client.chat("Go", tools=[shout])


def test_blocks_sit_between_the_steps_and_stay_inert(server: LoopbackServer) -> None:
    turn = loop_turn(server)
    text, blocks = loop_view(turn)
    assert text == "First <b>step</b>.Done <i>now</i>."
    (b,) = blocks
    assert b["at"] == len("First <b>step</b>.") and b["status"] == "complete"
    assert b["result"] == HOSTILE + "\n\nand a blank line"

    html = block_html(b)
    assert "\n" not in html  # one line: one HTML block, even inside Markdown
    tags = tags_of(html)
    assert {t for t, _ in tags} == {"details", "summary", "div", "pre", "code"}
    assert all(
        name in ("class", "data-status") for _, attrs in tags for name, _ in attrs
    )
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html

    bundle = final_bundle(turn)
    out = bundle["text/html"]
    first = out.index("First &lt;b&gt;step&lt;/b&gt;.")
    assert first < out.index(html) < out.index("Done &lt;i&gt;now&lt;/i&gt;.")
    assert "<script" not in out and "<img" not in out and "<b>" not in out
    assert {t for t, _ in tags_of(out)} <= {
        "div",
        "p",
        "details",
        "summary",
        "pre",
        "code",
        "sub",
    }
    plain = bundle["text/plain"]
    assert plain.startswith("First <b>step</b>.\n\n[tool shout(")
    assert "· done ·" in plain and "Done <i>now</i>." in plain


def test_a_turn_without_tools_is_shown_as_before(server: LoopbackServer) -> None:
    server.enqueue(text_reply("openai", ["Hello."]))
    turn = Client(base_url=server.base_url, model="m", api_key="sk-x").chat("Hi")
    assert loop_view(turn) == ("Hello.", [])
    out = final_bundle(turn, show_readout=False)["text/html"]
    assert "nbs-tool" not in out and "<p>Hello.</p>" in out
