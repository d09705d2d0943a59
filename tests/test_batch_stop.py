"""Stop (``job.cancel()``, the progress view's button) and a killed process: the store
stays consistent, partial replies are kept, and a rerun sends exactly what is missing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbstream
from nbstream import Client, Turn
from tests.batchkit import KEY, ScriptedModel, answer, wait_until
from tests.kernel import clean_env
from tests.loopback import LoopbackServer

ROOT = Path(__file__).resolve().parents[1]


def long_prompts(n: int) -> list[str]:
    return [f"question {i:03d} " * 3 for i in range(n)]


def stored(path: Path) -> dict[str, tuple[str, str | None]]:
    """prompt -> (status, text) of every result in the store, read with sqlite3."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        out = {}
        for request, status, text in conn.execute(
            "SELECT request, status, text FROM results"
        ):
            prompt = json.loads(request)["messages"][-1]["content"]
            out[prompt] = (status, text)
        return out
    finally:
        conn.close()


def _hang_from_20(prompt: str, n: int) -> str | None:
    """Rows 20 and later: the first attempt sends three events and then holds."""
    return "hang" if n == 1 and int(prompt.split()[1]) >= 20 else None


@pytest.fixture
def hanging_srv() -> Iterator[tuple[LoopbackServer, ScriptedModel]]:
    # one connection per request, so the server sees each one the client closes
    with LoopbackServer() as srv:
        model = ScriptedModel(_hang_from_20)
        srv.serve(model)
        yield srv, model
        model.gate.open()


@pytest.mark.parametrize("how", ["cancel", "stop-button"])
def test_stop_keeps_partial_replies_and_a_rerun_sends_the_rest(
    hanging_srv: tuple[LoopbackServer, ScriptedModel], tmp_path: Path, how: str
) -> None:
    srv, model = hanging_srv
    client = Client(base_url=srv.base_url, api_key=KEY, model="m")
    turns: list[Turn] = []  # every turn the batch creates, to see its partial reply
    request = client._request

    def spy(*args: Any, **kw: Any) -> Any:
        spec, turn = request(*args, **kw)
        turns.append(turn)
        return spec, turn

    client._request = spy  # type: ignore[method-assign]
    store = tmp_path / "stop.sqlite"
    todo = long_prompts(40)
    job = nbstream.batch(todo, client=client, concurrency=6, store=store)
    view = job.view() if how == "stop-button" else None
    # rows 0-19 finish; rows 20-25 are in flight, each holding a partial reply
    assert wait_until(
        lambda: sum(s.stalled_at is not None for s in srv.requests) == 6, 20
    )
    partial = [t for t in turns if t.status == "streaming"]
    assert len(partial) == 6
    assert wait_until(lambda: all(len(t.text) == 9 for t in partial), 10)
    hung = [s for s in srv.requests if s.stalled_at is not None]
    t_stop = time.monotonic()
    if view is not None:
        view.stop.click()  # what a click in the notebook runs
    else:
        job.cancel()
    job.wait(timeout=10)
    assert job.status == "cancelled"
    assert job.counts == {
        "done": 20,
        "failed": 0,
        "cancelled": 6,
        "running": 0,
        "pending": 14,
        "total": 40,
    }
    if view is not None:
        assert view.stop.disabled and view.bar.value == 26
    # the store: whole replies for the done, the partial ones for the stopped
    rows = stored(store)
    assert {p: s for p, (s, _) in rows.items()} == {
        **{p: "done" for p in todo[:20]},
        **{p: "cancelled" for p in todo[20:26]},
    }
    assert all(rows[p][1] == answer(p) for p in todo[:20])
    assert all(rows[p][1] == "echo: " + p[:3] for p in todo[20:26])
    # the stopped requests' connections were really closed (how soon after a Stop
    # is test_client_stop's business; here, a loaded machine gets a few seconds)
    assert srv.wait_for(lambda: all(s.client_closed_at is not None for s in hung), 5)
    assert all((s.client_closed_at or 0) - t_stop < 5.0 for s in hung)
    # a rerun sends exactly what is not done (the stopped and the pending), once
    before = model.prompts_sent()
    model.plan = lambda prompt, n: None  # nothing hangs any more
    again = nbstream.batch(todo, client=client, concurrency=6, store=store).wait()
    sent = model.prompts_sent() - before
    assert set(sent) == set(todo[20:]) and set(sent.values()) == {1}
    assert again.counts["done"] == 40 and again.reused == 20


_CHILD = textwrap.dedent(
    """
    import sys
    import nbstream
    url, store, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = nbstream.Client(base_url=url, api_key=sys.argv[4], model="m")
    prompts = [f"question {i:03d} " * 3 for i in range(n)]
    nbstream.batch(prompts, client=client, concurrency=4, store=store).wait()
    """
)


def test_a_killed_run_resumes_sending_exactly_the_missing_requests(
    tmp_path: Path,
) -> None:
    n = 300
    with LoopbackServer(keep_alive=True) as srv:
        model = ScriptedModel(delay=0.002)
        srv.serve(model)
        store = tmp_path / "killed.sqlite"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, srv.base_url, str(store), str(n), KEY],
            env=clean_env(PYTHONPATH=str(ROOT)),
            cwd=tmp_path,
        )
        try:
            assert wait_until(lambda: len(srv.requests) >= 120, 60), "child too slow"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        assert child.returncode == -signal.SIGKILL
        rows = stored(store)  # what survived the kill
        done = {p for p, (s, _) in rows.items() if s == "done"}
        assert 100 <= len(done) < n
        before = model.prompts_sent()
        todo = long_prompts(n)
        client = Client(base_url=srv.base_url, api_key=KEY, model="m")
        job = nbstream.batch(todo, client=client, concurrency=4, store=store).wait()
        sent = model.prompts_sent() - before
    # exactly the missing requests, once each; nothing finished was sent again
    assert set(sent) == set(todo) - done
    assert set(sent.values()) == {1}
    assert job.counts["done"] == n and job.reused == len(done)
    assert list(job.to_pandas()["text"]) == [answer(p) for p in todo]
