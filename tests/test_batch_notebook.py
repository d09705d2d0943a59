"""Batch runs and the reply cache in a real IPython kernel: the live progress view and
its Stop button, the deterministic summary under nbclient/nbval (``allow_stdin=False``),
``await job``, and ``%chat cache on|off``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.batchkit import KEY, ScriptedModel, answer, wait_until
from tests.kernel import Execution, Kernel, clean_env
from tests.loopback import LoopbackServer


@pytest.fixture(scope="module")
def srv() -> Iterator[tuple[LoopbackServer, ScriptedModel]]:
    with LoopbackServer() as s:
        model = ScriptedModel()
        s.serve(model)
        yield s, model
        model.gate.open()


@pytest.fixture(scope="module")
def kernel(
    srv: tuple[LoopbackServer, ScriptedModel], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kernel]:
    server, _ = srv
    env = clean_env(
        NBSTREAM_BASE_URL=server.base_url,
        NBSTREAM_MODEL="m",
        NBSTREAM_API_KEY=KEY,
    )
    k = Kernel(env, cwd=tmp_path_factory.mktemp("kernel"))
    try:
        ex = k.run("%load_ext nbstream\nimport nbstream\nclient = nbstream.Client()")
        assert ex.error is None, ex.error
        yield k
        leaked = [m for m in k.iopub() if KEY in json.dumps(m.content)]
        assert not leaked, leaked[:1]
    finally:
        k.close()


def plain(ex: Execution) -> str:
    return "\n".join(d["data"].get("text/plain", "") for d in ex.displays())


def test_the_progress_view_shows_and_its_stop_button_cancels(
    kernel: Kernel, srv: tuple[LoopbackServer, ScriptedModel], tmp_path: Path
) -> None:
    server, model = srv
    model.plan = lambda prompt, n: "hang" if prompt.startswith("h") else None
    server.reset()
    store = tmp_path / "view.sqlite"
    ex = kernel.run(
        "job = nbstream.batch([f'h{i}' for i in range(10)], client=client, "
        f"concurrency=2, store={str(store)!r})\njob"
    )
    assert ex.error is None, ex.error
    shown = ex.displays()[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in shown
    assert shown["text/plain"] == "BatchView(10 rows)"
    buttons = [
        m.content["comm_id"]
        for m in ex.messages
        if m.type == "comm_open"
        and m.content["data"]["state"].get("_model_name") == "ButtonModel"
    ]
    assert len(buttons) == 1
    assert wait_until(
        lambda: sum(s.stalled_at is not None for s in server.requests) == 2, 20
    )
    # what the browser sends when Stop is clicked
    msg = kernel.kc.session.msg(
        "comm_msg",
        {
            "comm_id": buttons[0],
            "data": {"method": "custom", "content": {"event": "click"}},
        },
    )
    kernel.kc.shell_channel.send(msg)
    out = kernel.eval("(job.wait(timeout=10).status, job.counts['cancelled'])")
    assert out == "('cancelled', 2)"
    assert sum(s.client_closed_at is not None for s in server.requests) == 2
    # the view followed the job, at most a few updates a second
    updates = [
        m
        for m in kernel.iopub()
        if m.type == "comm_msg" and m.content["data"].get("method") == "update"
    ]
    assert updates, "the view was never updated"
    span = updates[-1].received - updates[0].received
    per_widget = len(updates) / 4  # bar, numbers, errors, button
    assert per_widget <= 4 * span + 3


def test_under_nbclient_the_job_shows_one_summary_the_same_run_to_run(
    kernel: Kernel, srv: tuple[LoopbackServer, ScriptedModel], tmp_path: Path
) -> None:
    _, model = srv
    model.plan = lambda prompt, n: None
    code = (
        "nbjob = nbstream.batch(['a', 'b', 'c'], client=client, "
        f"store={str(tmp_path / 'nb.sqlite')!r})\nnbjob"
    )
    first = kernel.run(code, allow_stdin=False)
    again = kernel.run(code, allow_stdin=False)  # answered from the store this time
    assert first.error is None and again.error is None
    assert plain(first) == plain(again) == "batch finished: 3 rows · 3 done · 0 failed"
    assert not first.of_type("comm_open")  # no widget where nobody can see it


def test_await_job_in_a_cell(
    kernel: Kernel, srv: tuple[LoopbackServer, ScriptedModel], tmp_path: Path
) -> None:
    _, model = srv
    model.plan = lambda prompt, n: None
    ex = kernel.run(
        f"j = await nbstream.batch(['x', 'y'], client=client, "
        f"store={str(tmp_path / 'aw.sqlite')!r})\n"
        "print(j.status, j.counts['done'], list(j.to_pandas()['text']))"
    )
    assert ex.error is None, ex.error
    assert ex.stdout.strip() == f"finished 2 {[answer('x'), answer('y')]}"


def test_chat_cache_on_answers_a_rerun_cell_without_a_request(
    kernel: Kernel, srv: tuple[LoopbackServer, ScriptedModel], tmp_path: Path
) -> None:
    server, model = srv
    model.plan = lambda prompt, n: None
    path = tmp_path / "cells.sqlite"
    on = kernel.run(f"%chat cache on {path}")
    assert on.error is None and f"The reply cache is on: {path}" in on.stdout
    cell = "%%chat -c cached --new\nWhat is in the cache?"
    n0 = len(server.requests)
    first = kernel.run(cell, allow_stdin=False)
    assert len(server.requests) == n0 + 1
    second = kernel.run(cell, allow_stdin=False)
    assert len(server.requests) == n0 + 1  # answered from the cache
    assert answer("What is in the cache?") in plain(second)
    assert "complete (cached)" in plain(second)
    assert "(cached)" not in plain(first)
    off = kernel.run("%chat cache off")
    assert "The reply cache is off." in off.stdout
    kernel.run(cell, allow_stdin=False)
    assert len(server.requests) == n0 + 2
