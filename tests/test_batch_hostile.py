"""What a provider's batch API sends back, in any shape: the batch object a poll reads,
the lines of a results file, and the answer inside a succeeded line. Nothing raises
(a job would stop as if nbstream had a bug); each request gets a line; an answer of
any shape becomes a turn that reads, saves and reloads.
"""

from __future__ import annotations

import json
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from nbstream._batch import anthropic_batch, openai_batch
from nbstream._batch.batchapi import Line, Poll
from nbstream._core.pipeline import Pipeline
from nbstream._core.providers import provider_for
from nbstream._core.transcript import Api, Request, Turn
from tests.test_hostile_shapes import assert_usable

KEYS = [
    "status",
    "processing_status",
    "request_counts",
    "errors",
    "data",
    "line",
    "message",
    "code",
    "custom_id",
    "result",
    "type",
    "error",
    "response",
    "status_code",
    "body",
    "choices",
    "content",
    "usage",
]

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["succeeded", "errored", "failed", "completed", "ended", "r1"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=10,
)
IDS = ["r0", "r1", "r2"]


@settings(max_examples=300, deadline=None)
@given(raw=values)
def test_a_poll_reads_any_batch_object(raw: Any) -> None:
    for poll in (openai_batch._poll(raw), anthropic_batch._poll(raw)):
        assert isinstance(poll, Poll) and isinstance(poll.status, str)
        assert all(type(v) is int for v in poll.counts.values())


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        values.map(lambda v: json.dumps(v).encode())
        | st.builds(
            lambda cid, rest: json.dumps({"custom_id": cid, **rest}).encode(),
            st.sampled_from(IDS),
            st.dictionaries(st.sampled_from(KEYS), values, max_size=3),
        )
        | st.binary(max_size=20),
        max_size=6,
    ),
    raw=values,
)
def test_any_results_file_gives_each_request_a_line(
    lines: list[bytes], raw: Any
) -> None:
    openai_poll = openai_batch._poll(raw)
    got = [
        list(openai_batch._lines([iter(lines)], openai_poll, IDS)),
        list(anthropic_batch._lines(iter(lines), IDS)),
    ]
    for out in got:
        assert all(isinstance(line, Line) for line in out)
        assert {line.custom_id for line in out} >= set(IDS)


@settings(max_examples=300, deadline=None)
@given(api=st.sampled_from(["openai", "anthropic"]), body=values)
def test_an_answer_of_any_shape_is_a_usable_turn(api: str, body: Any) -> None:
    provider = provider_for(api)
    turn = Turn(Request([], "m", cast(Api, api), "http://127.0.0.1:9/v1"))
    pipe = Pipeline(provider, turn)
    pipe.apply(provider.completion(body), 0.0)
    pipe.close(0.0)
    assert turn.status != "streaming"
    assert_usable(turn)
