"""Variables, DataFrames and figures as context: ``client.chat(["Describe this", fig,
df])``. What reaches the server (the exact request bodies, both wire formats, over the
real loopback server), what the record keeps, and what is refused before sending."""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from nbstream import (
    Client,
    ConfigurationError,
    Conversation,
    ImageTooLargeError,
    NbstreamError,
    Transcript,
)
from nbstream._core.context import Named, allocate, as_messages
from nbstream._core.images import png_encode, sniff
from tests.clientkit import MODES, chat, client_for, collect
from tests.loopback import LoopbackServer, Reply, anthropic_chunks, openai_chunks

matplotlib.use("agg")
import matplotlib.pyplot as plt

APIS = ["openai", "anthropic"]


def reply(api: str, text: str = "ok") -> Reply:
    chunks = openai_chunks([text]) if api == "openai" else anthropic_chunks([text])
    return Reply.events(chunks)


def sent(server: LoopbackServer, i: int = -1) -> dict[str, Any]:
    body: dict[str, Any] = server.requests[i].json
    return body


def wire_images(api: str, content: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """``(media type, bytes)`` of each image in a wire message's content."""
    out = []
    for p in content:
        if api == "openai" and p.get("type") == "image_url":
            url = p["image_url"]["url"]
            media, data = re.fullmatch(r"data:([^;]+);base64,(.*)", url).groups()  # type: ignore[union-attr]
            out.append((media, base64.b64decode(data, validate=True)))
        elif api == "anthropic" and p.get("type") == "image":
            src = p["source"]
            assert src["type"] == "base64"
            out.append(
                (src["media_type"], base64.b64decode(src["data"], validate=True))
            )
    return out


def sales(rows: int = 1000, extra_cols: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "city": rng.choice(["Paris", "Rome", "Oslo"], rows),
            "month": rng.integers(1, 13, rows),
            "revenue": rng.normal(100, 20, rows).round(2),
        }
    )
    for i in range(extra_cols):
        df[f"x{i}"] = rng.random(rows)
    return df


def figure(w: float = 4, h: float = 3, dpi: float = 50) -> Any:
    fig, ax = plt.subplots(figsize=(w, h), dpi=dpi)
    ax.plot([1, 3, 2], color="red")
    ax.set_title("sales")
    plt.close(fig)  # not shown anywhere; still drawable
    return fig


def png_bytes(w: int, h: int, noise: bool = False) -> bytes:
    if not noise:
        return png_encode(b"\x20\x40\x60\xff" * (w * h), w, h)
    px = np.random.default_rng(0).integers(0, 256, (h, w, 4), dtype=np.uint8)
    px[..., 3] = 255  # opaque, so the PNG is RGB noise: it does not compress
    return png_encode(px.tobytes(), w, h)


def jpeg_bytes(w: int = 48, h: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


# -- DataFrames: the table text, the budget, what was left out ------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_a_dataframe_reaches_both_formats_as_markdown_tables(
    server: LoopbackServer, api: str, mode: str
) -> None:
    df = sales()
    server.enqueue(reply(api))
    turn = chat(client_for(server, api=api), mode, ["Which city sold most?", df])
    assert turn.status == "complete"
    msg = sent(server)["messages"][-1]
    assert msg["role"] == "user"
    text = msg["content"]  # no image: one string, which every server takes
    assert isinstance(text, str)
    assert text.startswith("Which city sold most?\n\nDataFrame: 1,000 rows, 3 columns")
    assert "| column | dtype | non-null |" in text
    assert "| revenue | float64 | 1,000 |" in text
    first = df.iloc[0]
    assert f"| 0 | {first.city} | {first.month} | {first.revenue:.6g} |" in text
    assert f"| mean | {df.month.mean():.6g} | {df.revenue.mean():.6g} |" in text
    assert text.rstrip().endswith("Left out: 950 of 1,000 rows.")
    assert turn.request.messages == [msg]  # the record keeps what was sent


@pytest.mark.parametrize("budget", [60, 150, 400, 2000])
def test_the_budget_holds_and_what_was_left_out_is_said(budget: int) -> None:
    df = sales(rows=50_000, extra_cols=30)
    (msg,) = as_messages(["Summarise.", df], budget=budget)
    text = msg["content"]
    assert text.startswith("Summarise.\n\n")
    table = text.removeprefix("Summarise.\n\n")
    assert len(table) <= budget * 4  # tokens estimated as characters / 4
    assert table.startswith("DataFrame: 50,000 rows, 33 columns")
    left = table.splitlines()[-1]
    assert left.startswith("Left out: ")
    assert "of 50,000 rows" in left or "the rows" in left
    if budget >= 400:
        assert "33 columns from the rows (" in left
        assert "32 columns from the summary (" in left
        assert "| x0 | float64 | 50,000 |" in table  # every column's dtype is listed
    if budget <= 150:
        assert "the describe() summary" in left


def test_a_large_or_wide_frame_is_summarised_quickly_and_says_how() -> None:
    rng = np.random.default_rng(1)
    tall = pd.DataFrame(rng.random((300_000, 3)), columns=["a", "b", "c"])
    (msg,) = as_messages([tall], budget=2000)
    assert "Summary (describe() of a random sample of 100,000 rows):" in msg["content"]
    assert "| a | float64 | 300,000 |" in msg["content"]  # counted on every row
    wide = pd.DataFrame(rng.random((50, 1000)), columns=[f"c{i}" for i in range(1000)])
    (msg,) = as_messages([wide], budget=2000)
    left = msg["content"].splitlines()[-1]
    assert "of 1,000 columns from the list above" in left
    assert "of 1,000 columns from the summary (" in left


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(0, 300),
    cols=st.integers(0, 40),
    budget=st.integers(1, 3000),
    text_cols=st.booleans(),
)
def test_any_frame_fits_its_budget(
    rows: int, cols: int, budget: int, text_cols: bool
) -> None:
    data = {f"col {i} | long name": np.arange(rows) * (i + 0.5) for i in range(cols)}
    if text_cols and cols:
        data["notes"] = ["line\nbreak | pipe " * 5] * rows
    (msg,) = as_messages([pd.DataFrame(data)], budget=budget)
    text = msg["content"]
    assert 0 < len(text) <= budget * 4
    if budget >= 100:  # room for the title and the last line at least
        assert text.startswith("DataFrame: ")
        assert text.endswith("(all of it shown)") or "\nLeft out: " in text


def test_a_small_frame_is_sent_whole_and_says_so() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y|z"]})
    (msg,) = as_messages([df], budget=500)
    assert msg["content"].endswith("(all of it shown)")
    assert "| 1 | 2 | y\\|z |" in msg["content"]  # a pipe in a cell stays in its cell


def test_objects_of_one_message_share_the_budget_small_ones_whole() -> None:
    notes = {"owner": "Ada", "quarter": "Q3"}
    a, b = sales(rows=5000, extra_cols=10), sales(rows=3000, extra_cols=10)
    (msg,) = as_messages(["Compare", a, Named("notes", notes), b], budget=500)
    text = msg["content"]
    assert "dict `notes`, 2 items:\n{'owner': 'Ada', 'quarter': 'Q3'}" in text
    pieces = text.split("\n\n")
    assert text.count("DataFrame: ") == 2
    assert len(text) - len("Compare\n\n") - 4 <= 500 * 4
    assert pieces[0] == "Compare"
    assert allocate([10, 500, 1000], 600) == [10, 295, 295]


def test_series_arrays_dicts_lists_and_other_objects_are_bounded_text() -> None:
    class Huge:
        def __repr__(self) -> str:
            return "H" * 100_000

    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    s = pd.Series(np.arange(10_000.0), name="price")
    items = [
        Named("s", s),
        Named("arr", np.arange(1_000_000).reshape(1000, 1000)),
        Named("big", list(range(1_000_000))),
        Named("h", Huge()),
        Named("b", Broken()),
    ]
    (msg,) = as_messages(items, budget=1000)
    text = msg["content"]
    assert len(text) <= 1000 * 4 + 4 * len("\n\n")
    assert "Series `s`: 10,000 values, dtype float64" in text
    assert "| 2 | 2 |" in text and "of 10,000 rows" in text
    assert "numpy array `arr`: shape (1000, 1000), dtype int64" in text
    assert "min 0, max 999999, mean 500000" in text
    assert "(… marks values left out: 1,000,000 in all)" in text
    assert "list `big`, 1,000,000 items:\n[0, 1, 2" in text
    assert "(… marks items left out)" in text
    assert "Huge `h`:\nHHH" in text
    assert "characters in all: the rest is left out]" in text
    assert "Broken `b`:\n<its repr failed: RuntimeError>" in text


def test_a_named_string_is_bounded_but_the_users_own_words_are_not() -> None:
    words = "word " * 10_000
    (msg,) = as_messages([words, Named("doc", words)], budget=100)
    mine, doc = msg["content"].split("\n\n", 1)
    assert mine == words  # never cut
    assert doc.startswith("str `doc`, 50,000 characters:\nword word")
    assert len(doc) <= 400


def test_a_list_that_mixes_messages_and_objects_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="Item 1 of the message is a message"):
        as_messages(["Hi", {"role": "user", "content": "again"}])
    # a list of messages, and neutral parts, pass as they are
    msgs = [{"role": "user", "content": "Hi"}]
    assert as_messages(msgs) == msgs
    part = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    assert as_messages(["a", part]) == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, part]}
    ]


def test_the_budget_is_a_client_setting_checked_when_made(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Client(base_url="http://x/v1", model="m").context_budget == 2000
    monkeypatch.setenv("NBSTREAM_CONTEXT_BUDGET", "300")
    assert Client(base_url="http://x/v1", model="m").context_budget == 300
    monkeypatch.setenv("NBSTREAM_CONTEXT_BUDGET", "lots")
    with pytest.raises(ConfigurationError, match="NBSTREAM_CONTEXT_BUDGET='lots'"):
        Client(base_url="http://x/v1", model="m")
    with pytest.raises(ConfigurationError, match="context_budget=0 is not a number"):
        Client(base_url="http://x/v1", model="m", context_budget=0)
    server.enqueue(reply("openai"))
    client = client_for(server, context_budget=50)
    client.chat(["Look:", sales(extra_cols=20)])
    assert len(sent(server)["messages"][-1]["content"]) <= len("Look:\n\n") + 200


# -- images: figures, PIL, bytes; both wire formats ------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_a_matplotlib_figure_is_sent_as_a_png_of_its_size(
    server: LoopbackServer, api: str, mode: str
) -> None:
    server.enqueue(reply(api))
    fig = figure(4, 3, dpi=50)
    turn = chat(client_for(server, api=api), mode, ["Describe this", fig])
    content = sent(server)["messages"][-1]["content"]
    assert content[0] == {"type": "text", "text": "Describe this"}
    ((media, data),) = wire_images(api, content)
    assert media == "image/png"
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG" and im.size == (200, 150)
        r, g, b = im.convert("RGB").getpixel((5, 5))
        assert (r, g, b) == (255, 255, 255)  # the figure's own white background
        reds = [
            px for px in im.convert("RGB").get_flattened_data() if px[0] > 200 > px[1]
        ]
        assert reds  # the red line is drawn
    part = turn.request.messages[-1]["content"][1]
    assert (part["width"], part["height"]) == (200, 150)
    # width and height stay in the record, never on the wire
    assert set(content[1]) == (
        {"type", "image_url"} if api == "openai" else {"type", "source"}
    )


@pytest.mark.parametrize("mode", MODES)
def test_stream_and_astream_take_objects_too(server: LoopbackServer, mode: str) -> None:
    server.enqueue(reply("anthropic", "Two."))
    events, turn = collect(
        client_for(server, api="anthropic"),
        mode,
        ["How many?", [1, 2], png_bytes(4, 4)],
    )
    assert turn.text == "Two." and events
    text, image = sent(server)["messages"][-1]["content"]
    assert text == {"type": "text", "text": "How many?\n\nlist, 2 items:\n[1, 2]"}
    assert image["source"]["media_type"] == "image/png"


def test_the_same_figure_gives_the_same_bytes_so_recordings_match() -> None:
    a = as_messages([figure()])[0]["content"][0]["data"]
    b = as_messages([figure()])[0]["content"][0]["data"]
    assert a == b
    assert b"matplotlib" not in base64.b64decode(a)  # no version text in the file


def test_a_large_figure_is_drawn_down_to_1568_px_and_says_so() -> None:
    (msg,) = as_messages([Named("wide", figure(20, 10, dpi=100))])
    caption, part = msg["content"]
    assert caption == {"type": "text", "text": "Image `wide`:"}
    assert (part["width"], part["height"]) == (1568, 784)
    assert sniff(base64.b64decode(part["data"])) == ("image/png", 1568, 784)
    assert part["drawn_from"] == [2000, 1000]


@pytest.mark.parametrize("api", APIS)
def test_pil_images_and_raw_bytes_have_their_type_read_from_the_bytes(
    server: LoopbackServer, api: str
) -> None:
    jpeg = jpeg_bytes()
    from_jpeg = Image.open(io.BytesIO(jpeg))
    server.enqueue(reply(api))
    client_for(server, api=api).chat(
        [
            "Four images:",
            Image.new("RGBA", (30, 20), (0, 0, 255, 128)),
            from_jpeg,
            jpeg,
            Named("chart_png", jpeg),  # a name says nothing: these are JPEG bytes
            png_bytes(7, 5),
        ]
    )
    content = sent(server)["messages"][-1]["content"]
    found = wire_images(api, content)
    assert [m for m, _ in found] == [
        "image/png",
        "image/jpeg",
        "image/jpeg",
        "image/jpeg",
        "image/png",
    ]
    sizes = [Image.open(io.BytesIO(d)).size for _, d in found]
    assert sizes == [(30, 20), (48, 32), (48, 32), (48, 32), (7, 5)]
    assert found[2][1] == jpeg and found[3][1] == jpeg  # bytes go as they are
    with Image.open(io.BytesIO(found[0][1])) as im:
        assert im.mode == "RGBA" and im.getpixel((0, 0)) == (0, 0, 255, 128)


def test_a_neutral_image_part_has_its_type_and_size_read_from_its_data() -> None:
    jpeg = base64.b64encode(jpeg_bytes(48, 32)).decode()
    wrong = {"type": "image", "media_type": "image/png", "data": jpeg}
    (msg,) = as_messages(["See", wrong])
    assert msg["content"][1] == {
        **wrong,
        "media_type": "image/jpeg",
        "width": 48,
        "height": 32,
    }
    with pytest.raises(ConfigurationError, match="Item 1 of the message is an image"):
        as_messages(["See", {**wrong, "data": "not base64!"}])
    one = {"role": "user", "content": "Hi"}
    assert as_messages(one) == [one]  # one message, not in a list


def test_bytes_that_are_no_image_are_refused_before_sending(
    server: LoopbackServer,
) -> None:
    client = client_for(server)
    with pytest.raises(ConfigurationError, match=r"begin 50 4b 03 04") as err:
        client.chat(["Read this", Named("report", b"PK\x03\x04zipped")])
    assert "The bytes of `report` are not a PNG, JPEG, GIF or WebP image" in str(
        err.value
    )
    assert server.requests == []


# -- limits: refused before sending, with the limit named ------------------------------


def test_an_image_over_anthropics_5_mb_is_refused_but_goes_to_openai(
    server: LoopbackServer,
) -> None:
    big = png_bytes(1400, 1100, noise=True)  # ~4.6 MB: ~6.2 MB as base64
    assert 4 * 1024 * 1024 < len(big) < 5 * 1024 * 1024
    with pytest.raises(ImageTooLargeError) as err:
        client_for(server, api="anthropic").chat(["What is this?", big])
    e = err.value
    assert isinstance(e, ValueError) and isinstance(e, NbstreamError)
    assert e.limit.startswith("5 MB an image") and e.api == "anthropic"
    assert "is over Anthropic's limit of 5 MB an image" in e.message
    assert "nothing was sent" in e.message
    conv = Conversation(client_for(server, api="anthropic"))
    with pytest.raises(ImageTooLargeError):
        conv.send(["What is this?", big])
    assert len(conv.transcript) == 0  # a refused message is no turn
    assert server.requests == []
    server.enqueue(reply("openai"))
    assert client_for(server, api="openai").chat(["What is this?", big]).text == "ok"


def test_openai_refuses_over_20_mb_and_anthropic_over_8000_px(
    server: LoopbackServer,
) -> None:
    header = png_bytes(1, 1)[:33]  # a PNG's signature and size, then 21 MB more
    huge = header + b"\x00" * (21 * 1024 * 1024)
    with pytest.raises(ImageTooLargeError, match="OpenAI's limit of 20 MB an image"):
        client_for(server, api="openai").chat(["?", huge])
    tall = png_bytes(8001, 2)  # small in bytes, too long a side
    with pytest.raises(ImageTooLargeError, match="limit of 8000x8000 px an image"):
        client_for(server, api="anthropic").chat(["?", tall])
    with pytest.raises(ImageTooLargeError, match="at most 20 images at once"):
        client_for(server, api="anthropic").chat(
            ["?", png_bytes(2001, 2), *[png_bytes(2, 2)] * 20]
        )
    assert server.requests == []


def test_a_fallback_to_the_other_format_is_checked_before_sending_too(
    server: LoopbackServer,
) -> None:
    other = Client(base_url=server.base_url, model="c", api="anthropic", api_key="k")
    client = client_for(server, api="openai", fallbacks=[other])
    with pytest.raises(ImageTooLargeError, match="Anthropic's limit"):
        client.chat(["?", png_bytes(8001, 2)])
    assert server.requests == []


# -- the history, the record ----------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_the_next_turn_sends_the_image_again(server: LoopbackServer, api: str) -> None:
    conv = Conversation(client_for(server, api=api))
    server.enqueue(reply(api, "A line."), reply(api, "Red."))
    conv.send(["Describe", figure()])
    conv.send("What colour is the line?")
    first, second = (sent(server, i)["messages"] for i in (0, 1))
    assert second[0] == first[0]  # the same user message, image and all
    assert wire_images(api, second[0]["content"]) == wire_images(
        api, first[0]["content"]
    )
    assert second[-1]["content"] == "What colour is the line?"


def test_older_images_are_left_out_when_the_request_would_break_a_limit(
    server: LoopbackServer,
) -> None:
    conv = Conversation(client_for(server, api="anthropic"))
    server.enqueue(reply("anthropic"), reply("anthropic"))
    conv.send(["A wide chart", png_bytes(2500, 4)])
    conv.send(["And these twenty", *[png_bytes(3, 3)] * 20])  # 21 images, one wide
    old = sent(server, 1)["messages"][0]["content"]
    assert old[0] == {"type": "text", "text": "A wide chart"}
    assert old[1] == {
        "type": "text",
        "text": "[image/png 2500x4, 129 bytes: sent earlier, left out of this request "
        "(Anthropic takes images over 2000 px only in requests of at most 20 images)]",
    }
    assert (
        len(wire_images("anthropic", sent(server, 1)["messages"][-1]["content"])) == 20
    )
    assert conv.transcript[0].request.messages[0]["content"][1]["width"] == 2500


def test_to_pandas_shows_the_image_by_label_and_to_json_keeps_it_whole(
    server: LoopbackServer,
) -> None:
    server.enqueue(reply("openai"))
    fig = figure(20, 10, dpi=100)
    conv = Conversation(client_for(server))
    conv.send(["Describe", Named("fig", fig), Named("t", pd.DataFrame({"a": [1]}))])
    row = conv.transcript.to_pandas().iloc[0]
    size = len(conv.transcript[0].request.messages[0]["content"][1]["data"]) * 3 // 4
    assert row.prompt.startswith(
        "Describe\n\nImage `fig`:\n\n[fig: image/png 1568x784, "
        f"{size / 1024:.0f} KB (drawn down from 2000x1000)]\n\nDataFrame `t`: 1 rows"
    )
    assert "base64" not in row.prompt and len(row.prompt) < 600
    back = Transcript.from_json(conv.transcript.to_json())
    assert back.to_dict() == conv.transcript.to_dict()
    part = back[0].request.messages[0]["content"][1]
    assert sniff(base64.b64decode(part["data"])) == ("image/png", 1568, 784)


def test_the_token_estimate_counts_an_image_by_its_size_not_its_data(
    server: LoopbackServer,
) -> None:
    noisy = png_bytes(300, 300, noise=True)  # ~360 KB of base64
    server.enqueue(Reply.events(openai_chunks(["ok"], usage=None)))  # no usage sent
    turn = client_for(server).chat(["What is this?", noisy])
    assert turn.usage is not None and turn.usage.estimated
    # 300 x 300 / 750 = 120 tokens, and a few for the text and the JSON around it
    assert 120 < (turn.usage.input_tokens or 0) < 200


def test_png_encode_writes_a_valid_png() -> None:
    data = png_encode(bytes(range(256)) * 4 * 3, 32, 24)  # not opaque: RGBA
    assert sniff(data) == ("image/png", 32, 24)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGBA" and im.size == (32, 24)
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
