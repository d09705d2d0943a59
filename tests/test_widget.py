"""``ChatWidget`` in a real kernel: the messages a browser would send and receive.

(The browser itself, clicking and painting, is tested in test_browser.py.)
"""

from __future__ import annotations

import ast
import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.kernel import Kernel, clean_env
from tests.loopback import STALL, LoopbackServer, Reply, openai_chunks

SECRET = "sk-test-WIDGETSECRET-0123456789abcdef"
USAGE = {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}


@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def kernel(srv: LoopbackServer) -> Iterator[Kernel]:
    k = Kernel(
        clean_env(
            NBSTREAM_BASE_URL=srv.base_url,
            NBSTREAM_MODEL="widget-model",
            NBSTREAM_API_KEY=SECRET,
        )
    )
    try:
        yield k
        leaked = [m for m in k.iopub() if SECRET in json.dumps(m.content)]
        assert not leaked, leaked[:1]
    finally:
        k.close()


def widget_comm(kernel: Kernel, var: str) -> str:
    return kernel.eval(f"{var}.comm.comm_id").strip("'")


def send_comm(kernel: Kernel, comm_id: str, content: dict[str, Any]) -> None:
    msg = kernel.kc.session.msg(
        "comm_msg",
        {"comm_id": comm_id, "data": {"method": "custom", "content": content}},
    )
    kernel.kc.shell_channel.send(msg)


def customs(kernel: Kernel, comm_id: str, kind: str) -> list[dict[str, Any]]:
    out = []
    for m in kernel.iopub():
        if m.type == "comm_msg" and m.content.get("comm_id") == comm_id:
            data = m.content["data"]
            if data.get("method") == "custom" and data["content"].get("type") == kind:
                out.append(data["content"])
    return out


def state_updates(kernel: Kernel, comm_id: str) -> list[dict[str, Any]]:
    return [
        m.content["data"]["state"]
        for m in kernel.iopub()
        if m.type == "comm_msg"
        and m.content.get("comm_id") == comm_id
        and m.content["data"].get("method") == "update"
    ]


def test_submit_from_the_panel_streams_deltas_and_commits_the_reply(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    words = [f" w{i}" for i in range(40)]
    srv.enqueue(Reply.events(openai_chunks(words, usage=USAGE), delay=0.01))
    kernel.run(
        "from nbstream import ChatWidget\nc1 = ChatWidget(system='Be brief.')\n"
        "done = []\nc1.on_turn(done.append)"
    )
    comm = widget_comm(kernel, "c1")
    send_comm(kernel, comm, {"type": "submit", "text": "Count to forty"})
    assert kernel.wait_for(lambda: kernel.eval("len(done)") == "1", 15)
    deltas = customs(kernel, comm, "delta")
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert "".join(d.get("text", "") for d in deltas) == "".join(words)
    assert 2 <= len(deltas) < len(words)  # coalesced
    # the committed messages trait has the final text: saved widget state is complete
    msgs = json.loads(kernel.eval("__import__('json').dumps(c1.messages)").strip("'"))
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[0]["text"] == "Count to forty"
    assert msgs[1]["text"] == "".join(words) and msgs[1]["status"] == "complete"
    assert msgs[1]["readout"]["output_tokens"] == 8
    totals = json.loads(kernel.eval("__import__('json').dumps(c1.totals)").strip("'"))
    assert totals["turns"] == 1 and totals["input_tokens"] == 5
    assert srv.requests[-1].json["messages"][0] == {
        "role": "system",
        "content": "Be brief.",
    }
    # no API key anywhere in the widget's synced state
    state = kernel.eval("__import__('json').dumps(c1.get_state())")
    assert SECRET not in state
    assert kernel.eval("repr(c1)") == "\"ChatWidget(model='widget-model', turns=1)\""


def test_stop_from_the_panel_closes_the_connection_before_the_first_token(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply(chunks=[STALL]))
    kernel.run("c2 = ChatWidget()\nc2.send('hello')")
    assert srv.wait_for(
        lambda: srv.requests[-1].json["messages"][-1]["content"] == "hello", 5
    )
    seen = srv.requests[-1]
    assert (
        kernel.eval("c2.status") == "'streaming'"
    )  # Stop is possible: a request is out
    send_comm(kernel, widget_comm(kernel, "c2"), {"type": "stop"})
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5)
    assert kernel.wait_for(lambda: kernel.eval("c2.status") == "'idle'", 5)
    assert kernel.eval("c2.transcript[-1].status") == "'cancelled'"


def test_stop_mid_reply_keeps_the_partial_text_everywhere(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    chunks = [
        f"data: {c}\n\n".encode()
        for c in openai_chunks([" half", " a"], finish=None, done=False)
    ]
    srv.enqueue(Reply(chunks=[*chunks, STALL]))
    kernel.run("c3 = ChatWidget()\nc3.send('tell me')")
    comm = widget_comm(kernel, "c3")
    assert kernel.wait_for(
        lambda: (
            "".join(d.get("text", "") for d in customs(kernel, comm, "delta"))
            == " half a"
        ),
        10,
    )
    seen = srv.requests[-1]
    kernel.run("c3.stop()")
    assert srv.wait_for(lambda: seen.client_closed_at is not None, 5)
    assert kernel.wait_for(lambda: kernel.eval("c3.status") == "'idle'", 5)
    assert kernel.eval("c3.transcript[-1].text") == "' half a'"
    assert kernel.eval("c3.messages[-1]['status']") == "'cancelled'"
    assert kernel.eval("c3.messages[-1]['text']") == "' half a'"


def test_a_late_view_gets_a_snapshot_of_the_reply_so_far(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    chunks = [
        f"data: {c}\n\n".encode()
        for c in openai_chunks([" one", " two"], finish=None, done=False)
    ]
    srv.enqueue(Reply(chunks=[*chunks, STALL]))
    kernel.run("c4 = ChatWidget()\nc4.send('go')")
    comm = widget_comm(kernel, "c4")
    assert kernel.wait_for(
        lambda: (
            len(customs(kernel, comm, "delta")) >= 1
            and "".join(d.get("text", "") for d in customs(kernel, comm, "delta"))
            == " one two"
        ),
        10,
    )
    send_comm(kernel, comm, {"type": "resync"})  # what a reloaded page sends
    assert kernel.wait_for(lambda: len(customs(kernel, comm, "snapshot")) == 1, 5)
    snap = customs(kernel, comm, "snapshot")[0]
    last = customs(kernel, comm, "delta")[-1]
    assert snap["text"] == " one two" and snap["seq"] == last["seq"]
    assert snap["id"] == last["id"]
    kernel.run("c4.stop()")
    assert kernel.wait_for(lambda: kernel.eval("c4.status") == "'idle'", 5)


def test_an_error_shows_in_the_conversation_and_retry_sends_again(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(
        Reply.json(
            401,
            {"error": {"message": "Invalid API key.", "type": "invalid_request_error"}},
        )
    )
    kernel.run("c5 = ChatWidget()\nc5.send('first try')")
    assert kernel.wait_for(lambda: kernel.eval("c5.status") == "'idle'", 10)
    err = kernel.eval("c5.messages[-1]['error']")
    assert "Invalid API key." in err and "401" in err
    assert kernel.eval("c5.messages[-1]['status']") == "'error'"
    srv.enqueue(Reply.events(openai_chunks([" fine"])))
    send_comm(kernel, widget_comm(kernel, "c5"), {"type": "retry"})
    assert kernel.wait_for(
        lambda: kernel.eval("c5.transcript[-1].status") == "'complete'", 10
    )
    # the retried question is sent once: the failed turn is not part of the history
    assert srv.requests[-1].json["messages"] == [
        {"role": "user", "content": "first try"}
    ]
    assert kernel.eval("len(c5.messages)") == "4"  # both turns stay visible


def test_sending_while_streaming_is_refused_with_a_clear_message(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(Reply(chunks=[STALL]))
    kernel.run("c6 = ChatWidget()\nc6.send('one')")
    ex = kernel.run("c6.send('two')")
    assert ex.error is not None and "still streaming" in ex.error["evalue"]
    kernel.run("c6.stop()")
    assert kernel.wait_for(lambda: kernel.eval("c6.status") == "'idle'", 5)


def comm_bytes(msgs: list[Any], comm_id: str) -> int:
    """Bytes of this widget's comm messages (as JSON) among ``msgs``."""
    return sum(
        len(json.dumps(m.content))
        for m in msgs
        if m.type == "comm_msg" and m.content.get("comm_id") == comm_id
    )


def apply(
    messages: list[dict[str, Any]], rev: int, change: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """What js/src/model_events.js does with a ``messages`` change (its vitest covers
    the gaps; here every change must apply)."""
    assert change["base"] == rev, (change["base"], rev)
    out = list(messages)
    index = {m["id"]: i for i, m in enumerate(out)}
    for m in change["upsert"]:
        if m["id"] in index:
            out[index[m["id"]]] = m
        else:
            index[m["id"]] = len(out)
            out.append(m)
    assert len(out) == change["count"]
    return out, change["rev"]


def kernel_json(kernel: Kernel, expr: str) -> Any:
    """The value of ``expr`` in the kernel, through JSON."""
    return json.loads(
        ast.literal_eval(kernel.eval(f"__import__('json').dumps({expr})"))
    )


def test_traffic_per_turn_stays_flat_as_the_conversation_grows(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    reply = [f" word{i}" for i in range(30)]
    kernel.run("from nbstream import ChatWidget\nc7 = ChatWidget()")
    comm = widget_comm(kernel, "c7")
    cost: dict[int, int] = {}
    for n in range(1, 51):
        srv.enqueue(Reply.events(openai_chunks(reply, usage=USAGE)))
        start = len(kernel.iopub())
        ex = kernel.run(f"await c7.send('question {n}')")
        assert ex.error is None, ex.error
        cost[n] = comm_bytes(kernel.iopub()[start:], comm)
    print(f"\ncomm bytes per turn: { {n: cost[n] for n in (1, 5, 10, 25, 50)} }")
    # On main the whole list was sent at every send and end: turn 5 cost 7.8 kB and
    # turn 50 69 kB. Now a turn costs the same whenever it comes.
    assert cost[50] < 1.1 * cost[5], cost
    assert cost[50] < 4000, cost
    # the messages state was never sent whole ...
    assert not any("messages" in s for s in state_updates(kernel, comm))
    # ... and yet a front end that applied the changes in order has the whole list,
    # as the kernel has it: what it shows, and what saved widget state holds
    kept = kernel_json(kernel, "c7.messages")
    assert len(kept) == 100
    assert kept[-1]["text"] == "".join(reply) and kept[-1]["status"] == "complete"
    assert kept[-2]["text"] == "question 50"
    shown: list[dict[str, Any]] = []
    rev = 0
    for change in customs(kernel, comm, "messages"):
        shown, rev = apply(shown, rev, change)
    assert shown == kept and rev == 100
    assert kernel_json(kernel, "c7.get_state()['messages']") == kept
    # a new front end (a page reload) asks for the state and gets all of it
    before = len(kernel.iopub())
    msg = kernel.kc.session.msg(
        "comm_msg", {"comm_id": comm, "data": {"method": "request_state"}}
    )
    kernel.kc.shell_channel.send(msg)
    assert kernel.wait_for(lambda: "messages" in state_updates(kernel, comm)[-1], 5)
    state = state_updates(kernel, comm)[-1]
    assert state["messages"] == kept and state["_messages_rev"] == 100
    assert comm_bytes(kernel.iopub()[before:], comm) > 20 * cost[50]


def test_a_front_end_that_missed_changes_catches_up(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    kernel.run("from nbstream import ChatWidget\nc8 = ChatWidget()")
    comm = widget_comm(kernel, "c8")
    for n in range(1, 4):
        srv.enqueue(Reply.events(openai_chunks([f" answer {n}"])))
        kernel.run(f"await c8.send('question {n}')")
    kept = kernel_json(kernel, "c8.messages")
    changes = customs(kernel, comm, "messages")
    assert [c["rev"] for c in changes] == [1, 2, 3, 4, 5, 6]
    # it has revision 3 (turn 2 sent, not ended): it gets what changed since
    send_comm(kernel, comm, {"type": "sync", "rev": 3})
    assert kernel.wait_for(lambda: len(customs(kernel, comm, "messages")) == 7, 5)
    answer = customs(kernel, comm, "messages")[-1]
    assert [m["id"] for m in answer["upsert"]] == [m["id"] for m in kept[3:]]
    shown, rev = apply(kept[:3], 3, answer)
    assert shown == kept and rev == 6
    # up to date: nothing is sent; nonsense: the whole list, as state
    send_comm(kernel, comm, {"type": "sync", "rev": 6})
    send_comm(kernel, comm, {"type": "sync", "rev": "everything"})
    assert kernel.wait_for(lambda: "messages" in state_updates(kernel, comm)[-1], 5)
    assert state_updates(kernel, comm)[-1]["messages"] == kept
    assert len(customs(kernel, comm, "messages")) == 7
    # the transcript edited from Python: the new list goes out whole, as state, and
    # the changes go on from there
    srv.enqueue(Reply.events(openai_chunks([" fresh"])))
    kernel.run("c8.transcript.clear()\nawait c8.send('start over')")
    state = [s for s in state_updates(kernel, comm) if "messages" in s][-1]
    assert [m["text"] for m in state["messages"]] == ["start over", ""]
    shown, rev = apply(
        state["messages"], state["_messages_rev"], customs(kernel, comm, "messages")[-1]
    )
    assert [m["text"] for m in shown] == ["start over", " fresh"]
    assert shown == kernel_json(kernel, "c8.messages")
    # a front end may not write the messages (the kernel owns them)
    msg = kernel.kc.session.msg(
        "comm_msg",
        {"comm_id": comm, "data": {"method": "update", "state": {"messages": []}}},
    )
    kernel.kc.shell_channel.send(msg)
    assert kernel.eval("len(c8.messages)") == "2"


# -- a cancelled task, whenever it is cancelled (plain asyncio, no kernel) ---------------
async def until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    "when", ["before it starts", "as it starts", "request sent", "mid-reply"]
)
async def test_a_cancelled_send_ends_the_turn_and_the_panel_carries_on(
    server: LoopbackServer, when: str
) -> None:
    from nbstream import ChatWidget, Client

    chat = ChatWidget(client=Client(server.base_url, "sk-test", "cancel-model"))
    ended: list[Any] = []
    chat.on_turn(ended.append)
    sent = when in ("request sent", "mid-reply")
    if when == "request sent":
        server.enqueue(Reply(chunks=[STALL]))  # headers, then nothing
    elif when == "mid-reply":
        partial = openai_chunks([" half", " a"], finish=None, done=False)
        server.enqueue(
            Reply(chunks=[*(f"data: {c}\n\n".encode() for c in partial), STALL])
        )
    task = chat.send("hi")
    assert chat.status == "streaming"
    if when == "as it starts":
        await asyncio.sleep(0)  # the task has taken its first step
    elif when == "request sent":
        await until(lambda: server.requests, 5, "the request")
    elif when == "mid-reply":
        await until(lambda: chat.transcript[-1].text == " half a", 5, "two words")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the moment the task is done, the turn is over: cancelled, kept, told once
    turn = chat.transcript[-1]
    assert chat.status == "idle"
    assert turn.status == "cancelled"
    assert ended == [turn]
    assert chat.messages[-1]["status"] == "cancelled"
    assert chat.messages[-1]["text"] == (" half a" if when == "mid-reply" else "")
    if sent:
        seen = server.requests[0]
        assert await asyncio.to_thread(
            server.wait_for, lambda: seen.client_closed_at is not None, 5
        ), "the connection was left open"
    else:
        assert server.requests == []  # nothing was sent
    # and the panel works: a new message is sent and answered
    server.enqueue(Reply.events(openai_chunks([" fine"])))
    again = await chat.send("again")
    assert again is not None and again.status == "complete"
    assert chat.status == "idle"
    assert ended == [turn, again]
    assert [
        (m["role"], m["status"] if m["role"] == "assistant" else "")
        for m in chat.messages
    ] == [
        ("user", ""),
        ("assistant", "cancelled"),
        ("user", ""),
        ("assistant", "complete"),
    ]
    assert server.requests[-1].json["messages"][-1] == {
        "role": "user",
        "content": "again",
    }


def test_images_load_in_the_panel_only_when_allowed(server: LoopbackServer) -> None:
    from nbstream import ChatWidget, Client

    client = Client(server.base_url, "sk-test", "image-model")
    off, on = ChatWidget(client=client), ChatWidget(client=client, allow_images=True)
    assert off.allow_images is False and on.allow_images is True
    # a synced trait: the panel's view reads it (js/src/chat.js), and so does saved state
    assert off.get_state()["allow_images"] is False
    assert on.get_state()["allow_images"] is True
    assert ChatWidget.class_traits()["allow_images"].help
