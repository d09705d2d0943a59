"""The tool loop against a real loopback server, in both wire formats: the model asks
for calls, nbstream runs the Python functions and sends their results back, and the
model answers. Each scenario checks the exact requests sent back (the assistant's
calls, the results in each format), the final text, ``turn.steps``, and that the
record round-trips (``to_messages``, save and load).

The model's side is scripted (tests/toolkit.py): its replies are streams in each
provider's documented format, cut into pieces as providers send them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Literal

import pytest

from nbstream import (
    Client,
    Conversation,
    StepStart,
    TextDelta,
    ToolCallDelta,
    ToolResult,
    ToolRun,
    Transcript,
    Turn,
)
from tests.clientkit import MODES, chat, collect
from tests.loopback import STALL, LoopbackServer, Reply, openai_chunks
from tests.toolkit import Call, call_id, calls_reply, text_reply

APIS = ["openai", "anthropic"]
QUESTION = "Is it warmer in Paris or Rome?"
TEMPS = {"Paris": 21, "Rome": 25}


def lookup(city: str, unit: Literal["C", "F"] = "C") -> dict[str, Any]:
    """Current temperature in a city."""
    return {"city": city, "temp": TEMPS[city], "unit": unit}


async def alookup(city: str) -> str:
    """Current temperature in a city (async)."""
    await asyncio.sleep(0)
    return f"{TEMPS[city]} C"


def client_for(server: LoopbackServer, api: str, **kw: Any) -> Client:
    return Client(
        base_url=server.base_url, model="m", api=api, api_key="sk-test-x", **kw
    )


def bodies(server: LoopbackServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests]


def result_msgs(api: str, results: list[tuple[str, str, bool]]) -> list[dict[str, Any]]:
    """What a round of tool results looks like on the wire: ``(id, text, is_error)``."""
    if api == "openai":
        return [
            {
                "role": "tool",
                "tool_call_id": i,
                "content": f"Error: {text}" if err else text,
            }
            for i, text, err in results
        ]
    blocks = []
    for i, text, err in results:
        b: dict[str, Any] = {"type": "tool_result", "tool_use_id": i, "content": text}
        if err:
            b["is_error"] = True
        blocks.append(b)
    return [{"role": "user", "content": blocks}]


def calls_msg(
    api: str, calls: list[tuple[str, str, Any]], text: str = ""
) -> dict[str, Any]:
    """The assistant's message that asked for ``calls``: ``(id, name, input)``."""
    if api == "openai":
        return {
            "role": "assistant",
            "content": text,  # "" when there is none: servers refuse null
            "tool_calls": [
                {
                    "id": i,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
                for i, name, args in calls
            ],
        }
    blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    blocks += [
        {"type": "tool_use", "id": i, "name": name, "input": args}
        for i, name, args in calls
    ]
    return {"role": "assistant", "content": blocks}


def answer_msg(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def kinds(turn: Turn) -> list[str]:
    return [
        f"tool:{s.name}:{s.status}"
        if isinstance(s, ToolResult)
        else f"model:{s.status}"
        for s in turn.steps
    ]


def assert_round_trips(turn: Turn, api: str, sent_after: list[dict[str, Any]]) -> None:
    """The transcript renders the loop as it was sent (plus the final answer), and a
    saved and reloaded transcript renders it the same."""
    tr = Transcript([turn])
    want = [*sent_after, answer_msg(turn.text)] if turn.text else sent_after
    assert tr.to_messages(api, include_system=False) == want
    again = Transcript.from_json(tr.to_json())
    assert again.to_messages(api, include_system=False) == want
    assert kinds(again[0]) == kinds(turn)
    assert [s.to_dict() for s in again[0].tool_results] == [
        s.to_dict() for s in turn.tool_results
    ]


# -- one call, parallel calls, several steps ---------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_one_call_then_the_answer(server: LoopbackServer, api: str, mode: str) -> None:
    server.enqueue(
        calls_reply(api, [Call("lookup", {"city": "Paris"})], text="Let me check."),
        text_reply(api, ["Paris", " is", " 21 C."]),
    )
    turn = chat(client_for(server, api), mode, QUESTION, tools=[lookup])
    assert turn.status == "complete" and turn.text == "Paris is 21 C."
    assert kinds(turn) == ["model:complete", "tool:lookup:complete", "model:complete"]
    first, result, final = turn.steps
    assert isinstance(first, Turn) and first.text == "Let me check."
    assert isinstance(result, ToolResult) and final is turn
    assert result.call_id == call_id(api, 0) and result.input == {"city": "Paris"}
    assert result.value == {"city": "Paris", "temp": 21, "unit": "C"}
    assert result.result == '{"city": "Paris", "temp": 21, "unit": "C"}'
    assert not result.is_error and result.elapsed_s is not None
    assert result.started_at >= first.created_at

    ask, again = bodies(server)
    question = [{"role": "user", "content": QUESTION}]
    assert ask["messages"] == question
    sent_after = [
        *question,
        calls_msg(
            api, [(call_id(api, 0), "lookup", {"city": "Paris"})], "Let me check."
        ),
        *result_msgs(api, [(call_id(api, 0), result.result, False)]),
    ]
    assert again["messages"] == sent_after
    assert again["tools"] == ask["tools"] and len(ask["tools"]) == 1
    assert "tool_choice" not in again
    assert_round_trips(turn, api, sent_after)


@pytest.mark.parametrize("api", APIS)
def test_parallel_calls_run_at_the_same_time(server: LoopbackServer, api: str) -> None:
    """Two sync calls each wait for the other to have started (a barrier): they can
    only both finish if they run concurrently. Two async calls likewise."""
    barrier = threading.Barrier(2, timeout=5)
    started: list[str] = []

    def slow_lookup(city: str) -> str:
        """Sync, on a worker thread."""
        started.append(city)
        barrier.wait()
        return f"{TEMPS[city]} C"

    both = asyncio.Event()
    seen: list[str] = []

    async def async_lookup(city: str) -> str:
        """Async, a task on the loop."""
        seen.append(city)
        if len(seen) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 5)
        return f"{TEMPS[city]} C"

    calls = [
        Call("slow_lookup", {"city": "Paris"}),
        Call("async_lookup", {"city": "Rome"}),
        Call("slow_lookup", {"city": "Rome"}),
        Call("async_lookup", {"city": "Paris"}),
    ]
    server.enqueue(calls_reply(api, calls), text_reply(api, ["Rome."]))
    turn = client_for(server, api).chat(QUESTION, tools=[slow_lookup, async_lookup])
    assert turn.text == "Rome." and sorted(started) == ["Paris", "Rome"]
    results = turn.tool_results
    assert [r.status for r in results] == ["complete"] * 4
    # results go back in the order of the calls, whatever order they finished in
    assert [r.result for r in results] == ["21 C", "25 C", "25 C", "21 C"]
    ids = [call_id(api, i) for i in range(4)]
    assert bodies(server)[1]["messages"][2:] == result_msgs(
        api, [(i, r.result, False) for i, r in zip(ids, results, strict=True)]
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_several_steps_carry_every_round(
    server: LoopbackServer, api: str, mode: str
) -> None:
    server.enqueue(
        calls_reply(api, [Call("lookup", {"city": "Paris"})]),
        calls_reply(api, [Call("alookup", {"city": "Rome"}, id="second")]),
        text_reply(api, ["Rome", " is", " warmer."]),
    )
    turn = chat(client_for(server, api), mode, QUESTION, tools=[lookup, alookup])
    assert turn.text == "Rome is warmer."
    assert kinds(turn) == [
        "model:complete",
        "tool:lookup:complete",
        "model:complete",
        "tool:alookup:complete",
        "model:complete",
    ]
    third = bodies(server)[2]["messages"]
    paris = turn.tool_results[0].result
    sent_after = [
        {"role": "user", "content": QUESTION},
        calls_msg(api, [(call_id(api, 0), "lookup", {"city": "Paris"})]),
        *result_msgs(api, [(call_id(api, 0), paris, False)]),
        calls_msg(api, [("second", "alookup", {"city": "Rome"})]),
        *result_msgs(api, [("second", "25 C", False)]),
    ]
    assert third == sent_after
    assert_round_trips(turn, api, sent_after)
    # each step is a turn of its own, with its own request: the results before it
    step1 = turn.steps[2]
    assert isinstance(step1, Turn)
    assert step1.request.messages == [turn.tool_results[0].message()]
    assert turn.total_usage is not None and turn.usage is not None
    assert turn.total_usage.output_tokens == sum(
        s.usage.output_tokens or 0
        for s in turn.steps
        if isinstance(s, Turn) and s.usage
    )


# -- what goes wrong goes back to the model ----------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_a_failing_tool_returns_its_error_to_the_model(
    server: LoopbackServer, api: str
) -> None:
    def broken(city: str) -> str:
        raise ValueError(f"no station in {city}")

    server.enqueue(
        calls_reply(api, [Call("broken", {"city": "Paris"})]),
        text_reply(api, ["Sorry,", " no data."]),
    )
    turn = client_for(server, api).chat(QUESTION, tools=[broken])
    assert turn.status == "complete" and turn.text == "Sorry, no data."
    (r,) = turn.tool_results
    assert (r.status, r.is_error) == ("error", True)
    assert r.result == r.error == "ValueError: no station in Paris"
    assert r.traceback is not None and "raise ValueError" in r.traceback
    assert bodies(server)[1]["messages"][
        -len(result_msgs(api, [("", "", True)])) :
    ] == (
        result_msgs(api, [(call_id(api, 0), "ValueError: no station in Paris", True)])
    )


@pytest.mark.parametrize("api", APIS)
def test_unknown_tool_and_bad_arguments_are_error_results(
    server: LoopbackServer, api: str
) -> None:
    calls = [
        Call("forecast", {"city": "Paris"}),  # no such tool
        Call("lookup", arguments='{"city": "Par'),  # not valid JSON
        Call("lookup", {"city": "Rome", "unit": "K"}),  # not in the schema
        Call("lookup", {"town": "Rome"}),  # a parameter it does not have
        Call("lookup", {"city": "Rome"}),  # fine
    ]
    server.enqueue(calls_reply(api, calls), text_reply(api, ["Done."]))
    turn = client_for(server, api).chat(QUESTION, tools=[lookup])
    assert turn.status == "complete" and turn.text == "Done."
    results = turn.tool_results
    assert [r.status for r in results] == ["error"] * 4 + ["complete"]
    said = [r.result for r in results]
    assert said[0] == "Unknown tool 'forecast'. The tools: lookup."
    assert said[1].startswith(
        "The call to lookup was not made: the arguments are not valid JSON"
    )
    assert (
        said[2]
        == "Invalid arguments for lookup: unit: Input should be 'C' or 'F' (got \"K\")."
    )
    assert "town: not a parameter of this tool" in said[3]
    assert "city: Field required" in said[3]
    sent = bodies(server)[1]["messages"]
    ids = [call_id(api, i) for i in range(5)]
    flags = [True] * 4 + [False]
    assert sent[2:] == result_msgs(api, list(zip(ids, said, flags, strict=True)))
    if api == "anthropic":  # the call whose JSON was cut is sent back with no input
        assert sent[1]["content"][1]["input"] == {}
    else:
        assert sent[1]["tool_calls"][1]["function"]["arguments"] == '{"city": "Par'


# -- approval ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_approve_runs_approved_calls_only(server: LoopbackServer, mode: str) -> None:
    asked: list[tuple[str, Any]] = []

    async def approve(call: Any) -> bool:
        asked.append((call.name, call.input))
        return bool(call.input["city"] == "Paris")

    ran: list[str] = []

    def track(city: str) -> str:
        ran.append(city)
        return "ok"

    server.enqueue(
        calls_reply(
            "openai",
            [Call("track", {"city": "Paris"}), Call("track", {"city": "Rome"})],
        ),
        text_reply("openai", ["Done."]),
    )
    turn = chat(
        client_for(server, "openai"), mode, QUESTION, tools=[track], approve=approve
    )
    assert sorted(c["city"] for _, c in asked) == ["Paris", "Rome"]
    assert ran == ["Paris"]
    ok, no = turn.tool_results
    assert (ok.status, no.status) == ("complete", "denied")
    assert no.result == "Not run: the user did not approve this call."
    assert bodies(server)[1]["messages"][-1]["content"] == (
        "Error: Not run: the user did not approve this call."
    )


# -- the step limit ----------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_the_step_limit_ends_the_turn_saying_so(
    server: LoopbackServer, api: str
) -> None:
    server.enqueue(
        calls_reply(api, [Call("lookup", {"city": "Paris"})]),
        calls_reply(api, [Call("lookup", {"city": "Rome"}, id="again")]),
    )
    turn = client_for(server, api).chat(QUESTION, tools=[lookup], max_steps=2)
    assert len(server.requests) == 2  # no third request
    assert turn.status == "incomplete" and turn.text == ""
    assert kinds(turn) == [
        "model:complete",
        "tool:lookup:complete",
        "model:complete",
        "tool:lookup:skipped",
        "model:incomplete",
    ]
    assert "Stopped after 2 model steps (max_steps=2)" in turn.warnings[-1]
    assert turn.extra["step_limit"] == 2
    # the conversation can go on: every call has its result in the history
    msgs = Transcript([turn]).to_messages(api, include_system=False)
    skipped = "Not run: the step limit was reached (max_steps=2 model steps)."
    assert msgs[-len(result_msgs(api, [("", "", True)])) :] == result_msgs(
        api, [("again", skipped, True)]
    )


# -- events ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_the_stream_shows_each_call_live(server: LoopbackServer, mode: str) -> None:
    server.enqueue(
        calls_reply("anthropic", [Call("lookup", {"city": "Paris"})], piece=4),
        text_reply("anthropic", ["21 C."]),
    )
    client = client_for(server, "anthropic")
    events, turn = collect(client, mode, QUESTION, tools=[lookup])
    args = [e.arguments for e in events if isinstance(e, ToolCallDelta)]
    assert len(args) > 3 and "".join(args) == '{"city": "Paris"}'  # piece by piece
    runs = [(e.name, e.status, e.step) for e in events if isinstance(e, ToolRun)]
    assert runs == [("lookup", "running", 0), ("lookup", "complete", 0)]
    end = next(e for e in events if isinstance(e, ToolRun) and e.status == "complete")
    assert end.result == turn.tool_results[0].result and end.elapsed_s is not None
    order = [type(e).__name__ for e in events if isinstance(e, ToolRun | StepStart)]
    assert order == ["ToolRun", "ToolRun", "StepStart"]
    assert next(e for e in events if isinstance(e, StepStart)).step == 1
    assert turn.text == "21 C."


# -- Stop --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_stop_during_the_second_step_keeps_every_step(
    server: LoopbackServer, api: str, mode: str
) -> None:
    stalled = text_reply(api, ["Rome", " is"])
    if api == "anthropic":
        stalled.chunks = [*stalled.chunks[:4], STALL]  # start, block, "Rome", " is"
    else:
        stalled = Reply.events(openai_chunks(["Rome", " is"], finish=None, done=False))
        stalled.chunks.append(STALL)
    server.enqueue(calls_reply(api, [Call("lookup", {"city": "Rome"})]), stalled)

    stepped: list[int] = []

    def stop_at_text(s: Any, ev: Any) -> None:
        if isinstance(ev, StepStart):
            stepped.append(ev.step)
        elif stepped and isinstance(ev, TextDelta):
            s.cancel()  # the second step is streaming

    _events, turn = collect(
        client_for(server, api), mode, QUESTION, stop_at_text, tools=[lookup]
    )
    assert turn.status == "cancelled" and turn.text.startswith("Rome")
    assert kinds(turn) == ["model:complete", "tool:lookup:complete", "model:cancelled"]
    assert server.wait_for(lambda: server.requests[1].client_closed_at is not None, 5)
    # a stopped turn stays in the history with its partial reply, after the loop
    msgs = Transcript([turn]).to_messages(api, include_system=False)
    assert msgs[-1] == answer_msg(turn.text)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_stop_during_tools_cancels_async_and_reports_sync_in_the_background(
    server: LoopbackServer, api: str, mode: str
) -> None:
    release = threading.Event()
    thread_done = threading.Event()
    cancelled: list[bool] = []

    entered = threading.Event()

    def slow_sync(city: str) -> str:
        """Blocks until the test releases it."""
        entered.set()
        release.wait(10)
        thread_done.set()
        return "late"

    async def slow_async(city: str) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    server.enqueue(
        calls_reply(
            api,
            [
                Call("slow_sync", {"city": "Paris"}),
                Call("slow_async", {"city": "Rome"}),
            ],
            text="Checking.",
        )
    )
    running: set[str] = set()
    stopped_at: list[float] = []

    def stop_when_both_run(s: Any, ev: Any) -> None:
        if isinstance(ev, ToolRun) and ev.status == "running":
            running.add(ev.name)
            if len(running) == 2:
                assert entered.wait(5)  # the thread runs the function now
                stopped_at.append(time.monotonic())
                s.cancel()

    try:
        _events, turn = collect(
            client_for(server, api),
            mode,
            QUESTION,
            stop_when_both_run,
            tools=[slow_sync, slow_async],
        )
        ended = time.monotonic()
        assert ended - stopped_at[0] < 2.0  # the sync function did not hold Stop up
        assert not thread_done.is_set()  # … it is still running
        assert turn.status == "cancelled" and turn.text == ""
        sync_r, async_r = turn.tool_results
        assert (sync_r.status, async_r.status) == ("background", "cancelled")
        assert cancelled == [True]
        assert "finishes in the background" in sync_r.result and sync_r.is_error
        assert async_r.result == "Stopped by the user before the call ended."
        assert kinds(turn) == [
            "model:complete",
            "tool:slow_sync:background",
            "tool:slow_async:cancelled",
            "model:cancelled",
        ]
        assert len(server.requests) == 1  # the results were never sent
        # the history stays valid: both calls have a result
        msgs = Transcript([turn]).to_messages(api, include_system=False)
        ids = [call_id(api, 0), call_id(api, 1)]
        assert msgs[-len(result_msgs(api, [("", "", True)] * 2)) :] == result_msgs(
            api,
            [(ids[0], sync_r.result, True), (ids[1], async_r.result, True)],
        )
    finally:
        release.set()
    assert thread_done.wait(5)


def test_stop_while_waiting_for_approval(server: LoopbackServer) -> None:
    asked = threading.Event()

    async def never_answers(call: Any) -> bool:
        asked.set()
        await asyncio.sleep(30)
        return True

    server.enqueue(calls_reply("openai", [Call("lookup", {"city": "Paris"})]))
    s = client_for(server, "openai").stream(
        QUESTION, tools=[lookup], approve=never_answers
    )
    with s:
        for ev in s:
            if isinstance(ev, ToolRun) and ev.status == "approval":
                s.cancel()
    turn = s.turn
    assert asked.is_set()
    assert turn.status == "cancelled"
    assert [r.status for r in turn.tool_results] == ["cancelled"]


# -- a conversation goes on after a tool turn, in either format ----------------------------


def test_a_conversation_goes_on_and_changes_format_after_a_tool_loop(
    server: LoopbackServer,
) -> None:
    server.enqueue(
        calls_reply("openai", [Call("lookup", {"city": "Paris"})], text="Checking."),
        text_reply("openai", ["21 C."]),
        text_reply("anthropic", ["Yes."]),
        text_reply("openai", ["Still yes."]),
    )
    conv = Conversation(
        client_for(server, "openai"), system="Be brief.", tools=[lookup]
    )
    conv.send(QUESTION)
    paris = conv.transcript[0].tool_results[0].result
    conv.client = client_for(server, "anthropic")  # the next model speaks Anthropic
    conv.send("Sure?")
    sent = bodies(server)[2]
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [
        {"role": "user", "content": QUESTION},
        calls_msg("anthropic", [("call_0", "lookup", {"city": "Paris"})], "Checking."),
        *result_msgs("anthropic", [("call_0", paris, False)]),
        answer_msg("21 C."),
        {"role": "user", "content": "Sure?"},
    ]
    conv.client = client_for(server, "openai")  # and back
    conv.send("Really?")
    assert bodies(server)[3]["messages"][1:4] == [
        {"role": "user", "content": QUESTION},
        calls_msg("openai", [("call_0", "lookup", {"city": "Paris"})], "Checking."),
        *result_msgs("openai", [("call_0", paris, False)]),
    ]


def test_to_pandas_has_a_row_per_model_step(server: LoopbackServer) -> None:
    pytest.importorskip("pandas")
    server.enqueue(
        calls_reply(
            "openai",
            [Call("lookup", {"city": "Paris"}), Call("lookup", {"city": "Rome"})],
        ),
        text_reply("openai", ["Rome."]),
        text_reply("openai", ["Hi."]),
    )
    conv = Conversation(client_for(server, "openai"))
    loop = conv.send(QUESTION, tools=[lookup])
    conv.send("Hello")
    df = conv.transcript.to_pandas()
    assert df["step"].tolist() == [0, 1, 0]
    assert df["turn_id"].tolist() == [loop.id, loop.id, conv.transcript[1].id]
    assert df["prompt"].tolist() == [QUESTION, QUESTION, "Hello"]
    assert df["tool_calls"].tolist() == [2, 0, 0]
    assert df["text"].tolist() == ["", "Rome.", "Hi."]
    calls = df["tool_results"].iloc[0]
    assert [(c["name"], json.loads(c["arguments"]), c["status"]) for c in calls] == [
        ("lookup", {"city": "Paris"}, "complete"),
        ("lookup", {"city": "Rome"}, "complete"),
    ]
    assert df["tool_results"].iloc[1] == [] and df["tool_results"].iloc[2] == []


def test_tool_descriptions_as_dicts_are_sent_as_they_are(
    server: LoopbackServer,
) -> None:
    raw = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    server.enqueue(calls_reply("openai", [Call("lookup", {"city": "Paris"})]))
    turn = client_for(server, "openai").chat(QUESTION, tools=raw, tool_choice="auto")
    assert (
        bodies(server)[0]["tools"] == raw and bodies(server)[0]["tool_choice"] == "auto"
    )
    assert len(server.requests) == 1  # not run: the calls are the reply
    assert turn.tool_calls[0].input == {"city": "Paris"} and turn.steps == [turn]


def test_results_are_cut_and_any_value_becomes_json(server: LoopbackServer) -> None:
    from nbstream import as_tool

    def big() -> str:
        return "x" * 50

    def when() -> Any:
        import datetime

        return {"at": datetime.date(2024, 5, 1), "tags": {"a"}, "obj": object}

    server.enqueue(
        calls_reply("openai", [Call("big"), Call("when")]), text_reply("openai", ["ok"])
    )
    turn = client_for(server, "openai").chat(
        "Go", tools=[as_tool(big, max_result_chars=10), when]
    )
    cut, dated = turn.tool_results
    assert cut.result.startswith("x" * 10 + "\n… [cut: the result has 50 characters")
    assert json.loads(dated.result) == {
        "at": "2024-05-01",
        "tags": ["a"],
        "obj": "<class 'object'>",
    }


def test_approve_true_asks_on_the_terminal(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []
    answers = iter(["y", "no"])

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("builtins.input", fake_input)
    server.enqueue(
        calls_reply(
            "openai",
            [Call("lookup", {"city": "Paris"}), Call("lookup", {"city": "Rome"})],
        ),
        text_reply("openai", ["ok"]),
    )
    turn = client_for(server, "openai").chat(QUESTION, tools=[lookup], approve=True)
    # one question at a time, in the order of the calls
    assert prompts == [
        "Run lookup(city='Paris')? [y/N] ",
        "Run lookup(city='Rome')? [y/N] ",
    ]
    assert [r.status for r in turn.tool_results] == ["complete", "denied"]


def test_a_tool_result_never_carries_the_key(server: LoopbackServer) -> None:
    key = "sk-test-TOOLKEY-0123456789abcdef"

    def leaky() -> str:
        """Returns the environment, key included."""
        return f"OPENAI_API_KEY={key}"

    def raises() -> str:
        raise RuntimeError(f"auth failed for {key}")

    def long(n: int) -> str:
        """The key straddles the cut."""
        return "x" * 90 + key

    server.enqueue(
        calls_reply("openai", [Call("leaky"), Call("raises"), Call("long", {"n": 1})]),
        text_reply("openai", ["ok"]),
    )
    client = Client(base_url=server.base_url, model="m", api_key=key)
    from nbstream import as_tool

    turn = client.chat("Go", tools=[leaky, raises, as_tool(long, max_result_chars=100)])
    assert turn.tool_results[2].result.startswith("x" * 90)
    sent = server.requests[1].body.decode()
    assert key not in sent and key[8:20] not in sent
    assert "OPENAI_API_KEY=" in sent  # the rest of the result went
    saved = Transcript([turn]).to_json()
    assert key not in saved and key[8:20] not in saved


def test_a_step_that_fails_falls_back_like_any_request(server: LoopbackServer) -> None:
    server.enqueue(
        calls_reply("openai", [Call("lookup", {"city": "Rome"})]),
        Reply.json(503, {"error": {"message": "overloaded"}}),
        text_reply("openai", ["25 C."]),
    )
    client = Client(
        base_url=server.base_url,
        model="model-a",
        api_key="sk-test-x",
        fallbacks=["model-b"],
        max_retries=0,
    )
    turn = client.chat(QUESTION, tools=[lookup])
    assert turn.status == "complete" and turn.text == "25 C."
    a, b, c = bodies(server)
    assert [a["model"], b["model"], c["model"]] == ["model-a", "model-a", "model-b"]
    assert c["messages"] == b["messages"] and c["tools"] == a["tools"]
    assert [x.model for x in turn.attempts] == ["model-a", "model-b"]
    assert kinds(turn) == ["model:complete", "tool:lookup:complete", "model:complete"]


def test_a_bug_in_the_loop_is_an_internal_error_with_the_steps_kept(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbstream import InternalError
    from nbstream._http.toolloop import ToolLoop

    def broken(self: Any) -> Any:
        raise AttributeError("oops")

    monkeypatch.setattr(ToolLoop, "_next_plan", broken)
    server.enqueue(calls_reply("openai", [Call("lookup", {"city": "Rome"})]))
    with pytest.raises(InternalError, match="while running a tool loop") as info:
        client_for(server, "openai").chat(QUESTION, tools=[lookup])
    turn = info.value.turn
    assert turn is not None and turn.status == "error"
    assert kinds(turn) == ["model:complete", "tool:lookup:complete", "model:error"]
