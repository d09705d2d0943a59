"""The thumbnail of an image sent, in JupyterLab in headless Chromium: in a ``%%chat
--with fig`` cell's final output and in the ChatWidget's user message, drawn from the
data sent (it decodes to 160 px), with no request from the page to anywhere but
JupyterLab itself. (The DOM rules themselves: js/test/thumbnails.test.js.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.lab import (
    Lab,
    Notebook,
    missing_requirements,
    open_browser,
    wait_until,
    write_notebook,
)
from tests.loopback import LoopbackServer, Reply, openai_chunks

_MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

CELLS = [
    "%load_ext nbstream\n"
    "import matplotlib; matplotlib.use('agg')\n"
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots(figsize=(4, 3), dpi=100)\n"
    "ax.plot([1, 3, 2]); ax.set_title('<img src=x onerror=alert(1)>')\n"
    "fig.savefig  # the title is text drawn in pixels, never markup",
    "%%chat --with fig\nWhat does the chart show?",
    "import nbstream\nchat = nbstream.ChatWidget()\nchat",
    "turn = await chat.send(['And now?', fig])",
]


@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def nb(srv: LoopbackServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    env = {"NBSTREAM_BASE_URL": srv.base_url, "NBSTREAM_MODEL": "thumb-model"}
    tmp = tmp_path_factory.mktemp("lab")
    with Lab(tmp, env) as lab, open_browser(lab.tmp) as browser:
        write_notebook(lab.root / "context.ipynb", CELLS)
        page = browser.new_page(viewport={"width": 1100, "height": 1000})
        page.set_default_timeout(15_000)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: requests.append(f"dialog:{d.message}"))
        try:
            notebook = Notebook(page, lab, "context.ipynb").open()
            notebook.hide_sidebar()
            notebook.run(0)
            yield notebook, requests, urlsplit(lab.url).netloc
        finally:
            page.close()


def decoded_width(img: Any) -> int:
    """The width the browser decoded the image to (0 if it could not)."""
    wait_until(lambda: img.evaluate("i => i.complete"), 10, "the image to load")
    return int(img.evaluate("i => i.naturalWidth"))


def test_thumbnails_show_in_the_cell_output_and_the_panel(
    nb: Any, srv: LoopbackServer
) -> None:
    notebook, requests, lab_host = nb
    srv.enqueue(Reply.events(openai_chunks([" A", " peak."])))
    notebook.run(1, timeout=30)
    img = notebook.output(1).locator(".nbstream-reply img.nbs-thumb")
    img.wait_for()
    assert str(img.get_attribute("src")).startswith("data:image/png;base64,")
    assert decoded_width(img) == 160
    assert "fig: image/png 400x300" in notebook.output_text(1)
    assert "A peak." in notebook.output_text(1)
    notebook.screenshot("context-1-cell-thumbnail", notebook.cell(1))

    notebook.run(2)
    srv.enqueue(Reply.events(openai_chunks([" Same."])))
    notebook.run(3, timeout=30)
    user = notebook.page.locator(".nbs-chat .nbs-msg.nbs-user").last
    thumb = user.locator(".nbs-thumbs img")
    thumb.wait_for()
    assert decoded_width(thumb) == 160
    assert user.locator("figcaption").inner_text().startswith("image/png 400x300")
    notebook.screenshot("context-2-panel-thumbnail", notebook.cell(2))

    # the page asked nothing of anyone but JupyterLab (its widget code loads from blob:
    # URLs of its own); no dialog ever opened
    own = ("data:", f"blob:http://{lab_host}/")
    elsewhere = [
        u for u in requests if not u.startswith(own) and urlsplit(u).netloc != lab_host
    ]
    assert elsewhere == []
