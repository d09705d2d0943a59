"""End to end: the chat panel and ``%%chat`` in JupyterLab, in headless Chromium.

A real ``jupyter lab`` server starts a real kernel whose environment points nbstream at
the loopback server (tests/loopback.py), which replays scripted SSE replies. Playwright
types, clicks and reads the page as a person would. Screenshots go to test-artifacts/.

The tests run in file order and share one server, one JupyterLab and one page (starting
them costs ~20 s); each test begins from an idle panel.
"""

from __future__ import annotations

import ast
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab import (
    Lab,
    Notebook,
    missing_requirements,
    open_browser,
    wait_until,
    write_notebook,
)
from tests.loopback import STALL, Gate, LoopbackServer, Reply, Seen, openai_chunks

_MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

SECRET = "sk-fake-BROWSERSECRET-0123456789abcdef"
MODEL = "browser-test-model"
USAGE = {"prompt_tokens": 12, "completion_tokens": 42, "total_tokens": 54}

CORPUS_PATH = Path(__file__).resolve().parent / "markdown_corpus.json"
CORPUS = json.loads(CORPUS_PATH.read_text("utf-8"))["cases"]
# Every case of the corpus in every part of a turn (reply, reasoning, tool call,
# refusal, finish reason, error), shown as %%chat shows a final reply, and kept as the
# conversation "hostile" for %chat history.
SHOW_CORPUS = f"""\
import json
from IPython.display import display
import nbstream
from nbstream import ErrorInfo, Request, Turn
from nbstream._notebook.render import final_bundle
conv = nbstream.conversation("hostile")
for case in json.load(open({str(CORPUS_PATH)!r}, encoding="utf-8"))["cases"]:
    md = case["markdown"]
    d = Turn(Request([{{"role": "user", "content": md}}], "m", "openai", "u")).to_dict()
    call = {{"index": 0, "id": "c1", "name": md, "arguments": md, "input": None,
            "error": None, "complete": True}}
    d["choices"][0].update(text=md, reasoning=md, refusal=md, finish_reason="stop" + md,
                           tool_calls=[call])
    d["status"], d["error"] = "error", ErrorInfo("APIStatusError", md).to_dict()
    turn = Turn.from_dict(d)
    conv.transcript.append(turn)
    display(final_bundle(turn), raw=True)
"""

CELLS = [
    "import nbstream\nchat = nbstream.ChatWidget()\nchat",  # 0: the panel
    "chat",  # 1: a second view of the same widget
    "t = chat.transcript[-1]\nprint(repr((t.status, t.text)))",  # 2: the Python side
    "%load_ext nbstream",  # 3
    "%%chat\nTell me a long story.",  # 4: stopped mid-reply
    "%%chat\nNow the short version, in Markdown.",  # 5: runs to the end
    SHOW_CORPUS,  # 6: the final output of every hostile case
    "%chat history hostile",  # 7
    "%%chat -c page\nShow me a web page.",  # 8: a hostile reply, live then final
    "%%chat -c cpp\nWhich container?",  # 9: the live view and the saved output agree
]
CHECK_CELL = 2

# Installed in the page before JupyterLab loads: counts what must never happen. The
# corpus calls window.__nbsHit from every payload; alert and friends are counted too,
# and so is every error event on an element with an onerror attribute (an <img> that
# failed to load would have run it), and every live element added to an output.
HOOK = """(() => {
  const hits = (window.__nbsHits = []);
  window.__nbsHit = (what) => hits.push(`hit:${what}`);
  for (const name of ["alert", "confirm", "prompt"]) {
    window[name] = (what) => hits.push(`${name}:${what}`);
  }
  window.addEventListener("error", (e) => {
    const t = e.target;
    if (t && t !== window && t.hasAttribute && t.hasAttribute("onerror")) {
      hits.push(`onerror:${t.tagName}`);
    }
  }, true);
  const LIVE = "script, iframe, img, object, embed, svg, style, form, [onerror], [onload]";
  new MutationObserver((records) => {
    for (const r of records) {
      for (const n of r.addedNodes) {
        if (n.nodeType !== 1 || !n.closest(".jp-OutputArea-output")) continue;
        for (const el of [n, ...n.querySelectorAll("*")]) {
          if (el.matches(LIVE)) hits.push(`element:${el.tagName}`);
        }
      }
    }
  }).observe(document, { childList: true, subtree: true });
})();"""


def words(n: int, prefix: str = "w") -> list[str]:
    return [f" {prefix}{i}" for i in range(n)]


def flat(text: str) -> str:
    """Text with its whitespace runs as single spaces (rendered vs raw Markdown)."""
    return " ".join(text.split())


def sse(datas: list[str]) -> list[bytes]:
    return [f"data: {d}\n\n".encode() for d in datas]


def paced(datas: list[str], delay: float) -> list[bytes | float | str | Gate]:
    out: list[bytes | float | str | Gate] = []
    for i, chunk in enumerate(sse(datas)):
        if i:
            out.append(delay)
        out.append(chunk)
    return out


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def lab(srv: LoopbackServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    env = {
        "NBSTREAM_BASE_URL": srv.base_url,
        "NBSTREAM_MODEL": MODEL,
        "NBSTREAM_API_KEY": SECRET,
    }
    with Lab(tmp_path_factory.mktemp("lab"), env) as lab:
        write_notebook(lab.root / "chat.ipynb", CELLS)
        yield lab


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Any]:
    with open_browser(lab.tmp) as b:
        yield b


class Frames:
    """What the page sent and received over its websockets (to see the view ask for a
    resync, and what the kernel sends it)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.received: list[str] = []

    def attach(self, ws: Any) -> None:
        def keep(into: list[str]) -> Any:
            def on_frame(payload: str | bytes) -> None:
                if isinstance(payload, bytes):
                    payload = payload.decode("utf-8", "replace")
                into.append(payload)

            return on_frame

        ws.on("framesent", keep(self.sent))
        ws.on("framereceived", keep(self.received))

    def count(self, needle: str) -> int:
        return sum(needle in p for p in self.sent)

    def count_received(self, *needles: str, since: int = 0) -> int:
        return sum(all(n in p for n in needles) for p in self.received[since:])


@pytest.fixture(scope="module")
def frames() -> Frames:
    return Frames()


@pytest.fixture(scope="module")
def nb(browser: Any, lab: Lab, frames: Frames) -> Iterator[Notebook]:
    page = browser.new_page(viewport={"width": 1100, "height": 1000})
    page.set_default_timeout(15_000)
    page.add_init_script(HOOK)
    page.on("websocket", frames.attach)
    try:
        notebook = Notebook(page, lab, "chat.ipynb").open()
        notebook.hide_sidebar()
        notebook.run(0)
        notebook.run(1)
        wait_until(lambda: page.locator(".nbs-chat").count() == 2, 15, "two views")
        notebook.save()  # a reload restores the views from these outputs
        yield notebook
        # No page may ever show the API key.
        assert SECRET not in page.content()
    finally:
        page.close()


class Panel:
    """One view of the ChatWidget in the page."""

    def __init__(self, nb: Notebook, index: int = 0) -> None:
        self.nb = nb
        self.root = nb.page.locator(".nbs-chat").nth(index)

    @property
    def status(self) -> str:
        return str(self.root.get_attribute("data-status") or "")

    def reply(self) -> Any:
        return self.root.locator(".nbs-msg.nbs-assistant").last

    def reply_text(self) -> str:
        return str(self.reply().locator(".nbs-body").inner_text()).strip()

    def reply_status(self) -> str:
        return str(self.reply().get_attribute("data-status") or "")

    def wait_idle(self, timeout: float = 15) -> None:
        wait_until(lambda: self.status == "idle", timeout, "an idle panel")

    def wait_reply_status(self, status: str, timeout: float = 15) -> None:
        wait_until(
            lambda: self.reply_status() == status, timeout, f"the reply to be {status}"
        )

    def replies(self) -> int:
        return int(self.root.locator(".nbs-msg.nbs-assistant").count())

    def ask(self, text: str) -> None:
        """Type ``text`` and press Enter; return once the new reply is in the list (so
        that ``reply()`` is the new one, not the last one before it)."""
        before = self.replies()
        box = self.root.get_by_role("textbox", name="Message")
        box.fill(text)
        box.press("Enter")
        wait_until(lambda: self.replies() > before, 10, "the new reply to appear")

    def button(self, name: str) -> Any:
        return self.root.get_by_role("button", name=name, exact=True)


@pytest.fixture
def panel(nb: Notebook) -> Panel:
    p = Panel(nb)
    p.wait_idle()
    return p


def last_turn(nb: Notebook) -> tuple[str, str]:
    nb.run(CHECK_CELL)
    out = nb.output_text(CHECK_CELL).strip()
    status, text = ast.literal_eval(out)
    return str(status), str(text)


def new_request(srv: LoopbackServer, before: int, timeout: float = 10) -> Seen:
    assert srv.wait_for(lambda: len(srv.requests) > before, timeout), "no request"
    return srv.requests[before]


# -- the panel --------------------------------------------------------------------------
def test_panel_is_accessible(nb: Notebook, panel: Panel) -> None:
    log = panel.root.get_by_role("log")
    assert log.count() == 1
    assert panel.root.get_by_role("textbox", name="Message").count() == 1
    assert panel.button("Send").is_enabled()
    assert panel.button("Stop").count() == 1
    assert panel.button("Stop").is_disabled()  # nothing to stop yet
    assert MODEL in panel.root.locator(".nbs-title").inner_text()


# What JupyterLab's command mode would do with these if it saw them: delete the cell
# (d, d), cut it (x), add cells (a, b), undo (z); VS Code deletes a cell on Delete.
NOTEBOOK_KEYS = ["Escape", "d", "d", "x", "a", "b", "z", "Delete", "Backspace"]


def test_keys_typed_in_the_panel_stay_in_the_panel(nb: Notebook, panel: Panel) -> None:
    editors = nb.panel.locator(".jp-Notebook .jp-Cell .jp-InputArea-editor")
    cells = editors.all_inner_texts()
    prompts = [nb.prompt(i) for i in range(len(CELLS))]
    assert len(cells) == len(CELLS)
    # where JupyterLab listens for its shortcuts (the document, bubbling): record any
    # key that comes from the panel
    nb.page.evaluate(
        """() => {
          window.__panelKeys = [];
          for (const type of ["keydown", "keypress", "keyup"]) {
            document.addEventListener(type, (e) => {
              if (e.target.closest && e.target.closest(".nbs-chat")) {
                window.__panelKeys.push(`${type} ${e.key}`);
              }
            });
          }
        }"""
    )
    box = panel.root.get_by_role("textbox", name="Message")
    box.click()
    for key in ["h", "i", *NOTEBOOK_KEYS]:
        nb.page.keyboard.press(key)
    # Escape kept the focus in the box
    assert box.evaluate("el => el === document.activeElement")
    nb.page.keyboard.press("Shift+Enter")  # a new line (JupyterLab: run the cell)
    nb.page.keyboard.type("ok")
    panel.button("Send").focus()  # and on a button
    for key in NOTEBOOK_KEYS:
        nb.page.keyboard.press(key)
    # (key events are dispatched, and JupyterLab's shortcuts run, as each key is
    # pressed: nothing to wait for)
    assert nb.page.evaluate("() => window.__panelKeys") == []
    # the notebook is as it was: same cells, same sources, nothing run again
    assert editors.all_inner_texts() == cells
    assert [nb.prompt(i) for i in range(len(CELLS))] == prompts
    # the box has what was typed (Backspace took the "z", Delete nothing)
    assert box.input_value() == "hiddxab\nok"
    assert panel.replies() == 0 and panel.status == "idle"  # nothing was sent
    box.fill("")


def test_reply_streams_and_stop_keeps_the_partial_reply(
    nb: Notebook, panel: Panel, srv: LoopbackServer
) -> None:
    # paragraphs of 16 words: while it streams, the finished ones are kept as they are
    full = [w + ("\n\n" if i % 16 == 15 else "") for i, w in enumerate(words(300))]
    srv.enqueue(Reply(chunks=paced(openai_chunks(full), 0.03)))
    before = len(srv.requests)
    panel.ask("Tell me a long story")
    seen = new_request(srv, before)
    assert seen.json["messages"][-1] == {
        "role": "user",
        "content": "Tell me a long story",
    }
    assert seen.headers["authorization"] == f"Bearer {SECRET}"

    # the text visibly grows while the server is still sending
    wait_until(lambda: panel.reply_text(), 10, "the first words")
    assert panel.status == "streaming"
    lengths = []
    for _ in range(4):
        shown = panel.reply_text()
        assert flat("".join(full)).startswith(flat(shown)), shown  # in order, once
        lengths.append(len(shown))
        time.sleep(0.3)
    assert seen.finished_at is None, "the server finished before the test looked"
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths), lengths
    assert panel.button("Stop").is_enabled() and panel.button("Send").is_disabled()
    nb.screenshot("browser-1-streaming")

    panel.button("Stop").click()
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5), (
        "the server never saw the client hang up"
    )
    panel.wait_reply_status("cancelled")
    panel.wait_idle()
    shown = panel.reply_text()
    nb.screenshot("browser-2-stopped")

    # the partial reply stays, in the page and in chat.transcript
    assert 16 < len(shown.split()) < len(full)
    assert panel.reply().locator(".nbs-body p").count() > 1
    assert flat("".join(full)).startswith(flat(shown))
    status, text = last_turn(nb)
    assert status == "cancelled"
    assert flat(text) == flat(shown)
    # the readout shows the tokens
    readout = panel.reply().locator(".nbs-readout").inner_text()
    assert "cancelled" in readout
    assert re.search(r"\d+ out tokens", readout), readout
    assert re.search(r"\d+ out tokens", panel.root.locator(".nbs-totals").inner_text())


XSS = [
    "Look: ",
    '<img src=x onerror="window.__xss=1">',
    " and ",
    "<script>window.__xss=2</script>",
    " and [x](javascript:window.__xss=3)",
    " end.",
]


def test_model_output_stays_inert(
    nb: Notebook, panel: Panel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply.events(openai_chunks(XSS, usage=USAGE), delay=0.02))
    panel.ask("Show me some HTML")
    panel.wait_reply_status("complete")
    body = panel.reply().locator(".nbs-body")
    assert body.locator("img, script, iframe").count() == 0
    assert body.locator("a[href^='javascript']").count() == 0
    text = body.inner_text()
    assert '<img src=x onerror="window.__xss=1">' in text
    assert "<script>window.__xss=2</script>" in text
    links = body.locator("a")
    if links.count():
        links.first.click()
    nb.page.wait_for_timeout(200)
    assert nb.page.evaluate("() => window.__xss") is None
    # usage from the provider, not an estimate
    assert "42 out tokens" in panel.reply().locator(".nbs-readout").inner_text()


def test_two_views_stay_identical(
    nb: Notebook, panel: Panel, srv: LoopbackServer, frames: Frames
) -> None:
    views = nb.page.locator(".nbs-chat")
    assert views.count() == 2
    since = len(frames.received)
    reply = ["Two views:\n\n", "- one\n", "- two\n\n", "```python\nx = 1\n```\n"]
    srv.enqueue(Reply.events(openai_chunks(reply, usage=USAGE), delay=0.02))
    panel.ask("Say it twice")
    panel.wait_reply_status("complete")

    def snapshot(i: int) -> Any:
        return views.nth(i).evaluate(
            """root => [...root.querySelectorAll('.nbs-msg')].map(m => [
                 m.dataset.id, m.dataset.status,
                 m.querySelector('.nbs-body').innerHTML,
                 m.querySelector('.nbs-readout').textContent])"""
        )

    wait_until(lambda: snapshot(0) == snapshot(1), 5, "the two views to agree")
    assert len(snapshot(0)) >= 2
    # the page got the new messages as changes, never the whole conversation again
    assert frames.count_received('"upsert"', since=since) == 2  # the start, the end
    assert frames.count_received('"update"', '"_messages_rev"', since=since) == 0
    assert frames.count_received('"update"', '"status"', since=since) >= 2
    assert views.nth(1).locator(".nbs-msg.nbs-assistant li").count() >= 2


def test_reload_mid_reply_resyncs_and_finishes(
    nb: Notebook, panel: Panel, srv: LoopbackServer, frames: Frames
) -> None:
    full = words(60, "r")
    datas = openai_chunks(full, usage=USAGE)
    gate = Gate()
    # role + 20 words, then the server waits for the test, then the rest
    srv.enqueue(
        Reply(chunks=[*paced(datas[:21], 0.01), gate, *paced(datas[21:], 0.05)])
    )
    before = len(srv.requests)
    panel.ask("Keep going after a reload")
    seen = new_request(srv, before)
    assert srv.wait_for(lambda: seen.stalled_at is not None, 10)
    wait_until(lambda: "r19" in panel.reply_text(), 10, "the first 20 words")

    resyncs = frames.count('"resync"')
    nb.open()  # a fresh page load, the reply still running in the kernel
    nb.hide_sidebar()
    again = Panel(nb)
    again.root.wait_for(timeout=20_000)
    # restored mid-reply: the words sent before the reload are back (a snapshot)
    wait_until(lambda: "r19" in again.reply_text(), 10, "the restored text")
    assert again.status == "streaming" and not gate.is_open
    assert seen.client_closed_at is None
    assert frames.count('"resync"') > resyncs, "the view did not ask for a resync"
    nb.screenshot("browser-3-reloaded")

    gate.open()
    # deltas flow into the restored view again while the server is still sending
    wait_until(
        lambda: "r30" in again.reply_text() and again.reply_status() == "streaming",
        5,
        "live deltas after the resync",
    )
    assert seen.finished_at is None
    again.wait_reply_status("complete")
    assert again.reply_text() == "".join(full).strip()
    again.wait_idle()
    # the second view, restored too, agrees
    assert Panel(nb, 1).reply_text() == again.reply_text()
    nb.screenshot("browser-4-final")


@pytest.mark.parametrize("when", ["headers sent, no data", "no headers yet"])
def test_stop_before_the_first_token(
    nb: Notebook, panel: Panel, srv: LoopbackServer, when: str
) -> None:
    if when == "no headers yet":
        srv.enqueue(Reply(delay_headers=30, chunks=sse(openai_chunks([" late"]))))
    else:
        srv.enqueue(Reply(chunks=[STALL]))
    before = len(srv.requests)
    panel.ask("Are you there?")
    seen = new_request(srv, before)
    assert srv.wait_for(lambda: seen.stalled_at is not None, 10)
    wait_until(lambda: panel.status == "streaming", 5, "the panel to stream")
    assert panel.reply_text() == ""
    clicked = time.monotonic()
    panel.button("Stop").click()
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5)
    assert seen.client_closed_at is not None and seen.client_closed_at - clicked < 3
    panel.wait_reply_status("cancelled")
    panel.wait_idle()
    # no reply text, and the panel says why rather than showing an empty message
    assert panel.reply_text() == "Stopped before the first token."
    assert last_turn(nb) == ("cancelled", "")


def test_error_shows_provider_message_and_retry_resends(
    nb: Notebook, panel: Panel, srv: LoopbackServer
) -> None:
    provider = "Incorrect API key provided: sk-fake-****cdef."
    srv.enqueue(
        Reply.json(
            401,
            {
                "error": {
                    "message": provider,
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )
    )
    before = len(srv.requests)
    panel.ask("What is 2+2?")
    new_request(srv, before)
    panel.wait_reply_status("error")
    error = panel.reply().locator(".nbs-error")
    assert error.is_visible()
    assert error.get_attribute("role") == "alert"
    # the provider's words, with what it echoed of the key masked (even the part it
    # masked itself: no 8 characters of the key are shown anywhere)
    assert "Incorrect API key provided: ***" in error.inner_text()
    assert "****cdef." in error.inner_text()
    assert SECRET[:8] not in error.inner_text()
    retry = panel.reply().get_by_role("button", name="Retry")
    assert retry.is_visible()
    nb.screenshot("browser-5-error")

    srv.enqueue(Reply.events(openai_chunks([" Four", "."], usage=USAGE), delay=0.02))
    before, replies = len(srv.requests), panel.replies()
    retry.click()
    seen = new_request(srv, before)
    wait_until(lambda: panel.replies() > replies, 10, "the retried reply")
    assert seen.json["messages"][-1] == {"role": "user", "content": "What is 2+2?"}
    panel.wait_reply_status("complete")
    assert panel.reply_text() == "Four."
    assert last_turn(nb) == ("complete", " Four.")


# -- %%chat -----------------------------------------------------------------------------
STORY = ["## A long story\n\n", "Once", *words(250, "s")]
SHORT = [
    "## The short version\n\n",
    "It was a **dark** and *stormy* night.\n\n",
    "- one\n",
    "- two\n\n",
    "```python\n",
    "print('hello')\n",
    "```\n",
]


def test_magic_streams_into_the_cell_and_stops(
    nb: Notebook, srv: LoopbackServer
) -> None:
    nb.run(3)
    srv.enqueue(Reply(chunks=paced(openai_chunks(STORY), 0.03)))
    before = len(srv.requests)
    nb.run(4, wait=False)
    seen = new_request(srv, before)
    view = nb.output(4).locator(".nbs-reply")
    view.wait_for(timeout=15_000)
    body = view.locator(".nbs-body")
    wait_until(lambda: "s3" in body.inner_text(), 10, "the story to start")
    # Markdown while it streams: the heading is a heading
    assert body.locator("h2").inner_text() == "A long story"
    n1 = len(body.inner_text())
    time.sleep(0.4)
    assert len(body.inner_text()) > n1 and seen.finished_at is None
    nb.screenshot("magic-1-streaming")

    view.get_by_role("button", name="Stop").click()
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5)
    nb.wait_cell_done(4, 15)
    # the live view was replaced by HTML: the partial story, stopped
    out = nb.output(4)
    wait_until(lambda: out.locator(".nbs-reply").count() == 0, 5, "the view to go")
    md = out.locator(".jp-RenderedHTMLCommon .nbstream-reply")
    assert md.count() >= 1
    assert md.locator("h2").first.inner_text() == "A long story"
    text = md.first.inner_text()
    assert "Once s0" in text and " s249" not in text
    assert "cancelled" in text
    nb.screenshot("magic-2-stopped", nb.cell(4))


def test_magic_final_output_is_html(nb: Notebook, srv: LoopbackServer) -> None:
    nb.run(3)
    srv.enqueue(Reply.events(openai_chunks(SHORT, usage=USAGE), delay=0.02))
    nb.run(5, timeout=30)
    md = nb.output(5).locator(".jp-RenderedHTMLCommon .nbstream-reply").first
    md.wait_for()
    assert md.locator("h2").inner_text() == "The short version"
    assert md.locator("strong").inner_text() == "dark"
    assert md.locator("li").count() == 2
    assert "print('hello')" in md.locator("pre").inner_text()
    assert "complete" in md.inner_text() and "42 out tokens" in md.inner_text()
    nb.screenshot("magic-3-final", nb.cell(5))


# -- hostile Markdown in JupyterLab's own rendering ---------------------------------------


def hits(nb: Notebook) -> list[str]:
    return list(nb.page.evaluate("() => window.__nbsHits"))


def outputs(out: Any) -> Any:
    """What the outputs themselves hold (not JupyterLab's prompts and icons)."""
    return out.locator(".jp-OutputArea-output")


def no_math(out: Any) -> None:
    """MathJax typeset nothing in ``out`` (JupyterLab typesets HTML outputs)."""
    assert out.locator("mjx-container, .MathJax, .MathJax_Preview").count() == 0


def test_final_outputs_of_the_hostile_corpus_run_nothing(nb: Notebook) -> None:
    nb.run(6, timeout=60)
    out = nb.output(6)
    replies = out.locator(".jp-RenderedHTMLCommon .nbstream-reply")
    wait_until(lambda: replies.count() == len(CORPUS), 15, "every case shown")
    nb.page.wait_for_timeout(1500)  # failed image loads and MathJax have had their go
    assert hits(nb) == []
    assert outputs(out).locator("script, iframe, img, svg, object, embed").count() == 0
    live = "[onerror], [onload], [onmouseover], [ontoggle]"
    assert outputs(out).locator(live).count() == 0
    hrefs = out.locator("a").evaluate_all("els => els.map(a => a.getAttribute('href'))")
    assert hrefs and all(re.match(r"(?i)(https?|mailto):", h) for h in hrefs), hrefs
    no_math(out)
    text = out.inner_text()
    assert "window.__nbsHit('img')" in text  # the payloads are shown, as text
    assert "$\\pi r^2$" in text  # math is not typeset: shown as written
    nb.screenshot("hostile-1-final-outputs")  # the cell is ~30,000 px high


def test_history_of_the_hostile_corpus_runs_nothing(nb: Notebook) -> None:
    nb.run(3)
    nb.run(7, timeout=60)
    out = nb.output(7)
    history = out.locator(".jp-RenderedHTMLCommon .nbstream-history")
    history.wait_for()
    # each message a block of its own, its label an element of its own
    assert history.locator(".nbs-message.nbs-user").count() == len(CORPUS)
    assert history.locator(".nbs-message.nbs-assistant .nbs-role").count() == len(
        CORPUS
    )
    starts_with_fence = next(
        i for i, c in enumerate(CORPUS) if c["markdown"].startswith("```html")
    )
    reply = history.locator(".nbs-message.nbs-assistant").nth(starts_with_fence)
    assert (
        reply.locator(".nbs-content pre code")
        .first.inner_text()
        .startswith("<!DOCTYPE html>")
    )
    nb.page.wait_for_timeout(1500)
    assert hits(nb) == []
    assert outputs(out).locator("script, iframe, img, svg, object, embed").count() == 0
    no_math(out)


PAGE_REPLY = [
    "```html\n<!DOCTYPE html>\n<html><body onload=\"window.__nbsHit('onload')\">\n",
    "<script>window.__nbsHit('fenced')</script>\n</body></html>\n```\n\n",
    "$ a\n   ```\n<img src=x onerror=\"window.__nbsHit('math-trap')\">\n   ```\n$ b\n\n",
    "Also <script>window.__nbsHit('inline')</script> and ",
    "[x](javascript:window.__nbsHit('link')) and ![i](https://img.invalid/x.png).",
]


def test_a_hostile_reply_runs_nothing_live_or_final(
    nb: Notebook, srv: LoopbackServer
) -> None:
    nb.run(3)
    srv.enqueue(Reply.events(openai_chunks(PAGE_REPLY, usage=USAGE), delay=0.05))
    nb.run(8, timeout=30)
    out = nb.output(8)
    final = out.locator(".jp-RenderedHTMLCommon .nbstream-reply")
    final.wait_for()
    links = final.locator("a")
    for i in range(links.count()):
        links.nth(i).click(modifiers=["Control"])  # nothing of theirs runs on a click
    nb.page.wait_for_timeout(1500)
    assert hits(nb) == []
    assert outputs(out).locator("script, iframe, img").count() == 0
    shown = final.locator(".nbs-text").inner_text()
    assert "<script>window.__nbsHit('fenced')</script>" in shown
    assert "image: i" in shown  # an image is a link, not loaded
    no_math(out)


# a reply that the escaping this replaced saved differently from what was shown
CPP_REPLY = [
    "Use `std::vector<int>` (see https://en.cppreference.com/w/cpp/container/vector",
    " or [the docs](https://isocpp.org/std/the-standard)) | not a table.\n\n",
    "- costs $5 and $6, `a<b>` \\\\(x\\\\)\n",
    "- &copy; &notit; &ampxx; &semi; &NotNestedGreaterGreater; &AElig `` ` ``\n\n",
    "```cpp\nstd::vector<int> v{1, 2};\n```\n\n",
    "Done <b>now</b>.",
]


def test_the_saved_output_shows_what_the_live_view_showed(
    nb: Notebook, srv: LoopbackServer
) -> None:
    nb.run(3)
    datas = openai_chunks(CPP_REPLY, usage=USAGE)
    gate = Gate()
    n = 1 + len(CPP_REPLY)  # the role chunk and the text
    srv.enqueue(Reply(chunks=[*paced(datas[:n], 0.05), gate, *sse(datas[n:])]))
    before = len(srv.requests)
    nb.run(9, wait=False)
    seen = new_request(srv, before)
    assert srv.wait_for(lambda: seen.stalled_at is not None, 10)
    body = nb.output(9).locator(".nbs-reply .nbs-body")
    wait_until(lambda: "Done <b>now</b>." in body.inner_text(), 10, "all the text")
    nb.page.wait_for_timeout(300)  # the last paint
    body.evaluate("b => b.querySelectorAll('.nbs-copy').forEach(c => c.remove())")
    live = body.inner_text()
    live_html = body.inner_html()
    # the same elements: markdown-it in the page, markdown-it-py in the kernel
    tags = "el => [...el.querySelectorAll('*')].map(e => e.tagName).join(' ')"
    live_tags = body.evaluate(tags)
    gate.open()
    nb.wait_cell_done(9, 15)
    saved = nb.output(9).locator(".jp-RenderedHTMLCommon .nbstream-reply .nbs-text")
    saved.wait_for()
    assert saved.inner_text() == live
    assert "std::vector<int>" in live and "&lt;" not in live
    assert "$5 and $6" in live and "\\(x\\)" in live
    assert saved.evaluate(tags) == live_tags
    assert "<code>std::vector&lt;int&gt;</code>" in live_html
    no_math(nb.output(9))
    nb.screenshot("magic-4-saved-equals-live", nb.cell(9))
