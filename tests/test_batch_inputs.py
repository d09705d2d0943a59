"""The pure parts of a batch: inputs to rows, request keys, what to do with an
attempt, the progress text; and the terminal progress bar of a real run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import nbstream
from nbstream import Client, ConfigurationError
from nbstream._batch.inputs import build_rows
from nbstream._batch.policy import decide
from nbstream._batch.progress import Snapshot, bar, line, summary
from nbstream._core.pricing import format_usd
from nbstream._core.transcript import ErrorInfo, Request, Turn
from nbstream._store.keys import request_key
from tests.batchkit import KEY, ScriptedModel
from tests.loopback import LoopbackServer

USER = [{"role": "user", "content": "Hi"}]


def test_each_kind_of_input_becomes_rows() -> None:
    rows = build_rows(
        [
            "plain",
            [{"role": "system", "content": "S"}, {"role": "user", "content": "m"}],
            {
                "prompt": "p",
                "system": "sys",
                "params": {"temperature": 0, "model": "x"},
            },
            {"messages": USER, "id": 7},
        ],
        template=None,
        system="default system",
    )
    assert [r.messages[-1]["content"] for r in rows] == ["plain", "m", "p", "Hi"]
    assert [r.system for r in rows] == [
        "default system",
        "default system",
        "sys",
        "default system",
    ]
    assert rows[2].params == {"temperature": 0} and rows[2].model == "x"
    assert rows[3].columns == {"messages": USER, "id": 7}
    assert all(r.error is None for r in rows)


def test_a_dataframe_with_a_template() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {"review": ["good {braces} stay", "bad"], "n": [1, 2]}, index=["x", "y"]
    )
    rows = build_rows(df, template="#{n}: {review}")
    assert [r.messages for r in rows] == [
        [{"role": "user", "content": "#1: good {braces} stay"}],
        [{"role": "user", "content": "#2: bad"}],
    ]
    assert [r.label for r in rows] == ["x", "y"]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("Rate {reviw}", "do not have: 'reviw'. Columns available: 'n', 'review'"),
        ("Rate {}", "positional field {}"),
        ("Rate {review", "not a valid format string"),
    ],
)
def test_a_bad_template_is_refused_before_anything_else(
    template: str, message: str
) -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"review": ["good"], "n": [1]})
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        build_rows(df, template=template)


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (3, "row 0 is an int"),
        ({"prompt": ""}, "'prompt' is empty"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
        ({"messages": [{"role": "user"}]}, "no 'content'"),
        ({"prompt": "x", "system": 5}, "'system' is an int"),
        ({"prompt": "x", "params": {"model": 3}}, "not a model name"),
        ({"other": "x"}, "nothing to send"),
    ],
)
def test_rows_that_cannot_be_sent_say_why(item: object, error: str) -> None:
    (row,) = build_rows([item], template=None)
    assert row.error is not None and error in row.error


def test_inputs_that_are_not_a_collection_are_refused() -> None:
    for bad in ("one prompt", {"prompt": "x"}, 42):
        with pytest.raises(ConfigurationError, match="batch"):
            build_rows(bad, template=None)


def test_the_request_key_is_what_is_asked_and_never_the_api_key() -> None:
    k = request_key("openai", "http://h/v1", "m", USER, None, {"temperature": 0})
    assert k == request_key(
        "openai", "http://h/v1/", "m", USER, None, {"temperature": 0}
    )
    others = [
        request_key("anthropic", "http://h/v1", "m", USER, None, {"temperature": 0}),
        request_key("openai", "http://g/v1", "m", USER, None, {"temperature": 0}),
        request_key("openai", "http://h/v1", "n", USER, None, {"temperature": 0}),
        request_key("openai", "http://h/v1", "m", USER, "S", {"temperature": 0}),
        request_key("openai", "http://h/v1", "m", USER, None, {"temperature": 1}),
        request_key("openai", "http://h/v1", "m", USER, None, {}),
    ]
    assert len({k, *others}) == 7
    # two clients with different keys ask the same request
    a = Client(base_url="http://h/v1", model="m", api_key="test-key-one-not-real")
    b = Client(base_url="http://h/v1", model="m", api_key="test-key-two-not-real")
    ka, kb = (request_key(c.api, c.base_url, c.model, USER, None, {}) for c in (a, b))
    assert ka == kb


def _turn(status: str, code: int | None = None, kind: str = "APIStatusError") -> Turn:
    t = Turn(Request(USER, "m", "openai", "u"))
    t.status = status  # type: ignore[assignment]
    if status == "error":
        t.error = ErrorInfo(kind, "x", status_code=code, retry_after=1.5)
    return t


@pytest.mark.parametrize(
    ("turn", "verdict", "final", "limited"),
    [
        (_turn("complete"), "done", False, False),
        (_turn("incomplete"), "retry", False, False),
        (_turn("error", 429), "retry", False, True),
        (_turn("error", 529), "retry", False, True),
        (_turn("error", 500), "retry", False, False),
        (_turn("error", 408), "retry", False, False),
        (_turn("error", 400), "failed", True, False),
        (_turn("error", 404), "failed", True, False),
        (_turn("error", 422), "failed", True, False),
        (_turn("error", 401), "failed", False, False),
        (_turn("error", None, "APIConnectionError"), "retry", False, False),
        (_turn("error", None, "APITimeoutError"), "retry", False, False),
        (_turn("error", None, "ProviderStreamError"), "retry", False, False),
        (_turn("error", None, "NotAStreamError"), "failed", False, False),
        (_turn("error", None, "InternalError"), "failed", False, False),
    ],
)
def test_what_to_do_with_an_attempt(
    turn: Turn, verdict: str, final: bool, limited: bool
) -> None:
    d = decide(turn)
    assert (d.verdict, d.final, d.rate_limited) == (verdict, final, limited)


def _snap(**kw: object) -> Snapshot:
    base: dict[str, object] = dict(
        total=5000,
        done=1200,
        failed=3,
        cancelled=0,
        running=64,
        pending=3797,
        reused=0,
        retries=0,
        input_tokens=0,
        output_tokens=52_310,
        elapsed_s=3.0,
        rate=400.0,
        status="running",
        errors=(),
    )
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


def test_the_progress_text() -> None:
    s = _snap()
    assert line(s) == (
        "1,200/5,000 done · 3 failed · 64 running · 52,310 tokens out · 400.0/s · "
        "ETA 9 s"
    )
    assert (
        summary(s)
        == "batch running: 5,000 rows · 1,200 done · 3 failed · 3,797 pending"
    )
    assert bar(s, 10) == "[██░░░░░░░░]"
    done = _snap(done=4997, pending=0, running=0, status="finished", elapsed_s=125.0)
    assert line(done).endswith("finished in 2 min 5 s")
    assert summary(done) == "batch finished: 5,000 rows · 4,997 done · 3 failed"


def test_the_progress_text_has_the_cost_so_far() -> None:
    assert " · ~$0.0042 · " in line(_snap(cost_usd=0.0042, cost_estimated=True))
    assert " · $1.25 (3 unpriced) · " in line(_snap(cost_usd=1.25, cost_unknown=3))
    assert " · cost unknown · " in line(_snap(cost_unknown=1200))
    assert "$" not in line(_snap()) and "cost" not in line(_snap())


@pytest.mark.parametrize("model", ["gpt-4o-mini", "my-local-model"])
def test_the_progress_shows_what_the_rows_cost(
    server: LoopbackServer, tmp_path: Path, model: str
) -> None:
    """The cost so far is the sum of the finished rows' ``turn.cost`` (what
    ``to_pandas()`` shows per row); a model with no known price says so."""
    server.serve(ScriptedModel())
    client = Client(base_url=server.base_url, api_key=KEY, model=model)
    job = nbstream.batch(
        [f"question {i}" for i in range(12)],
        client=client,
        concurrency=4,
        store=tmp_path / "cost.sqlite",
    ).wait()
    s = job.snapshot()
    costs = list(job.to_pandas()["cost_usd"])
    if model == "gpt-4o-mini":
        assert all(c > 0 for c in costs)
        assert s.cost_usd == pytest.approx(sum(costs)) and s.cost_unknown == 0
        assert format_usd(s.cost_usd) in line(s)
    else:
        assert s.cost_usd is None and s.cost_unknown == 12
        assert "cost unknown" in line(s)


def test_in_a_terminal_a_progress_bar_goes_to_stderr(
    server: LoopbackServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.serve(ScriptedModel(delay=0.02))
    client = Client(base_url=server.base_url, api_key=KEY, model="m")
    job = nbstream.batch(
        [f"q{i}" for i in range(40)],
        client=client,
        concurrency=4,
        store=tmp_path / "bar.sqlite",
        progress=True,
    ).wait()
    err = capsys.readouterr().err
    frames = err.split("\r")[1:]
    assert frames[-1].startswith("[████████████████████████] 40/40 done")
    assert "finished in" in frames[-1] and frames[-1].endswith("\n")
    elapsed = job.snapshot().elapsed_s
    assert len(frames) <= 4 * elapsed + 2  # a few updates a second at most
    assert KEY not in err


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"ray_address": "auto"}, "batch(ray_address=...) is for engine='ray', not"),
        ({"engine": "local", "poll_interval": 5}, "is for engine='openai-batch' or"),
        ({"engine": "anthropic-batch"}, "this client speaks 'openai': use engine="),
        ({"engine": "openai-batch", "poll_interval": 0}, "poll_interval=0"),
        ({"engine": "spark"}, "engine='spark' is not an engine"),
        ({"on_error": "ignore"}, "use 'continue'"),
        ({"concurrency": 0}, "concurrency=0"),
        ({"rpm": -1}, "rpm=-1"),
        ({"max_retries": -1}, "max_retries=-1"),
        ({"temperature": object()}, "must be JSON values"),
    ],
)
def test_bad_options_are_refused_before_anything_is_sent(
    server: LoopbackServer, tmp_path: Path, kw: dict[str, object], message: str
) -> None:
    client = Client(base_url=server.base_url, api_key=KEY, model="m")
    store = tmp_path / "never.sqlite"
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        nbstream.batch(["x"], client=client, store=store, **kw)  # type: ignore[arg-type]
    assert server.requests == [] and not store.exists()


def test_an_empty_batch_finishes_at_once(server: LoopbackServer) -> None:
    client = Client(base_url=server.base_url, api_key=KEY, model="m")
    job = nbstream.batch([], client=client).wait()
    assert job.status == "finished" and job.counts["total"] == 0
    assert len(job.to_pandas()) == 0 and len(job.transcript) == 0
    assert repr(job).startswith("<Job batch finished: 0 rows · 0 done · 0 failed")
