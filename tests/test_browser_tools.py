"""Tool calls in JupyterLab, in headless Chromium: ``%%chat --tools`` (each call a block
in the live view, then in the saved output between the steps' texts), the chat panel's
Approve button, and that whatever a tool returns stays text (a page-level hook counts
any script a reply could run).

Its own JupyterLab and kernel (tests/lab.py), against a loopback server whose model
side is scripted (tests/toolkit.py). Screenshots go to test-artifacts/; the README's
picture of a tool call is ``tools-2-final.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
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
from tests.loopback import Gate, LoopbackServer, Reply
from tests.toolkit import Call, openai_call_chunks, text_reply

_MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

SECRET = "sk-fake-BROWSERTOOLS-0123456789abcdef"
HOSTILE = '<img src=x onerror="window.__ran=(window.__ran||0)+1"><script>window.__ran=9</script>'

CELLS = [
    # 0: the functions, and the extension
    "import asyncio\n"
    "def lookup(city: str) -> dict:\n"
    '    """Current temperature in a city."""\n'
    '    return {"city": city, "temp_c": {"Paris": 21, "Rome": 25}[city]}\n'
    "def page(url: str) -> str:\n"
    '    """A web page, as text."""\n'
    f"    return {HOSTILE!r}\n"
    "%load_ext nbstream",
    "%%chat --tools lookup\nIs it warmer in Paris or Rome?",  # 1
    "%%chat --tools page\nWhat does example.test say?",  # 2: a hostile result
    "import nbstream\nw = nbstream.ChatWidget(tools=[lookup], approve=True)\nw",  # 3
]


def paced(datas: list[str], delay: float) -> list[bytes | float | str | Gate]:
    out: list[bytes | float | str | Gate] = []
    for i, d in enumerate(datas):
        if i:
            out.append(delay)
        out.append(f"data: {d}\n\n".encode())
    return out


@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def nb(
    srv: LoopbackServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Notebook]:
    env = {
        "NBSTREAM_BASE_URL": srv.base_url,
        "NBSTREAM_MODEL": "browser-tools-model",
        "NBSTREAM_API_KEY": SECRET,
    }
    with Lab(tmp_path_factory.mktemp("lab"), env) as lab:
        write_notebook(lab.root / "tools.ipynb", CELLS)
        with open_browser(lab.tmp) as browser:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.set_default_timeout(15_000)
            try:
                notebook = Notebook(page, lab, "tools.ipynb").open()
                notebook.hide_sidebar()
                dismiss_dialog(notebook)
                notebook.run(0)
                yield notebook
                assert SECRET not in page.content()
                assert page.evaluate("() => window.__ran || 0") == 0
            finally:
                page.close()


def dismiss_dialog(nb: Notebook) -> None:
    """On a loaded machine JupyterLab may open a dialog over a fresh notebook (seen
    once in a full run: it took every click). Keep a picture of it and accept it."""
    dialog = nb.page.locator(".jp-Dialog")
    try:
        dialog.first.wait_for(timeout=1500)
    except Exception:
        return  # none: the usual case
    nb.screenshot("tools-0-dialog")
    accept = dialog.locator(".jp-Dialog-button.jp-mod-accept")
    if accept.count():
        accept.first.click()
    else:
        nb.page.keyboard.press("Escape")
    dialog.first.wait_for(state="detached", timeout=10_000)
    nb.wait_kernel_idle()


def blocks(nb: Notebook, i: int) -> Any:
    return nb.output(i).locator(".nbs-tool")


def test_calls_stream_as_blocks_then_stay_in_the_output(
    nb: Notebook, srv: LoopbackServer
) -> None:
    gate = Gate()
    calls = [Call("lookup", {"city": "Paris"}), Call("lookup", {"city": "Rome"})]
    answer = text_reply(
        "openai", ["Rome", " is", " warmer:", " 25 °C", " against", " 21 °C."]
    )
    answer.chunks.insert(3, gate)  # the answer waits while the test looks
    srv.enqueue(
        Reply(
            chunks=paced(
                openai_call_chunks(calls, text="Let me check both.", piece=4), 0.02
            )
        ),
        answer,
    )
    nb.run(1, wait=False)
    # live: a block per call, done, in the reply's text after the first step
    wait_until(
        lambda: (
            blocks(nb, 1).count() == 2
            and all(
                s == "complete"
                for s in blocks(nb, 1).evaluate_all(
                    "ns => ns.map(n => n.dataset.status)"
                )
            )
        ),
        15,
        "two finished blocks in the live view",
    )
    live = nb.output(1).locator(".nbs-reply")
    order = live.locator(".nbs-body > *").evaluate_all(
        "ns => ns.filter(n => !n.hidden).map(n => n.className)"
    )
    assert order[:3] == ["nbs-segment", "nbs-tool", "nbs-tool"]
    assert "lookup(" in blocks(nb, 1).first.locator("summary").inner_text()
    nb.screenshot("tools-1-live", nb.cell(1))
    gate.open()
    nb.wait_cell_done(1, 15)
    # the saved output: static HTML, the blocks between the texts, collapsed
    out = nb.output(1)
    wait_until(
        lambda: out.locator("details.nbs-tool").count() == 2, 10, "the final blocks"
    )
    text = out.inner_text()
    assert (
        text.index("Let me check both.")
        < text.index("lookup(")
        < text.index("Rome is warmer")
    )
    assert out.locator("details.nbs-tool[open]").count() == 0
    out.locator("details.nbs-tool summary").nth(1).click()  # open the Rome call
    opened = out.locator("details.nbs-tool").nth(1)
    assert '"temp_c": 25' in opened.inner_text()
    assert "done" in opened.locator("summary").inner_text()
    nb.screenshot("tools-2-final", nb.cell(1))


def test_whatever_a_tool_returns_stays_text(nb: Notebook, srv: LoopbackServer) -> None:
    srv.enqueue(
        Reply(chunks=paced(openai_call_chunks([Call("page", {"url": HOSTILE})]), 0.01)),
        text_reply("openai", ["It", " says", " nothing", " useful."]),
    )
    nb.run(2, timeout=30)
    out = nb.output(2)
    wait_until(lambda: out.locator("details.nbs-tool").count() == 1, 10, "the block")
    out.locator("details.nbs-tool summary").click()
    assert HOSTILE in out.locator("details.nbs-tool").inner_text()
    assert out.locator("img, script").count() == 0
    assert nb.page.evaluate("() => window.__ran || 0") == 0


def test_the_panel_asks_before_a_call(nb: Notebook, srv: LoopbackServer) -> None:
    srv.enqueue(
        Reply(
            chunks=paced(openai_call_chunks([Call("lookup", {"city": "Paris"})]), 0.01)
        ),
        text_reply("openai", ["Paris", " is", " at", " 21 °C."]),
    )
    nb.run(3)
    panel = nb.output(3).locator(".nbs-chat")
    box = panel.get_by_role("textbox", name="Message")
    box.fill("How warm is Paris?")
    box.press("Enter")
    approve = panel.get_by_role("button", name="Approve lookup")
    approve.wait_for(timeout=15_000)
    before = len(srv.requests)
    assert panel.locator(".nbs-tool").first.get_attribute("data-status") == "approval"
    nb.screenshot("tools-3-approve", nb.cell(3))
    assert len(srv.requests) == before  # nothing goes on until someone answers
    approve.click()
    wait_until(
        lambda: "21 °C." in panel.locator(".nbs-assistant").last.inner_text(),
        15,
        "the answer after the call",
    )
    wait_until(lambda: panel.get_attribute("data-status") == "idle", 10, "idle")
    block = panel.locator(".nbs-assistant .nbs-tool").first
    assert block.get_attribute("data-status") == "complete"
    assert "done" in block.locator("summary").inner_text()
