"""Tools from the notebook, in a real kernel against a real loopback server:
``%%chat --tools NAMES`` (the live view's tool blocks, Approve / Deny, Stop during a
tool, the final output, the batch output, names that are not there) and
``ChatWidget(tools=[…])`` (its blocks, live and committed, and its approval buttons).

The messages a browser would send are sent as the browser sends them (comm messages);
the browser itself is in test_browser.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel import Execution, Kernel, clean_env
from tests.loopback import LoopbackServer
from tests.toolkit import Call, calls_reply, text_reply

SECRET = "sk-test-TOOLSNB-0123456789abcdef"

SETUP = '''
import asyncio, threading
def lookup(city: str) -> str:
    """Current temperature in a city."""
    return {"Paris": "21 C", "Rome": "25 C"}[city]

async def slow(city: str) -> str:
    """Takes a while."""
    await asyncio.sleep(30)
    return "late"

not_a_function = 42
%load_ext nbstream
'''


@pytest.fixture(scope="module")
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer() as s:
        yield s


@pytest.fixture(scope="module")
def kernel(srv: LoopbackServer) -> Iterator[Kernel]:
    k = Kernel(
        clean_env(
            NBSTREAM_BASE_URL=srv.base_url,
            NBSTREAM_MODEL="tools-model",
            NBSTREAM_API_KEY=SECRET,
        )
    )
    try:
        ex = k.run(SETUP)
        assert ex.error is None, ex.error
        yield k
        leaked = [m for m in k.iopub() if SECRET in json.dumps(m.content)]
        assert not leaked, leaked[:1]
    finally:
        k.close()


def customs(ex: Execution, kind: str) -> list[dict[str, Any]]:
    out = []
    for m in ex.of_type("comm_msg"):
        data = m.content.get("data", {})
        if data.get("method") == "custom" and data["content"].get("type") == kind:
            out.append(data["content"])
    return out


def send_comm(kernel: Kernel, comm_id: str, content: dict[str, Any]) -> None:
    msg = kernel.kc.session.msg(
        "comm_msg",
        {"comm_id": comm_id, "data": {"method": "custom", "content": content}},
    )
    kernel.kc.shell_channel.send(msg)


def final_output(ex: Execution) -> dict[str, str]:
    updates = ex.of_type("update_display_data")
    data = updates[-1].content["data"] if updates else ex.displays()[-1]["data"]
    return {k: v for k, v in data.items() if k.startswith("text/")}


def rich(out: dict[str, str]) -> str:
    return out.get("text/html") or out["text/markdown"]


def test_tools_run_and_show_as_blocks_in_the_live_view_and_the_output(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(
        calls_reply(
            "openai",
            [Call("lookup", {"city": "Paris"}), Call("lookup", {"city": "Rome"})],
            text="Let me check.",
        ),
        text_reply("openai", ["Rome", " is", " warmer."]),
    )
    before = len(srv.requests)
    ex = kernel.run(
        "%%chat -c t1 --tools lookup\nIs it warmer in Paris or Rome?", timeout=30
    )
    assert ex.error is None, ex.error
    sent = [r.json for r in srv.requests[before:]]
    assert [t["function"]["name"] for t in sent[0]["tools"]] == ["lookup"]
    assert [m["content"] for m in sent[1]["messages"][2:]] == ["21 C", "25 C"]
    # the live view: a block per call, first as the model writes it, then running, done
    blocks = [c["block"] for c in customs(ex, "tool")]
    by_key: dict[str, list[str]] = {}
    for b in blocks:
        by_key.setdefault(b["key"], []).append(b["status"])
    assert list(by_key) == ["0:0", "0:1"]
    for statuses in by_key.values():
        assert statuses[0] == "streaming" and statuses[-1] == "complete"
        assert "running" in statuses
    last = {b["key"]: b for b in blocks}
    assert last["0:1"]["result"] == "25 C" and last["0:1"]["name"] == "lookup"
    assert json.loads(last["0:0"]["arguments"]) == {"city": "Paris"}
    # each block sits where its call was made: after the first step's text
    text = "".join(c.get("text", "") for c in customs(ex, "delta"))
    assert text == "Let me check.Rome is warmer."
    assert {b["at"] for b in blocks} == {len("Let me check.")}
    # the final output: every step, each call, the answer
    out = final_output(ex)
    shown = rich(out)
    assert "Let me check." in shown and "Rome is warmer." in shown
    assert shown.count("lookup(") == 2 and "25 C" in shown
    assert "Let me check." in out["text/plain"]
    assert "[tool lookup(" in out["text/plain"]
    steps = kernel.eval(
        "[type(s).__name__ for s in "
        "__import__('nbstream').conversation('t1').transcript[-1].steps]"
    )
    assert steps == "['Turn', 'ToolResult', 'ToolResult', 'Turn']"


def test_tool_names_that_are_not_functions_are_usage_errors(kernel: Kernel) -> None:
    for line, says in [
        ("--tools lookup,plot_sales", "'plot_sales' is not defined in the notebook"),
        ("--tools not_a_function", "'not_a_function' is a int, not a function"),
        ("--tools lookup,", "has an empty name"),
        ("--approve", "--approve, --max-steps and --tool-choice go with --tools"),
        ("--tools lookup --tool-choice lookups", "--tool-choice 'lookups' is not"),
        ("--tools lookup --max-steps 0", "--max-steps 0 must be at least 1"),
    ]:
        ex = kernel.run(f"%%chat {line}\nHi")
        assert "UsageError: " in ex.stderr and says in ex.stderr, (line, ex.stderr)


def test_approve_and_deny_from_the_block(kernel: Kernel, srv: LoopbackServer) -> None:
    srv.enqueue(
        calls_reply(
            "openai",
            [Call("lookup", {"city": "Paris"}), Call("lookup", {"city": "Rome"})],
        ),
        text_reply("openai", ["Only Paris."]),
    )
    before = len(srv.requests)
    ex = kernel.execute("%%chat -c t2 --tools lookup --approve\nWeather?")

    def asking() -> list[dict[str, Any]]:
        return [
            c["block"]
            for c in customs(ex, "tool")
            if c["block"]["status"] == "approval"
        ]

    assert kernel.wait_for(lambda: len(asking()) == 2, 15)
    comm = ex.widget_comm()
    assert comm is not None
    paris, rome = sorted(asking(), key=lambda b: b["key"])
    assert paris["id"] == "call_0" and rome["id"] == "call_1"
    assert len(srv.requests) == before + 1  # nothing goes on without an answer
    send_comm(kernel, comm, {"type": "approve", "id": "call_1", "ok": False})
    send_comm(kernel, comm, {"type": "approve", "id": "call_0", "ok": True})
    ex.wait(20)
    assert ex.error is None, ex.error
    statuses = kernel.eval(
        "[r.status for r in "
        "__import__('nbstream').conversation('t2').transcript[-1].tool_results]"
    )
    assert statuses == "['complete', 'denied']"


def test_stop_during_a_tool_cancels_it_and_keeps_the_steps(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(calls_reply("openai", [Call("slow", {"city": "Paris"})]))
    before = len(srv.requests)
    ex = kernel.execute("%%chat -c t3 --tools slow\nGo")

    def running() -> bool:
        return any(c["block"]["status"] == "running" for c in customs(ex, "tool"))

    assert kernel.wait_for(running, 15)
    comm = ex.widget_comm()
    assert comm is not None
    kernel.click_stop(comm)
    ex.wait(10)
    assert ex.error is None  # Stop is not an error
    assert len(srv.requests) == before + 1  # the result was never sent
    summary = kernel.eval(
        "(lambda t: (t.status, [r.status for r in t.tool_results]))"
        "(__import__('nbstream').conversation('t3').transcript[-1])"
    )
    assert summary == "('cancelled', ['cancelled'])"
    assert "slow(" in rich(final_output(ex)) and "stopped" in rich(final_output(ex))


def test_batch_runs_give_one_final_output_and_refuse_approve(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(
        calls_reply("anthropic", [Call("lookup", {"city": "Rome"})]),
        text_reply("anthropic", ["25 C in Rome."]),
    )
    ex = kernel.run(
        "%%chat -c t4 -a anthropic --tools lookup\nRome?", allow_stdin=False
    )
    assert ex.error is None, ex.error
    assert not ex.of_type("update_display_data") and not customs(ex, "tool")
    shown = rich(final_output(ex))
    assert "lookup(" in shown and "25 C in Rome." in shown
    assert "· done</summary>" in shown  # no timings: the same output run to run
    no = kernel.run("%%chat --tools lookup --approve\nRome?", allow_stdin=False)
    assert "UsageError: --approve needs someone to answer" in no.stderr


def test_chat_widget_with_tools_shows_blocks_and_asks(
    kernel: Kernel, srv: LoopbackServer
) -> None:
    srv.enqueue(
        calls_reply("openai", [Call("lookup", {"city": "Paris"})], text="Checking."),
        text_reply("openai", ["21 C."]),
    )
    kernel.run(
        "from nbstream import ChatWidget\n"
        "w = ChatWidget(tools=[lookup], approve=True)\ndone = []\nw.on_turn(done.append)"
    )
    comm = kernel.eval("w.comm.comm_id").strip("'")
    send_comm(kernel, comm, {"type": "submit", "text": "Paris?"})

    def tool_msgs() -> list[dict[str, Any]]:
        out = []
        for m in kernel.iopub():
            if m.type == "comm_msg" and m.content.get("comm_id") == comm:
                c = m.content["data"].get("content", {})
                if c.get("type") == "tool":
                    out.append(c)
        return out

    assert kernel.wait_for(
        lambda: any(c["block"]["status"] == "approval" for c in tool_msgs()), 15
    )
    msg = next(c for c in tool_msgs() if c["block"]["status"] == "approval")
    assert msg["id"] == kernel.eval("w.transcript[-1].id").strip("'")  # which reply
    send_comm(kernel, comm, {"type": "approve", "id": msg["block"]["id"], "ok": True})
    assert kernel.wait_for(lambda: kernel.eval("len(done)") == "1", 15)
    committed = json.loads(
        kernel.run("print(__import__('json').dumps(w.messages[-1]))").stdout
    )
    assert committed["text"] == "Checking.21 C."
    (block,) = committed["tools"]
    assert (block["name"], block["status"], block["result"]) == (
        "lookup",
        "complete",
        "21 C",
    )
    assert block["at"] == len("Checking.")
    totals = kernel.eval("w.totals['output_tokens']")
    assert int(totals) == 10 + 1  # both model steps count (10 and 1 tokens)
