"""``nbstream.batch`` against a real loopback server that injects faults and counts
what it receives: everything finishes, limits hold, failures are recorded once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import nbstream
from nbstream import APIStatusError, Client, ConfigurationError
from nbstream.middleware import Middleware, Outgoing
from tests.batchkit import (
    KEY,
    ScriptedModel,
    answer,
    by_index,
    max_in_window,
    max_sum_in_window,
)
from tests.loopback import LoopbackServer


@pytest.fixture
def srv() -> Iterator[LoopbackServer]:
    with LoopbackServer(keep_alive=True) as s:
        yield s


class Sent(Middleware):
    """Notes when each request (each attempt) is sent, on the client's side."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def before_request(self, request: Outgoing) -> None:
        self.times.append(time.monotonic())


def client_for(srv: LoopbackServer, **kw: Any) -> Client:
    kw.setdefault("retry_delay", 0.01)
    return Client(base_url=srv.base_url, api_key=KEY, model="m", **kw)


def prompts(n: int) -> list[str]:
    return [f"q{i}" for i in range(n)]


def test_a_thousand_requests_with_faults_all_finish_within_the_rate_limit(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    # one fault script per residue: 429s with and without retry-after, 5xx, a
    # connection dropped mid-reply, a reply cut short, slow replies
    script: dict[int, list[str | None]] = {
        1: ["429-ms"],
        2: ["429-bare"],
        3: ["500", "503"],
        4: ["drop"],
        5: ["cut"],
        6: ["slow"],
        7: ["529"],
    }
    model = ScriptedModel(by_index(script, 40))
    srv.serve(model)
    rpm = 18_000  # 300 a second
    n = 1_000
    sent = Sent()
    t0 = time.monotonic()
    job = nbstream.batch(
        prompts(n),
        client=client_for(srv, middleware=[sent]),
        concurrency=32,
        rpm=rpm,
        store=tmp_path / "run.sqlite",
    )
    job.wait(timeout=60)
    took = time.monotonic() - t0
    assert job.counts == {
        "done": n,
        "failed": 0,
        "cancelled": 0,
        "running": 0,
        "pending": 0,
        "total": n,
    }
    df = job.to_pandas()
    assert list(df["text"]) == [answer(p) for p in prompts(n)]
    assert set(df["status"]) == {"done"}
    # each fault cost exactly the attempts it should have
    expected = {1: 2, 2: 2, 3: 3, 4: 2, 5: 2, 7: 2}
    assert list(df["attempts"]) == [expected.get(i % 40, 1) for i in range(n)]
    # every prompt got exactly one whole reply: nothing finished was asked again
    assert set(model.completed.values()) == {1} and len(model.completed) == n
    # the server never saw more than rpm/60 requests in any second (retries count;
    # the 2 % headroom absorbs the jitter between the client and the server)
    times = model.times()
    assert max_in_window(times, 1.0) <= rpm / 60
    # no burst at the start: the first 32 (the concurrency) arrive over ~0.1 s, not
    # at once (jitter may squeeze that a little)
    assert times[31] - times[0] >= 0.5 * 31 * 60 / rpm
    # the client sent them evenly, ~3.4 ms apart: at most rate * T + 2 in any window
    # (in 0.1 s, 3 more: a busy loop may send a few that were due together)
    rate = 0.98 * rpm / 60
    assert len(sent.times) == len(times)
    assert max_in_window(sent.times, 1.0) <= rate + 2
    assert max_in_window(sent.times, 0.1) <= rate * 0.1 + 2 + 3
    print(
        f"\n{len(times)} attempts in {took:.1f} s; most in 1 s:"
        f" {max_in_window(times, 1.0)}, sent in 0.1 s: {max_in_window(sent.times, 0.1)}"
    )


def test_tokens_per_minute_are_never_exceeded(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    model = ScriptedModel()
    srv.serve(model)
    tpm = 180_000  # 3,000 tokens a second; a request reserves ~40, uses ~36
    job = nbstream.batch(
        [f"question number {i} " * 3 for i in range(200)],
        client=client_for(srv),
        concurrency=16,
        tpm=tpm,
        store=tmp_path / "tpm.sqlite",
        max_tokens=20,
    )
    job.wait(timeout=30)
    assert job.counts["done"] == 200
    with model.lock:
        points = [(a.at, float(a.tokens)) for a in model.log]
    assert max_sum_in_window(points, 1.0) <= tpm / 60
    # and the budget was used, not wasted: at least half of it on average
    span = max(p[0] for p in points) - min(p[0] for p in points)
    assert sum(p[1] for p in points) / max(span, 1e-9) > tpm / 60 / 2


def _gap_after(model: ScriptedModel, fault_at: float) -> float:
    """Seconds from ``fault_at`` to the next request that was sent after the client
    could have read the answer (requests already on their way are not counted)."""
    later = [t for t in model.times() if t > fault_at + 0.05]
    return min(later) - fault_at if later else float("inf")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"retry-after": "1"}, id="429-retry-after"),
        pytest.param(
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"},
            id="openai-remaining-0",
        ),
        pytest.param(
            {"anthropic-ratelimit-requests-remaining": "0"}, id="anthropic-remaining-0"
        ),
    ],
)
def test_what_the_server_says_pauses_every_start(
    srv: LoopbackServer, tmp_path: Path, headers: dict[str, str]
) -> None:
    def extra(prompt: str, n: int) -> dict[str, str]:
        if prompt != "q3" or n != 1:
            return {}
        h = dict(headers)
        if "anthropic-ratelimit-requests-remaining" in h:  # an RFC 3339 reset time
            reset = time.gmtime(time.time() + 1.5)
            h["anthropic-ratelimit-requests-reset"] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", reset
            )
        return h

    status_429 = "retry-after" in headers
    model = ScriptedModel(
        by_index({3: ["429-bare"]}, 1000) if status_429 else None, headers=extra
    )
    srv.serve(model)
    job = nbstream.batch(
        prompts(12), client=client_for(srv), concurrency=1, store=tmp_path / "s.sqlite"
    )
    job.wait(timeout=30)
    assert job.counts["done"] == 12
    with model.lock:
        q3 = next(a.at for a in model.log if a.prompt == "q3")
    # (second-resolution RFC 3339: at least ~0.5 s of the 1.5 s are left)
    assert _gap_after(model, q3) >= (0.45 if "anthropic" in str(headers) else 0.95)


def test_permanent_failures_are_recorded_once_and_the_batch_goes_on(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    model = ScriptedModel(by_index({3: ["400"], 7: ["404"], 9: ["401"]}, 1000))
    srv.serve(model)
    store = tmp_path / "perm.sqlite"
    job = nbstream.batch(prompts(40), client=client_for(srv), store=store).wait()
    c = job.counts
    assert (c["done"], c["failed"]) == (37, 3)
    sent = model.prompts_sent()
    assert sent["q3"] == sent["q7"] == sent["q9"] == 1
    df = job.to_pandas().set_index("prompt")
    assert df.loc["q3", "status"] == "failed"
    assert "HTTP 400" in df.loc["q3", "error"]
    assert "model" in df.loc["q7", "error"]  # the provider's own message is kept
    assert KEY not in " ".join(df["error"].dropna())
    # a rerun sends the 401 again (a key problem, not the request's), not the 400/404
    again = nbstream.batch(prompts(40), client=client_for(srv), store=store).wait()
    assert model.prompts_sent()["q9"] == 2
    assert model.prompts_sent()["q3"] == model.prompts_sent()["q7"] == 1
    assert again.counts["done"] == 38


def test_on_error_stop_stops_at_the_first_failure_and_raises_it(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    model = ScriptedModel(by_index({5: ["400"]}, 1000))
    srv.serve(model)
    job = nbstream.batch(
        prompts(30),
        client=client_for(srv),
        concurrency=1,
        on_error="stop",
        store=tmp_path / "stop.sqlite",
    )
    with pytest.raises(APIStatusError) as info:
        job.wait(timeout=30)
    assert info.value.status_code == 400
    assert job.status == "stopped"
    assert (job.counts["done"], job.counts["failed"], job.counts["pending"]) == (
        5,
        1,
        24,
    )
    assert sum(model.prompts_sent().values()) == 6


def test_a_store_of_another_batch_is_refused_with_what_differs(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    model = ScriptedModel()
    srv.serve(model)
    store = tmp_path / "defs.sqlite"
    nbstream.batch(
        prompts(10), client=client_for(srv), store=store, temperature=0
    ).wait()
    assert sum(model.prompts_sent().values()) == 10
    with pytest.raises(ConfigurationError) as info:
        nbstream.batch(prompts(10), client=client_for(srv), store=store, temperature=1)
    msg = str(info.value)
    assert "params {'temperature': 0} there, {'temperature': 1} here" in msg
    assert "10 of the rows ask something else" in msg and "resume=True" in msg
    # resume=True: the five requests that match are answered from the store
    changed = prompts(5) + [f"new{i}" for i in range(5)]
    with pytest.raises(ConfigurationError, match="5 of the rows"):
        nbstream.batch(changed, client=client_for(srv), store=store, temperature=0)
    job = nbstream.batch(
        changed, client=client_for(srv), store=store, temperature=0, resume=True
    ).wait()
    assert job.counts["done"] == 10 and job.reused == 5
    sent = model.prompts_sent()
    assert sum(sent.values()) == 15 and all(sent[f"new{i}"] == 1 for i in range(5))
    assert list(job.to_pandas()["text"]) == [answer(p) for p in changed]


def test_a_template_naming_a_missing_column_fails_before_anything_is_sent(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"review": ["good", "bad"], "stars": [5, 1]})
    store = tmp_path / "never.sqlite"
    with pytest.raises(ConfigurationError) as info:
        nbstream.batch(
            df, client=client_for(srv), template="Rate {reviw}: {stars}", store=store
        )
    assert "'reviw'" in str(info.value) and "'review'" in str(info.value)
    assert srv.requests == [] and not store.exists()


def test_rows_that_fail_validation_are_recorded_and_the_others_sent(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    model = ScriptedModel()
    srv.serve(model)
    df = pd.DataFrame(
        {
            "review": ["good", None, "bad", "ok"],
            "system": ["Be terse.", None, None, None],
            "params": [{"temperature": 0}, None, "hot", {"max_tokens": 1}],
        },
        index=["a", "b", "c", "d"],
    )
    job = nbstream.batch(
        df, client=client_for(srv), template="{review}", store=tmp_path / "v.sqlite"
    ).wait()
    out = job.to_pandas()
    assert list(out.index) == ["a", "b", "c", "d"]  # the input's index and columns
    assert list(out.columns[:3]) == ["review", "system", "params"]
    assert list(out["status"]) == ["done", "invalid", "invalid", "done"]
    assert "'review' is empty" in out.loc["b", "error"]
    assert "'params' is a str, not a dict" in out.loc["c", "error"]
    assert out.loc["d", "text"] == "echo: "  # max_tokens=1 reached the server
    assert job.counts["failed"] == 2
    sent = {r.json["messages"][-1]["content"]: r.json for r in srv.requests}
    assert sorted(sent) == ["good", "ok"]
    assert sent["good"]["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["good"]["temperature"] == 0 and sent["ok"]["max_tokens"] == 1


def test_the_api_key_never_reaches_the_store(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    """The server echoes the key (reply text, error body, request id); the store file
    (and its WAL) holds no 8-character slice of it."""
    model = ScriptedModel(by_index({2: ["401"], 3: ["429-ms"]}, 5), echo_key=True)
    srv.serve(model)
    store = tmp_path / "keys.sqlite"
    job = nbstream.batch(prompts(20), client=client_for(srv), store=store).wait()
    assert job.counts["done"] == 16 and job.counts["failed"] == 4
    assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert any("***" in t for t in job.to_pandas()["text"].dropna())
    from tests.batchkit import any_slice_of

    for f in tmp_path.iterdir():
        found = any_slice_of(KEY, f.read_bytes())
        assert found is None, f"{found!r} in {f.name}"
    assert KEY not in repr(job) and KEY not in job.transcript.to_json()


def test_a_bug_in_the_engine_fails_the_job_and_says_so(
    srv: LoopbackServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbstream._batch import local

    srv.serve(ScriptedModel())

    def broken(turn: object) -> None:
        raise RuntimeError("a bug in the policy")

    monkeypatch.setattr(local, "decide", broken)
    job = nbstream.batch(
        prompts(5), client=client_for(srv), store=tmp_path / "b.sqlite"
    )
    with pytest.raises(RuntimeError, match="a bug in the policy"):
        job.wait(timeout=10)
    assert job.status == "failed" and job.counts["running"] == 0
    assert "batch failed" in repr(job)


def test_any_text_a_server_sends_is_stored_and_read_back_as_it_came(
    srv: LoopbackServer, tmp_path: Path
) -> None:
    """A lone surrogate (half an emoji's escape pair, as some servers split it), in a
    reply and in a prompt, and non-ASCII text: the batch stores them (SQLite takes only
    UTF-8) and the turns come back from the file exactly; the DataFrame's text column
    shows the half pair as U+FFFD."""
    from tests.loopback import Reply, openai_chunks

    texts = ["caf\u00e9 \U0001f600 ", "half \ud83d here", "plain"]
    for words in texts:
        body = "".join(f"data: {d}\n\n" for d in openai_chunks([words])).encode()
        srv.enqueue(Reply.sse(body))
    store = tmp_path / "texts.sqlite"
    asked = ["q0", "q1 \udc00 half", "q2 \u00e9"]
    job = nbstream.batch(asked, client=client_for(srv), store=store, concurrency=1)
    assert job.wait().counts["done"] == 3
    again = nbstream.batch(asked, client=client_for(srv), store=store).wait()
    assert again.counts["done"] == 3 and len(srv.requests) == 3  # read from the file
    assert sorted(t.text for t in again.transcript) == sorted(texts)
    shown = [t.replace("\ud83d", "\ufffd") for t in texts]
    assert sorted(again.to_pandas()["text"]) == sorted(shown)
    assert list(again.to_pandas()["prompt"]) == asked  # the inputs, exactly
