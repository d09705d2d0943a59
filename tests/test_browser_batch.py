"""A batch's progress view in JupyterLab, in headless Chromium: it fills while the
batch runs (counts, throughput, tokens, cost, ETA, the last errors), and its Stop button,
clicked in the page, stops the batch in the kernel and leaves the store consistent.

Its own JupyterLab and kernel (tests/lab.py), against the scripted loopback model of
tests/batchkit.py. Screenshots go to test-artifacts/; the README's picture of the
view is ``batch-1-running.png``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.batchkit import KEY, ScriptedModel, by_index
from tests.lab import (
    Lab,
    Notebook,
    missing_requirements,
    open_browser,
    wait_until,
    write_notebook,
)
from tests.loopback import LoopbackServer

_MISSING = missing_requirements()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

N = 300


def cells() -> list[str]:
    return [
        # 0: a batch over a DataFrame; the cell ends at once, the view stays live
        "import pandas as pd\n"
        "import nbstream\n"
        f"df = pd.DataFrame({{'review': [f'q{{i}}' for i in range({N})]}})\n"
        "job = nbstream.batch(df, template='{review}', concurrency=8, rpm=1200,\n"
        "                     store='reviews.sqlite')\n"
        "job",
        # 1: what the kernel says after Stop
        "job.wait(timeout=30).status, job.counts['total'] - job.counts['pending']",
        # 2: what the store says: every row that ran has a result, nothing else
        "import sqlite3\n"
        "c = sqlite3.connect('reviews.sqlite')\n"
        "c.execute('PRAGMA integrity_check').fetchone()[0], "
        "c.execute('SELECT count(*) FROM results').fetchone()[0]",
    ]


@pytest.fixture(scope="module")
def nb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Notebook]:
    # a row fails for good (400), two are asked again (429, 500) in each 150, the
    # rest answer in ~0.3 s: enough to watch
    script: dict[int, list[str | None]] = {3: ["400"], 7: ["429-ms"], 11: ["500"]}
    with LoopbackServer(keep_alive=True) as srv:
        srv.serve(ScriptedModel(by_index(script, 150), delay=0.06))
        env = {
            "NBSTREAM_BASE_URL": srv.base_url,
            "NBSTREAM_MODEL": "gpt-4o-mini",
            "NBSTREAM_API_KEY": KEY,
        }
        tmp = tmp_path_factory.mktemp("lab")
        with Lab(tmp, env) as lab:
            write_notebook(lab.root / "batch.ipynb", cells())
            with open_browser(lab.tmp) as browser:
                page = browser.new_page(viewport={"width": 900, "height": 700})
                page.set_default_timeout(15_000)
                try:
                    notebook = Notebook(page, lab, "batch.ipynb").open()
                    notebook.hide_sidebar()
                    yield notebook
                    assert KEY not in page.content()
                finally:
                    page.close()


def view_text(nb: Notebook) -> str:
    return str(nb.output(0).inner_text(timeout=5000))


def done(text: str) -> int:
    m = re.search(r"([\d,]+)/[\d,]+ done", text)
    return int(m.group(1).replace(",", "")) if m else 0


def shown(nb: Notebook, when: Callable[[int], bool]) -> str:
    """The view's text once its done count satisfies ``when``, else ''."""
    text = view_text(nb)
    return text if when(done(text)) else ""


def test_the_view_fills_while_the_batch_runs_and_stop_stops_it(nb: Notebook) -> None:
    nb.run(0, timeout=60)
    # it updates while the batch runs: counts, throughput, ETA, the last errors
    text = wait_until(
        lambda: shown(nb, lambda n: 0.25 * N < n < 0.6 * N),
        90,
        "the view to show a quarter of the batch done",
    )
    assert re.search(r"\d+(\.\d)?/s", text) and "ETA" in text
    assert re.search(r"tokens out · \$\d+\.\d+ · ", text)  # the cost so far
    assert "1 failed" in text and "row 3: " in text  # the last errors
    assert "row 7: retrying" in text and "row 11: retrying" in text
    nb.screenshot("batch-1-running", nb.cell(0))
    later = wait_until(
        lambda: shown(nb, lambda n: n > done(text)), 30, "the view to move on"
    )
    assert done(later) < N
    # Stop, clicked in the page, reaches the kernel while the batch runs
    nb.output(0).get_by_role("button", name="Stop").click()
    wait_until(lambda: "Cancelled" in view_text(nb), 30, "the view to say Cancelled")
    stopped = view_text(nb)
    assert "running" not in stopped and done(stopped) < N
    nb.screenshot("batch-2-stopped", nb.cell(0))
    nb.run(1, timeout=60)
    status, settled = eval(nb.output_text(1).strip().splitlines()[-1])  # a tuple
    assert status == "cancelled" and done(stopped) <= settled < N
    nb.run(2, timeout=30)
    ok, results = eval(nb.output_text(2).strip().splitlines()[-1])
    assert ok == "ok" and results == settled  # done, failed for good, or stopped
