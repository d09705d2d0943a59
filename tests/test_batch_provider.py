"""``engine="openai-batch"`` and ``"anthropic-batch"`` against an emulation of the
providers' batch APIs (tests/batchapis.py: a loopback server built from their
documented formats, not the providers, which are not reachable from here). The files
and request bodies nbstream writes are checked line by line against those formats;
partial failures, cancel, and a resume after a killed process (a kernel restart) that
polls the batch it submitted instead of submitting again."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbstream
from nbstream import Client
from nbstream._batch.anthropic_batch import AnthropicBatch
from nbstream._batch.batchapi import custom_id_for
from nbstream._batch.openai_batch import OpenAIBatch
from nbstream._batch.progress import line
from tests.batchapis import BatchAPIs
from tests.batchkit import KEY, answer, any_slice_of, wait_until
from tests.kernel import clean_env
from tests.loopback import LoopbackServer, Reply, anthropic_chunks, openai_chunks

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT = "/v1/chat/completions"
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # Anthropic's documented limit


@pytest.fixture
def apis() -> Iterator[tuple[LoopbackServer, BatchAPIs]]:
    with LoopbackServer(keep_alive=True) as srv:
        emu = BatchAPIs(KEY)
        emu.base = srv.base_url
        srv.serve(emu)
        yield srv, emu


def client_for(srv: LoopbackServer, api: str = "openai") -> Client:
    model = "claude-test" if api == "anthropic" else "gpt-4o-mini"
    return Client(base_url=srv.base_url, api_key=KEY, model=model, api=api)


def scripted(outcomes: dict[str, str]) -> Any:
    return lambda prompt: outcomes.get(prompt, "ok")


def streaming_bodies(prompts: list[str], api: str, **params: Any) -> dict[str, Any]:
    """What the local (streaming) engine sends for each prompt, as the server saw it."""
    chunks = anthropic_chunks if api == "anthropic" else openai_chunks
    with LoopbackServer(keep_alive=True) as srv:
        srv.serve(lambda seen: Reply.events(chunks(["ok"])))
        nbstream.batch(prompts, client=client_for(srv, api), **params).wait(60)
        bodies = [s.json for s in srv.requests]
    return {b["messages"][-1]["content"]: b for b in bodies}


def store_rows(store: Path) -> dict[str, tuple[str, str, int, str | None]]:
    """prompt → (key, status, final, error), read with sqlite3."""
    conn = sqlite3.connect(store)
    try:
        out = {}
        for key, request, status, final, error in conn.execute(
            "SELECT key, request, status, final, error FROM results"
        ):
            prompt = json.loads(request)["messages"][-1]["content"]
            out[prompt] = (key, status, final, error)
        return out
    finally:
        conn.close()


def meta(store: Path, name: str) -> Any:
    conn = sqlite3.connect(store)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None
    finally:
        conn.close()


def no_key_in(*blobs: bytes) -> None:
    for blob in blobs:
        assert any_slice_of(KEY, blob) is None


def store_bytes(store: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in store.parent.glob(store.name + "*") if p.is_file()
    )


def test_openai_batch_partly_failed_then_a_rerun_sends_only_what_can_succeed(
    apis: tuple[LoopbackServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, emu = apis
    prompts = [f"q{i}" for i in range(8)]
    emu.outcome = scripted({"q1": "400", "q2": "500", "q3": "expired", "q4": "error"})
    store = tmp_path / "openai.sqlite"
    job = nbstream.batch(
        prompts,
        client=client_for(srv),
        engine="openai-batch",
        poll_interval=0.02,
        store=store,
        temperature=0,
    )
    job.wait(timeout=60)
    assert job.status == "finished"
    df = job.to_pandas()
    assert list(df["status"]) == ["done"] + ["failed"] * 4 + ["done"] * 3
    ok = [0, 5, 6, 7]
    assert [df["text"][i] for i in ok] == [answer(prompts[i]) for i in ok]
    assert list(df["input_tokens"][ok]) == [10] * 4  # the answer's usage
    costs = [t.cost for t in job.transcript]  # cost_usd: the stored turns' cost
    assert [df["cost_usd"][i] for i in ok] == [costs[i] for i in ok]
    assert all(c > 0 for c in df["cost_usd"][ok])
    rows = store_rows(store)
    assert "HTTP 400" in (rows["q1"][3] or "") and rows["q1"][2] == 1  # final
    assert "HTTP 500" in (rows["q2"][3] or "") and rows["q2"][2] == 0
    assert "completion window" in (rows["q3"][3] or "") and rows["q3"][2] == 0
    assert "server_error" in (rows["q4"][3] or "") and rows["q4"][2] == 0
    turn = job.transcript[0]
    assert turn.streamed is False and turn.extra["batch"]["engine"] == "openai-batch"

    # what was written, line by line, against the documented input format
    (bid,) = emu.batches
    fields, content = emu.uploads[0]
    assert fields["purpose"] == "batch" and fields["filename"].endswith(".jsonl")
    lines = [json.loads(x) for x in content.split(b"\n")]
    assert len(lines) == 8
    streamed = streaming_bodies(prompts, "openai", temperature=0)
    for entry in lines:
        assert set(entry) == {"custom_id", "method", "url", "body"}
        assert isinstance(entry["custom_id"], str) and CUSTOM_ID.fullmatch(
            entry["custom_id"]
        )
        assert entry["method"] == "POST" and entry["url"] == ENDPOINT
        body = entry["body"]
        expected = dict(streamed[body["messages"][-1]["content"]])
        assert expected.pop("stream") is True
        expected.pop("stream_options", None)
        assert body == expected and "stream" not in body
    ids = [e["custom_id"] for e in lines]
    assert len(set(ids)) == 8
    assert set(ids) == {rows[p][0] for p in prompts}  # custom_id = the request key
    assert emu.batches[bid].created == {
        "input_file_id": emu.batches[bid].created["input_file_id"],
        "endpoint": ENDPOINT,
        "completion_window": "24h",
    }
    # the provider's status, and the batch id kept with the store
    details = job.status()
    assert details["provider_status"] == "expired" and details["batch_id"] == bid
    assert meta(store, "engine.openai-batch")["batches"][0]["id"] == bid
    no_key_in(content, store_bytes(store))

    # a rerun: the batch is polled again (not submitted), and what can still
    # succeed (500, expired, an error line) goes in a new batch; the 400 does not
    emu.outcome = scripted({"q1": "400"})
    again = nbstream.batch(
        prompts,
        client=client_for(srv),
        engine="openai-batch",
        poll_interval=0.02,
        store=store,
        temperature=0,
    ).wait(timeout=60)
    assert emu.submissions == 2
    second = emu.batches[next(b for b in emu.batches if b != bid)]
    assert {r["custom_id"] for r in second.requests} == {
        rows[p][0] for p in ("q2", "q3", "q4")
    }
    assert list(again.to_pandas()["status"]) == ["done", "failed"] + ["done"] * 6
    assert again.reused == 5


_CHILD = textwrap.dedent(
    """
    import sys
    import nbstream
    url, store, key = sys.argv[1:4]
    client = nbstream.Client(base_url=url, api_key=key, model="gpt-4o-mini")
    prompts = [f"q{i}" for i in range(6)]
    nbstream.batch(prompts, client=client, engine="openai-batch", poll_interval=0.02,
                   store=store).wait()
    """
)


def test_after_a_kernel_restart_the_same_batch_is_polled_not_submitted_again(
    apis: tuple[LoopbackServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, emu = apis
    emu.hold()  # the provider takes its time
    store = tmp_path / "restart.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, srv.base_url, str(store), KEY],
        env=clean_env(PYTHONPATH=str(ROOT)),
        cwd=tmp_path,
    )
    try:
        assert wait_until(lambda: emu.submissions == 1, 60)
        assert wait_until(lambda: bool(emu.batches[next(iter(emu.batches))].polls), 30)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the kernel dies while the batch runs
        child.wait(10)
    (bid,) = emu.batches
    assert meta(store, "engine.openai-batch")["batches"][0]["id"] == bid
    emu.hold(held=False)
    prompts = [f"q{i}" for i in range(6)]
    job = nbstream.batch(
        prompts,
        client=client_for(srv),
        engine="openai-batch",
        poll_interval=0.02,
        store=store,
    ).wait(timeout=60)
    assert emu.submissions == 1 and len(emu.uploads) == 1  # nothing sent again
    assert list(job.to_pandas()["text"]) == [answer(p) for p in prompts]
    assert job.status()["batch_id"] == bid


def test_stop_cancels_the_batch_keeps_what_it_finished_and_a_rerun_sends_the_rest(
    apis: tuple[LoopbackServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, emu = apis
    emu.hold()
    prompts = [f"q{i}" for i in range(8)]
    store = tmp_path / "cancel.sqlite"
    job = nbstream.batch(
        prompts,
        client=client_for(srv),
        engine="openai-batch",
        poll_interval=0.02,
        store=store,
    )
    assert wait_until(lambda: job.status().get("provider_status") == "in_progress", 30)
    assert job.counts["running"] == 8
    assert "OpenAI batch batch_" in line(job.snapshot())  # the progress view says
    job.cancel()
    job.wait(timeout=30)
    (bid,) = emu.batches
    assert any(
        s.method == "POST" and s.path == f"/v1/batches/{bid}/cancel" for s in emu.seen
    )
    assert job.status == "cancelled" and job.status()["provider_status"] == "cancelled"
    df = job.to_pandas()
    assert list(df["status"]) == ["done"] * 4 + ["cancelled"] * 4  # half had run
    assert list(df["text"][:4]) == [answer(p) for p in prompts[:4]]
    emu.hold(held=False)
    again = nbstream.batch(
        prompts,
        client=client_for(srv),
        engine="openai-batch",
        poll_interval=0.02,
        store=store,
    ).wait(timeout=60)
    assert emu.submissions == 2
    second = next(b for b in emu.batches.values() if b.id != bid)
    assert [r["body"]["messages"][-1]["content"] for r in second.requests] == prompts[
        4:
    ]
    assert again.counts["done"] == 8


def test_a_batch_that_fails_validation_fails_each_request_saying_why(
    apis: tuple[LoopbackServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, _emu = apis
    job = nbstream.batch(
        ["a", "b"],
        client=client_for(srv),
        engine="openai-batch",
        poll_interval=0.02,
        model="no-such-model",
        store=tmp_path / "invalid.sqlite",
    ).wait(timeout=30)
    df = job.to_pandas()
    assert list(df["status"]) == ["failed", "failed"]
    assert all("failed validation: no such model" in e for e in df["error"])
    assert job.status()["provider_status"] == "failed"


def test_anthropic_message_batch_partly_failed_in_the_documented_formats(
    apis: tuple[LoopbackServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, emu = apis
    prompts = [f"q{i}" for i in range(7)]
    emu.outcome = scripted(
        {"q1": "400", "q2": "overloaded", "q3": "expired", "q4": "canceled"}
    )
    with LoopbackServer() as elsewhere:  # results_url on another host: not followed
        emu.results_host = elsewhere.base_url
        store = tmp_path / "anthropic.sqlite"
        job = nbstream.batch(
            prompts,
            client=client_for(srv, "anthropic"),
            engine="anthropic-batch",
            poll_interval=0.02,
            store=store,
            max_tokens=64,
        ).wait(timeout=60)
        assert elsewhere.requests == []
    df = job.to_pandas()
    statuses = ["done", "failed", "failed", "failed", "cancelled", "done", "done"]
    assert list(df["status"]) == statuses
    assert [df["text"][i] for i in (0, 5, 6)] == [answer(prompts[i]) for i in (0, 5, 6)]
    rows = store_rows(store)
    assert rows["q1"][2] == 1 and "invalid_request_error" in (rows["q1"][3] or "")
    assert rows["q2"][2] == 0 and "overloaded_error" in (rows["q2"][3] or "")
    assert rows["q3"][2] == 0 and "completion window" in (rows["q3"][3] or "")
    (bid,) = emu.batches
    assert job.status()["provider_status"] == "ended"
    assert meta(store, "engine.anthropic-batch")["batches"][0]["id"] == bid
    # the create request, against the documented format
    (create,) = [s for s in emu.seen if s.method == "POST"]
    assert create.path == "/v1/messages/batches"
    assert create.headers["x-api-key"] == KEY
    assert create.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in create.headers
    body = create.json
    assert set(body) == {"requests"} and len(body["requests"]) == 7
    streamed = streaming_bodies(prompts, "anthropic", max_tokens=64)
    for req in body["requests"]:
        assert set(req) == {"custom_id", "params"}
        assert CUSTOM_ID.fullmatch(req["custom_id"])
        expected = dict(streamed[req["params"]["messages"][-1]["content"]])
        assert expected.pop("stream") is True
        assert req["params"] == expected and req["params"]["max_tokens"] == 64
    ids = [r["custom_id"] for r in body["requests"]]
    assert len(set(ids)) == 7 and set(ids) == {rows[p][0] for p in prompts}
    assert any(s.path == f"/v1/messages/batches/{bid}/results" for s in emu.seen)
    no_key_in(create.body, store_bytes(store))


def test_anthropic_stop_cancels_the_message_batch(
    apis: tuple[LoopbackServer, BatchAPIs], tmp_path: Path
) -> None:
    srv, emu = apis
    emu.hold()
    job = nbstream.batch(
        [f"q{i}" for i in range(6)],
        client=client_for(srv, "anthropic"),
        engine="anthropic-batch",
        poll_interval=0.02,
        store=tmp_path / "cancel.sqlite",
    )
    assert wait_until(lambda: job.status().get("provider_status") == "in_progress", 30)
    job.cancel()
    job.wait(timeout=30)
    (bid,) = emu.batches
    assert any(s.path == f"/v1/messages/batches/{bid}/cancel" for s in emu.seen)
    assert job.status == "cancelled"
    assert list(job.to_pandas()["status"]) == ["done"] * 3 + ["cancelled"] * 3


def test_custom_ids_fit_the_providers_limits() -> None:
    key = "a" * 64  # a request key: 64 hex digits, as it is
    assert custom_id_for(key) == key
    for odd in ("x" * 65, "k:ü/1", ""):
        cid = custom_id_for(odd)
        assert CUSTOM_ID.fullmatch(cid) and cid == custom_id_for(odd)
    assert custom_id_for("x" * 65) != custom_id_for("x" * 66)


def test_one_batch_per_model_and_within_the_providers_limits(
    apis: tuple[LoopbackServer, BatchAPIs],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    srv, emu = apis
    monkeypatch.setattr(OpenAIBatch, "max_requests", 3)  # 50,000 for OpenAI
    rows = [
        {"prompt": f"q{i}", "params": {"model": "gpt-4.1-mini"}}
        if i % 3 == 0
        else f"q{i}"
        for i in range(8)
    ]
    job = nbstream.batch(
        [r if isinstance(r, dict) else {"prompt": r} for r in rows],
        client=client_for(srv),
        engine="openai-batch",
        poll_interval=0.02,
        store=tmp_path / "split.sqlite",
    ).wait(timeout=60)
    assert job.counts["done"] == 8
    models = [{r["body"]["model"] for r in b.requests} for b in emu.batches.values()]
    sizes = sorted(len(b.requests) for b in emu.batches.values())
    assert all(len(m) == 1 for m in models)  # one model a batch
    assert sizes == [2, 3, 3] and emu.submissions == 3  # 3 + 2 of one, 3 of the other
    assert len(meta(tmp_path / "split.sqlite", "engine.openai-batch")["batches"]) == 3


@pytest.mark.parametrize("api", [OpenAIBatch(), AnthropicBatch()])
def test_a_batch_file_line_holds_any_prompt(api: Any) -> None:
    """A line of the batch file is one JSON object with the request exactly, whatever
    the prompt holds: non-ASCII, a lone surrogate (as its escape), a newline."""
    prompt = "caf\u00e9 \U0001f600 half \ud83d pair\nnext line"
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    raw = api.entry("k1", body)
    assert b"\n" not in raw  # one line each
    obj = json.loads(raw)
    sent = obj["body"] if "body" in obj else obj["params"]
    assert obj["custom_id"] == "k1" and sent == body
