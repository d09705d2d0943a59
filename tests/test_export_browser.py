"""The exported HTML page in headless Chromium (Debian's, driven by Playwright): every
case of the hostile corpus in every part of a conversation, and nothing runs.

A hook installed in the page before anything else counts what must never happen: the
corpus's payloads call ``window.__nbsHit``; ``alert`` and friends; an error event on an
element with an ``onerror`` attribute (a broken ``<img>`` would have run it); any
request for something other than the page itself (a remote image, a stylesheet, a
frame). The page is opened as exported, and again with its Content-Security-Policy
taken out: nothing may run either way, because the page is inert by construction and
the policy is a second wall, not the only one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nbstream import ErrorInfo, Request, Transcript, Turn
from nbstream._notebook import export_html
from tests.lab import find_chromium, open_browser

try:
    import playwright.sync_api  # noqa: F401
except ImportError:  # pragma: no cover
    _MISSING: str | None = "playwright is not installed (pip install -e '.[dev]')"
else:
    _MISSING = (
        None if find_chromium() else "Chromium not found: scripts/ensure_chromium.sh"
    )
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")

REPO = Path(__file__).resolve().parents[1]
CASES = json.loads((REPO / "tests/markdown_corpus.json").read_text("utf-8"))["cases"]
HOOK = """(() => {
  const hits = (window.__nbsHits = []);
  window.__nbsHit = (what) => hits.push(`hit:${what}`);
  for (const name of ["alert", "confirm", "prompt", "print"]) {
    window[name] = (what) => hits.push(`${name}:${what}`);
  }
  window.addEventListener("error", (e) => {
    const t = e.target;
    if (t && t !== window && t.hasAttribute && t.hasAttribute("onerror")) {
      hits.push(`onerror:${t.tagName}`);
    }
  }, true);
})();"""
LIVE = (
    "script, iframe, frame, object, embed, svg, form, link, base, [onerror], [onload]"
)


def hostile_turn(md: str) -> Turn:
    """``md`` in every part of a turn a page shows: prompt, reply, reasoning, a tool
    call's name and arguments, refusal, finish reason, error, the model's name."""
    d = Turn(Request([{"role": "user", "content": md}], md, "openai", "u")).to_dict()
    call = {"index": 0, "id": md, "name": md, "arguments": md, "input": None,
            "error": None, "complete": True}  # fmt: skip
    d["choices"][0].update(
        text=md, reasoning=md, refusal=md, finish_reason="stop" + md, tool_calls=[call]
    )
    d["status"], d["error"] = "error", ErrorInfo("APIStatusError", md).to_dict()
    d["model"] = md
    return Turn.from_dict(d)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_export import RED

    turns = [hostile_turn(c["markdown"]) for c in CASES]
    sent = Turn(
        Request(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image", "media_type": "image/png", "data": RED},
                        {"type": "image", "url": "https://example.org/remote.png"},
                    ],
                }
            ],
            "m",
            "openai",
            "u",
        )
    )
    sent.status = "complete"
    sent.choice(0).add_text("A red rectangle.")
    tr = Transcript([*turns, sent], system=CASES[3]["markdown"])
    path = tmp_path_factory.mktemp("export") / "chat.html"
    tr.save(path)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with open_browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def open_page(browser: Any, path: Path) -> tuple[Any, list[str]]:
    page = browser.new_page()
    page.set_default_timeout(15_000)
    page.add_init_script(HOOK)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function("document.readyState === 'complete'")
    return page, requests


@pytest.mark.parametrize("policy", ["with the policy", "without it"])
def test_nothing_in_the_exported_page_runs_or_loads(
    browser: Any, page_file: Path, tmp_path: Path, policy: str
) -> None:
    path = page_file
    if policy == "without it":
        html = page_file.read_text("utf-8")
        meta = (
            f'<meta http-equiv="Content-Security-Policy" content="{export_html.CSP}">\n'
        )
        assert html.count(meta) == 1
        path = tmp_path / "no-policy.html"
        path.write_text(html.replace(meta, ""), "utf-8")
    page, requests = open_page(browser, path)
    try:
        assert page.evaluate("window.__nbsHits") == []
        assert page.locator(LIVE).count() == 0
        assert [u for u in requests if u != path.as_uri()] == []  # nothing fetched
        # what a reader came for is there: every turn, the corpus shown as text,
        # and the thumbnail of the image that was sent, decoded (data: is allowed)
        assert page.locator("h2[id^=turn-]").count() == len(CASES) + 1
        body = page.inner_text("body")
        assert "window.__nbsHit('script')" in body
        assert "https://example.org/remote.png (not loaded)" in body
        imgs = page.locator("img")
        assert imgs.count() == 1
        assert imgs.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]") == [
            True,
            256,
            192,
        ]
    finally:
        page.close()


def test_the_hook_sees_a_payload_that_does_run(
    browser: Any, page_file: Path, tmp_path: Path
) -> None:
    """The control: the same page with a live payload let in (and no policy) is
    counted, so the zeros above mean something."""
    html = page_file.read_text("utf-8")
    meta = f'<meta http-equiv="Content-Security-Policy" content="{export_html.CSP}">\n'
    payload = "<img src=x onerror=\"window.__nbsHit('img')\"><script>alert(1)</script>"
    path = tmp_path / "control.html"
    path.write_text(html.replace(meta, "").replace("</main>", payload + "</main>"))
    page, _ = open_page(browser, path)
    try:
        page.wait_for_function("window.__nbsHits.length >= 3")
        assert sorted(page.evaluate("window.__nbsHits")) == [
            "alert:1",
            "hit:img",
            "onerror:IMG",
        ]
    finally:
        page.close()
