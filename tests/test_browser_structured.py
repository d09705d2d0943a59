"""A structured reply (``response_format=``) in JupyterLab, in headless Chromium: the
``%%chat --schema`` live view and the chat panel draw the value as a table that grows
while the reply streams, and nothing in it runs, live or saved.

The same set-up as test_browser.py (a real JupyterLab and kernel, the loopback server
replaying scripted SSE replies), with a JupyterLab of its own.
"""

from __future__ import annotations

import json
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
from tests.loopback import Gate, LoopbackServer, Reply, openai_chunks
from tests.test_browser import HOOK, paced

_MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

SECRET = "sk-fake-STRUCTUREDSECRET-0123456789abcdef"
HOSTILE = "<img src=x onerror=\"window.__nbsHit('row')\">"
ROWS = [
    {"name": "Mercury", "moons": 0, "note": "closest to the Sun"},
    {"name": "Venus", "moons": 0, "note": HOSTILE},
    {"name": "Earth", "moons": 1, "note": "<script>window.__nbsHit('s')</script>"},
    {"name": "Mars", "moons": 2, "note": "red"},
    {"name": "Jupiter", "moons": 95, "note": "largest"},
    {"name": "Saturn", "moons": 146, "note": "rings"},
]
TEXT = json.dumps({"planets": ROWS})
PIECES = [TEXT[i : i + 6] for i in range(0, len(TEXT), 6)]
HALF = TEXT.index('{"name": "Mars"')  # where the server waits for the test

CELLS = [
    "%load_ext nbstream\n"
    "from pydantic import BaseModel\n"
    "class Planet(BaseModel):\n"
    "    name: str\n"
    "    moons: int\n"
    "    note: str\n"
    "class Planets(BaseModel):\n"
    "    planets: list[Planet]",
    "%%chat --schema Planets\nThe first six planets, please.",
    "import nbstream\nchat = nbstream.ChatWidget(response_format=Planets)\nchat",
]


def held_reply(gate: Gate) -> Reply:
    """The JSON in small pieces, 20 ms apart, held at ``gate`` before Mars."""
    datas = openai_chunks(PIECES)
    chunks = paced(datas, 0.02)
    sent = 0
    for i, c in enumerate(chunks):
        if isinstance(c, bytes) and b'"content"' in c:
            sent += len(json.loads(c[6:])["choices"][0]["delta"]["content"])
            if sent > HALF:
                chunks.insert(i, gate)
                break
    return Reply(chunks=chunks)


@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def nb(srv: LoopbackServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = {
        "NBSTREAM_BASE_URL": srv.base_url,
        "NBSTREAM_MODEL": "structured-model",
        "NBSTREAM_API_KEY": SECRET,
    }
    with Lab(tmp_path_factory.mktemp("lab"), env) as lab:
        write_notebook(lab.root / "structured.ipynb", CELLS)
        with open_browser(lab.tmp) as browser:
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.set_default_timeout(15_000)
            page.add_init_script(HOOK)
            try:
                notebook = Notebook(page, lab, "structured.ipynb").open()
                notebook.hide_sidebar()
                notebook.run(0)
                yield notebook
                assert SECRET not in page.content()
            finally:
                page.close()


def hits(nb: Notebook) -> list[str]:
    return list(nb.page.evaluate("() => window.__nbsHits"))


def test_chat_cell_draws_a_growing_table_then_saves_it(
    nb: Notebook, srv: LoopbackServer
) -> None:
    gate = Gate()
    srv.enqueue(held_reply(gate))
    nb.run(1, wait=False)
    live = nb.output(1).locator(".nbs-reply")
    rows = live.locator("table.nbs-rows tbody tr")
    wait_until(lambda: srv.requests and srv.requests[-1].stalled_at, 15, "the hold")
    # the server holds the rest: the table so far is on the page, growing
    wait_until(lambda: rows.count() == 3, 10, "three rows drawn live")
    names = rows.locator("td:first-child").all_inner_texts()
    assert names == ["Mercury", "Venus", "Earth"]
    assert HOSTILE in rows.nth(1).inner_text()  # as text
    nb.screenshot("structured-1-live", nb.cell(1))
    gate.open()
    nb.wait_cell_done(1, 20)
    final = nb.output(1).locator(".jp-RenderedHTMLCommon .nbstream-reply")
    final.wait_for()
    saved = final.locator("table.nbs-rows tbody tr")
    assert saved.locator("td:first-child").all_inner_texts() == [
        r["name"] for r in ROWS
    ]
    assert final.locator("details.nbs-raw").count() == 1
    nb.page.wait_for_timeout(1000)
    assert hits(nb) == []
    assert nb.output(1).locator("img, script").count() == 0
    nb.screenshot("structured-2-saved", nb.cell(1))


def test_the_panel_draws_the_reply_as_a_table(
    nb: Notebook, srv: LoopbackServer
) -> None:
    nb.run(2)
    panel = nb.page.locator(".nbs-chat").first
    panel.wait_for()
    gate = Gate()
    srv.enqueue(held_reply(gate))
    box = panel.get_by_role("textbox", name="Message")
    box.fill("The first six planets, please.")
    box.press("Enter")
    reply = panel.locator(".nbs-msg.nbs-assistant").last
    rows = reply.locator("table.nbs-rows tbody tr")
    wait_until(lambda: rows.count() == 3, 15, "three rows drawn live")
    gate.open()
    wait_until(lambda: reply.get_attribute("data-status") == "complete", 15, "the end")
    assert rows.locator("td:first-child").all_inner_texts() == [r["name"] for r in ROWS]
    nb.page.wait_for_timeout(1000)
    assert hits(nb) == []
    assert panel.locator(".nbs-messages img, .nbs-messages script").count() == 0
    nb.screenshot("structured-3-panel", panel)
