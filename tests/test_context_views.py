"""Context in the notebook: ``%%chat --with df,fig,notes`` in a real kernel, and the
thumbnail of an image that was sent, in the cell's final output, ``%chat history``
and the ChatWidget's user message (the browser side: js/test/thumbnails.test.js)."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Iterator
from typing import Any

import matplotlib
import pytest
from PIL import Image

from nbstream import Request, Turn
from nbstream._core.context import Named, as_messages
from nbstream._notebook.render import final_bundle, message_html
from tests.kernel import Kernel, clean_env
from tests.loopback import LoopbackServer, Reply, openai_chunks

matplotlib.use("agg")
import matplotlib.pyplot as plt

SECRET = "sk-test-CONTEXTSECRET-0123456789abcdef"
THUMB = re.compile(
    r'<img class="nbs-thumb" src="data:(image/png|image/jpeg);base64,([A-Za-z0-9+/=]+)"'
    r' width="(\d+)" height="(\d+)" alt="([^"]*)"'
)


def turn_with(*items: Any) -> Turn:
    turn = Turn(Request(as_messages(list(items)), "m", "openai", "http://x/v1"))
    turn.status = "complete"
    turn.choices[0].add_text("It rises.")
    return turn


def figure(w: float = 6.4, h: float = 4.8) -> Any:
    fig, ax = plt.subplots(figsize=(w, h), dpi=100)
    ax.plot([1, 2, 4])
    plt.close(fig)
    return fig


def thumbs(html_text: str) -> list[tuple[str, Image.Image, int, int, str]]:
    out = []
    for media, data, w, h, alt in THUMB.findall(html_text):
        im = Image.open(io.BytesIO(base64.b64decode(data)))
        out.append((media, im, int(w), int(h), html.unescape(alt)))
    return out


def test_the_final_output_shows_a_small_thumbnail_of_the_figure_sent() -> None:
    turn = turn_with("How does it go?", Named("fig", figure()))
    bundle = final_bundle(turn)
    ((media, im, w, h, alt),) = thumbs(bundle["text/html"])
    assert media == "image/png" and im.size == (w, h) == (160, 120)
    assert alt.startswith("fig: image/png 640x480, ")
    full = turn.request.messages[0]["content"][-1]["data"]
    assert full not in bundle["text/html"]  # a thumbnail, not the image sent
    assert bundle["text/plain"].startswith("[Sent: fig: image/png 640x480, ")
    assert "\n\nIt rises.\n\n[complete" in bundle["text/plain"]
    assert bundle["text/html"].index("nbs-sent") < bundle["text/html"].index("It rises")


def test_an_image_sent_by_url_is_never_loaded_and_labels_are_text() -> None:
    url = {"type": "image", "media_type": "image/png", "url": "https://evil.test/x.png"}
    jpeg = io.BytesIO()
    Image.new("RGB", (400, 200), "red").save(jpeg, format="JPEG")
    turn = turn_with(
        "Compare", url, Named('<img src=x onerror="alert(1)">', jpeg.getvalue())
    )
    page = final_bundle(turn)["text/html"]
    assert "evil.test" in page and 'src="https://evil.test' not in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=" in page
    ((media, im, w, h, _),) = thumbs(page)
    assert (media, im.format, (w, h)) == ("image/jpeg", "JPEG", (160, 80))


def test_history_shows_text_and_thumbnails_never_the_data() -> None:
    turn = turn_with("Look <b>here</b>", figure())
    content = turn.request.messages[0]["content"]
    page = message_html("user", content)
    assert "Look &lt;b&gt;here&lt;/b&gt;" in page
    assert len(thumbs(page)) == 1
    assert content[1]["data"][:200] not in page


def test_the_widget_user_message_carries_the_thumbnails() -> None:
    from nbstream._notebook.widget_messages import user_message_of

    msg = user_message_of(turn_with("Describe", Named("fig", figure(3, 6))))
    assert msg["text"] == "Describe\n\nImage `fig`:"
    ((image,),) = [msg["images"]]
    assert image["label"].startswith("fig: image/png 300x600, ")
    assert (image["media_type"], image["width"], image["height"]) == (
        "image/png",
        80,
        160,
    )
    with Image.open(io.BytesIO(base64.b64decode(image["data"]))) as im:
        assert im.size == (80, 160)
    assert "images" not in user_message_of(turn_with("Just text"))


# -- %%chat --with, in a real kernel ---------------------------------------------------


@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def kernel(srv: LoopbackServer) -> Iterator[Kernel]:
    env = clean_env(
        NBSTREAM_BASE_URL=srv.base_url,
        NBSTREAM_MODEL="ctx-model",
        NBSTREAM_API_KEY=SECRET,
    )
    k = Kernel(env)
    try:
        ex = k.run(
            "%load_ext nbstream\n"
            "import matplotlib; matplotlib.use('agg')\n"
            "import matplotlib.pyplot as plt, pandas as pd\n"
            "df = pd.DataFrame({'month': [1, 2, 3], 'sales': [10.5, 12.0, 9.25]})\n"
            "fig, ax = plt.subplots(figsize=(4, 3), dpi=100); ax.plot(df.sales)\n"
            "notes = 'March had a strike.'"
        )
        assert ex.error is None, ex.error
        yield k
        leaked = [m for m in k.iopub() if SECRET in json.dumps(m.content)]
        assert not leaked, leaked[:1]
    finally:
        k.close()


def test_with_sends_the_variables_after_the_cell_in_order(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply.events(openai_chunks([" Sales", " dipped."])))
    ex = kernel.run("%%chat -c with --with df,fig,notes\nWhy did sales dip?")
    assert ex.error is None, ex.error
    (user,) = srv.requests[-1].json["messages"]
    text, image, rest = user["content"]
    assert text["type"] == "text"
    assert text["text"].startswith(
        "Why did sales dip?\n\nDataFrame `df`: 3 rows, 2 columns\n\nColumns:"
    )
    assert "| 2 | 3 | 9.25 |" in text["text"] and "(all of it shown)" in text["text"]
    assert text["text"].endswith("\n\nImage `fig`:")
    assert image["type"] == "image_url"
    assert image["image_url"]["url"].startswith("data:image/png;base64,iVBOR")
    assert rest == {
        "type": "text",
        "text": "str `notes`, 19 characters:\nMarch had a strike.",
    }
    final = ex.of_type("update_display_data")[-1].content["data"]
    ((_, im, _, _, alt),) = thumbs(final["text/html"])
    assert im.size == (160, 120) and alt.startswith("fig: image/png 400x300, ")
    assert "Sales dipped." in final["text/plain"]


@pytest.mark.parametrize(
    ("names", "needle"),
    [
        ("df,nothing_here", "--with: 'nothing_here' is not a variable in the notebook"),
        ("ghost,spook", "--with: 'ghost', 'spook' are not variables in the notebook"),
        ("df,,fig", "--with 'df,,fig' has an empty name"),
    ],
)
def test_with_a_name_that_does_not_exist_is_a_usage_error(
    kernel: Kernel, srv: LoopbackServer, names: str, needle: str
) -> None:
    before = len(srv.requests)
    ex = kernel.run(f"%%chat -c with-bad --with {names}\nAnything?")
    assert ex.reply is not None and ex.reply["status"] == "error"  # Run All stops
    assert "UsageError: " in ex.stderr and needle in ex.stderr
    assert len(srv.requests) == before  # nothing was sent


def test_the_widget_sends_text_and_objects_and_shows_the_thumbnail(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply.events(openai_chunks([" A", " rising", " line."])))
    ex = kernel.run(
        "import nbstream\n"
        "chat = nbstream.ChatWidget()\n"
        "turn = await chat.send(['What is this?', fig])\n"
        "user = chat.messages[-2]"
    )
    assert ex.error is None, ex.error
    (sent,) = srv.requests[-1].json["messages"]
    assert sent["content"][0] == {"type": "text", "text": "What is this?"}
    assert sent["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    user = json.loads(kernel.eval("__import__('json').dumps(user)").strip("'"))
    assert user["text"] == "What is this?"
    ((image,),) = [user["images"]]
    assert image["label"].startswith("image/png 400x300, ")
    assert (image["width"], image["height"]) == (160, 120)
    assert kernel.eval("turn.text") == "' A rising line.'"
    # Retry asks the same again: the same parts, the image included
    srv.enqueue(Reply.events(openai_chunks([" Again."])))
    assert kernel.run("await chat.retry()").error is None
    assert srv.requests[-1].json["messages"][-1] == sent
