"""``%%chat`` in a real IPython kernel, against a real loopback server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel import Execution, Kernel, clean_env, deltas
from tests.loopback import STALL, LoopbackServer, Reply, openai_chunks

SECRET = "sk-test-MAGICSECRET-0123456789abcdef"
USAGE = {"prompt_tokens": 7, "completion_tokens": 30, "total_tokens": 37}


def _env(srv: LoopbackServer) -> dict[str, str]:
    return clean_env(
        NBSTREAM_BASE_URL=srv.base_url,
        NBSTREAM_MODEL="env-model",
        NBSTREAM_API_KEY=SECRET,
    )


@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def kernel(srv: LoopbackServer) -> Iterator[Kernel]:
    k = Kernel(_env(srv))
    try:
        ex = k.run("%load_ext nbstream")
        assert ex.error is None, ex.error
        yield k
        # No message the kernel ever sent may carry the API key.
        leaked = [m for m in k.iopub() if SECRET in json.dumps(m.content)]
        assert not leaked, leaked[:1]
    finally:
        k.close()


def words(n: int) -> list[str]:
    return [f" w{i}" for i in range(n)]


def final_html(ex: Execution) -> str:
    updates = ex.of_type("update_display_data")
    if updates:
        return str(updates[-1].content["data"]["text/html"])
    return str(ex.displays()[-1]["data"]["text/html"])


def view_state(ex: Execution) -> dict[str, Any]:
    """The state the ReplyView was created with (its comm_open)."""
    for m in ex.messages:
        if m.type == "comm_open":
            state = m.content["data"].get("state", {})
            if state.get("_anywidget_id", "").endswith("ReplyView"):
                return dict(state)
    raise AssertionError("no ReplyView was created")


def last_turn(kernel: Kernel, conv: str) -> dict[str, Any]:
    out = kernel.eval(
        f"(lambda t: {{'status': t.status, 'text': t.text, 'finish': t.finish_reason}})"
        f"(__import__('nbstream').conversation({conv!r}).transcript[-1])"
    )
    return dict(eval(out))


def test_reply_streams_live_into_the_cell(kernel: Kernel, srv: LoopbackServer) -> None:
    text = "".join(words(30))
    srv.enqueue(Reply.events(openai_chunks(words(30), usage=USAGE), delay=0.02))
    ex = kernel.execute("%%chat -c live\nHello there")
    ex.wait()
    seen = srv.requests[-1]
    d = deltas(ex)
    # several coalesced deltas, numbered in order, carrying exactly the reply
    assert len(d.seqs) >= 3
    assert d.seqs == list(range(1, len(d.seqs) + 1))
    assert d.text == text
    # the first piece reached the kernel's output while the server was still sending
    assert seen.finished_at is not None and d.first_at is not None
    assert d.first_at < seen.finished_at
    # coalesced: far fewer messages than tokens
    assert len(d.seqs) < 30
    # the live view was replaced by HTML that shows without a kernel
    display_id = ex.displays()[0]["transient"]["display_id"]
    update = ex.of_type("update_display_data")[-1].content
    assert update["transient"]["display_id"] == display_id
    assert set(update["data"]) == {"text/html", "text/plain"}
    md = update["data"]["text/html"]
    assert f"<p>{text.strip()}</p>" in md
    assert "complete" in md and "7 in" in md and "30 out tokens" in md
    assert "finish: stop" in md and "first token" in md
    assert "application/vnd.jupyter.widget-view+json" not in update["data"]
    assert last_turn(kernel, "live")["status"] == "complete"


def test_stop_button_closes_the_connection_and_keeps_the_partial_reply(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    chunks = [
        f"data: {c}\n\n".encode()
        for c in openai_chunks(words(3), finish=None, done=False)
    ]
    srv.enqueue(Reply(chunks=[*chunks, STALL]))
    ex = kernel.execute("%%chat -c stop\nTell me a long story")
    assert kernel.wait_for(lambda: deltas(ex).text == " w0 w1 w2", 15)
    comm = ex.widget_comm()
    assert comm is not None
    t_click = time.monotonic()
    kernel.click_stop(comm)
    seen = srv.requests[-1]
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5)
    assert seen.client_closed_at is not None
    assert seen.client_closed_at - t_click < 1.0
    ex.wait(10)
    assert ex.error is None  # Stop is not an error: Run All goes on
    md = final_html(ex)
    assert "<p>w0 w1 w2</p>" in md and "cancelled" in md
    turn = last_turn(kernel, "stop")
    assert turn["status"] == "cancelled" and turn["text"] == " w0 w1 w2"


def test_interrupt_stops_the_reply_and_halts_the_cell(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    chunks = [
        f"data: {c}\n\n".encode()
        for c in openai_chunks(words(2), finish=None, done=False)
    ]
    srv.enqueue(Reply(chunks=[*chunks, STALL]))
    ex = kernel.execute("%%chat -c intr\nGo on")
    assert kernel.wait_for(lambda: deltas(ex).text == " w0 w1", 15)
    seen = srv.requests[-1]
    kernel.interrupt()
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5)
    ex.wait(10)
    assert ex.error is not None and ex.error["ename"] == "KeyboardInterrupt"
    assert "<p>w0 w1</p>" in final_html(ex)
    turn = last_turn(kernel, "intr")
    assert turn["status"] == "cancelled" and turn["text"] == " w0 w1"


def test_background_reply_streams_while_another_cell_runs(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply.events(openai_chunks(words(20)), delay=0.1))
    before = len(srv.requests)
    ex = kernel.execute("%%chat --background -c bg\nStream quietly")
    ex.wait(10)
    assert srv.wait_for(lambda: len(srv.requests) > before, 5)
    seen = srv.requests[-1]
    # the cell returned while the server was still sending
    assert seen.finished_at is None
    other = kernel.run("x = 6 * 7\nprint(x)")
    assert other.stdout.strip() == "42"
    assert seen.finished_at is None  # still streaming after the other cell ran
    display_id = ex.displays()[0]["transient"]["display_id"]

    def final_update() -> bool:
        return any(
            m.type == "update_display_data"
            and m.content["transient"]["display_id"] == display_id
            for m in kernel.iopub()
        )

    assert kernel.wait_for(final_update, 20)
    # the update is addressed to the cell that asked, not to the one that ran meanwhile
    assert not [m for m in other.messages if m.type == "update_display_data"]
    assert last_turn(kernel, "bg")["text"] == "".join(words(20))


def test_chat_stop_stops_background_replies(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    chunks = [
        f"data: {c}\n\n".encode()
        for c in openai_chunks(words(1), finish=None, done=False)
    ]
    srv.enqueue(Reply(chunks=[*chunks, STALL]))
    before = len(srv.requests)
    kernel.run("%%chat -b -c bgstop\nHello")
    assert srv.wait_for(lambda: len(srv.requests) > before, 5)
    seen = srv.requests[-1]
    assert kernel.wait_for(
        lambda: (
            kernel.eval(
                "__import__('nbstream').conversation('bgstop').transcript[-1].text"
            )
            == "' w0'"
        ),
        10,
    )
    out = kernel.run("%chat stop")
    assert "Stopped 1" in out.stdout
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5)
    assert kernel.wait_for(
        lambda: last_turn(kernel, "bgstop")["status"] == "cancelled", 10
    )


def test_conversation_continues_across_cells_and_new_starts_afresh(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply.events(openai_chunks([" Paris."])))
    kernel.run("%%chat -c geo -s 'Be terse.'\nCapital of France?")
    srv.enqueue(Reply.events(openai_chunks([" Berlin."])))
    kernel.run("%%chat -c geo\nAnd Germany?")
    sent = srv.requests[-1].json["messages"]
    assert sent == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": " Paris."},
        {"role": "user", "content": "And Germany?"},
    ]
    srv.enqueue(Reply.events(openai_chunks([" Hi."])))
    kernel.run("%%chat -c geo --new\nHello")
    assert srv.requests[-1].json["messages"] == [{"role": "user", "content": "Hello"}]
    # another named conversation is independent
    srv.enqueue(Reply.events(openai_chunks([" Yes."])))
    kernel.run("%%chat -c other\nSeparate?")
    assert srv.requests[-1].json["messages"] == [
        {"role": "user", "content": "Separate?"}
    ]


def test_output_variable_holds_the_turn(kernel: Kernel, srv: LoopbackServer) -> None:
    srv.enqueue(Reply.events(openai_chunks([" forty", " two"], usage=USAGE)))
    kernel.run("%%chat -c out -o answer\nWhat is six times seven?")
    assert kernel.eval("answer.text") == "' forty two'"
    assert kernel.eval("answer.usage.output_tokens") == "30"
    assert kernel.eval("type(answer).__name__") == "'Turn'"


def test_config_layers_env_then_config_then_cell(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply.events(openai_chunks([" a"])))
    kernel.run("%%chat -c cfg\none")
    assert srv.requests[-1].json["model"] == "env-model"  # from NBSTREAM_MODEL
    kernel.run(
        "%config ChatMagics.model = 'config-model'\n"
        "%config ChatMagics.temperature = 0.5"
    )
    try:
        srv.enqueue(Reply.events(openai_chunks([" b"])))
        kernel.run("%%chat -c cfg\ntwo")
        body = srv.requests[-1].json
        assert body["model"] == "config-model" and body["temperature"] == 0.5
        srv.enqueue(Reply.events(openai_chunks([" c"])))
        kernel.run("%%chat -c cfg -m cell-model -t 0 --max-tokens 12\nthree")
        body = srv.requests[-1].json
        assert body["model"] == "cell-model"
        assert body["temperature"] == 0 and body["max_tokens"] == 12
        assert srv.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    finally:
        kernel.run(
            "%config ChatMagics.model = None\n%config ChatMagics.temperature = None"
        )
    cfg = kernel.run("%chat config").stdout
    assert "env-model" in cfg and srv.base_url in cfg
    assert "api key   set" in cfg and SECRET not in cfg


@pytest.mark.parametrize(
    ("cell", "needle"),
    [
        ("%%chat -t 5\nhi", "from 0 to 2"),
        ("%%chat -t warm\nhi", "invalid float value"),
        ("%%chat --max-tokens 0\nhi", "positive whole number"),
        ("%%chat -a gemini\nhi", "api='openai'"),
        ("%%chat -o 1bad\nhi", "valid variable name"),
        ("%%chat\n   \n", "cell is empty"),
        ("%%chat --nope\nhi", "unrecognized arguments"),
        ("%%chat -i -c interp\nExplain {undefined_topic}", "undefined_topic"),
    ],
)
def test_bad_options_raise_usage_errors_that_say_the_fix(
    kernel: Kernel, srv: LoopbackServer, cell: str, needle: str
) -> None:
    before = len(srv.requests)
    ex = kernel.run(cell)
    assert ex.reply is not None and ex.reply["status"] == "error"  # Run All stops here
    assert "UsageError: " in ex.stderr
    assert needle in ex.stderr
    assert len(srv.requests) == before  # nothing was sent


def test_interpolation_only_when_asked(kernel: Kernel, srv: LoopbackServer) -> None:
    kernel.run("topic = 'entropy'")
    srv.enqueue(Reply.events(openai_chunks([" ok"])))
    kernel.run("%%chat -c interp2 -i\nExplain {topic} in {{two}} words")
    assert (
        srv.requests[-1].json["messages"][-1]["content"]
        == "Explain entropy in {two} words"
    )
    srv.enqueue(Reply.events(openai_chunks([" ok"])))
    kernel.run('%%chat -c interp2 --new\n{"json": {topic}}')
    assert srv.requests[-1].json["messages"][-1]["content"] == '{"json": {topic}}'


def test_provider_error_shows_its_message_and_what_to_do(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    body = {
        "error": {
            "message": f"Incorrect API key provided: {SECRET}.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    }
    srv.enqueue(Reply.json(401, body, {"x-request-id": "req_abc123"}))
    ex = kernel.run("%%chat -c err\nhello")
    assert ex.error is not None and ex.error["ename"] == "APIStatusError"
    # one clear message, no Python traceback
    assert ex.error["traceback"] == [f"APIStatusError: {ex.error['evalue']}"]
    assert "Incorrect API key provided" in ex.error["evalue"]
    assert "req_abc123" in ex.error["evalue"] and "API key" in ex.error["evalue"]
    assert SECRET not in json.dumps(ex.error)
    assert last_turn(kernel, "err")["status"] == "error"


def test_model_html_stays_text_in_the_final_output(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    payload = "<img src=x onerror=alert(1)> and <script>alert(2)</script>"
    srv.enqueue(Reply.events(openai_chunks([payload])))
    ex = kernel.run("%%chat -c xss\nhi")
    md = final_html(ex)
    assert "<img" not in md and "<script" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md


def test_batch_run_gives_one_final_deterministic_output(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    outputs = []
    for _ in range(2):
        srv.enqueue(Reply.events(openai_chunks(words(12), usage=USAGE), delay=0.01))
        ex = kernel.run("%%chat -c batch --new\nhi", allow_stdin=False)
        assert ex.widget_comm() is None  # no live widget in a batch run
        assert not ex.of_type("update_display_data")
        displays = ex.displays()
        assert len(displays) == 1
        outputs.append(displays[0]["data"])
    assert outputs[0] == outputs[1]
    md = outputs[0]["text/html"]
    assert (
        "".join(words(12)).strip() in md
        and "finish: stop" in md
        and "30 out tokens" in md
    )
    assert "first token" not in md and "tok/s" not in md


def test_server_without_usage_shows_estimated_tokens(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply.events(openai_chunks(words(5))))
    ex = kernel.run("%%chat -c est\nhi")
    md = final_html(ex)
    assert "~5 out tokens" in md and "estimated" in md


def test_history_list_and_clear(kernel: Kernel, srv: LoopbackServer) -> None:
    srv.enqueue(Reply.events(openai_chunks([" Hi", " there"])))
    kernel.run("%%chat -c hist\nGreet me")
    ex = kernel.run("%chat history hist")
    md = ex.displays()[-1]["data"]["text/html"]
    assert "Greet me" in md and "Hi there" in md and "complete" in md
    assert "hist:" in kernel.run("%chat list").stdout
    assert "Cleared" in kernel.run("%chat clear hist").stdout
    assert (
        kernel.eval("len(__import__('nbstream').conversation('hist').transcript)")
        == "0"
    )
    srv.enqueue(Reply.events(openai_chunks([" ok"])))
    kernel.run("%%chat -c hist\nAgain")
    # after clear, no old history is sent
    assert srv.requests[-1].json["messages"] == [{"role": "user", "content": "Again"}]
    ex = kernel.run("%chat frobnicate")
    assert ex.reply is not None and ex.reply["status"] == "error"
    assert "not an action" in ex.stderr


def test_history_shows_model_html_as_text(kernel: Kernel, srv: LoopbackServer) -> None:
    srv.enqueue(Reply.events(openai_chunks(["<img src=x onerror=alert(1)>"])))
    kernel.run("%%chat -c histxss\n<b>me</b>")
    md = kernel.run("%chat history histxss").displays()[-1]["data"]["text/html"]
    assert "<img" not in md and "<b>" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md and "&lt;b&gt;me" in md


def test_images_are_links_unless_allowed(kernel: Kernel, srv: LoopbackServer) -> None:
    image = "![a cat](https://example.org/cat.png)"
    srv.enqueue(Reply.events(openai_chunks([image])))
    ex = kernel.run("%%chat -c img\nA cat?")
    assert "<img" not in final_html(ex) and ">image: a cat</a>" in final_html(ex)
    assert view_state(ex)["allow_images"] is False
    try:
        kernel.run("%config ChatMagics.allow_images = True")
        srv.enqueue(Reply.events(openai_chunks([image])))
        ex = kernel.run("%%chat -c img\nAgain?")
        assert '<img src="https://example.org/cat.png" alt="a cat" />' in final_html(ex)
        assert view_state(ex)["allow_images"] is True  # the live view's too
        history = kernel.run("%chat history img").displays()[-1]["data"]["text/html"]
        assert history.count("<img ") == 2
    finally:
        kernel.run("%config ChatMagics.allow_images = False")
