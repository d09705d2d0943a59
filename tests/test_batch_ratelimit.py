"""The rate-limit policy (``nbstream._core.ratelimit``) on a fake clock: even pacing,
never above the limit in any window, what servers' headers say, 429 back-off."""

from __future__ import annotations

import json
import random
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbstream._core.ratelimit import (
    Budget,
    Pacer,
    RateLimiter,
    parse_limits,
    parse_reset,
    parse_retry_after,
)
from tests.batchkit import max_in_window, max_sum_in_window
from tests.conftest import FIXTURES


def run(
    limiter: RateLimiter,
    n: int,
    *,
    late: float,
    cost: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Start ``n`` requests as a dispatcher would: each as soon as allowed, plus a
    random lateness of up to ``late`` seconds (a busy event loop)."""
    rng = random.Random(seed)
    t, starts = 0.0, []
    for _ in range(n):
        t += limiter.delay(t, cost)
        t += rng.random() * late
        assert limiter.delay(t, cost) == 0
        limiter.start(t, cost)
        starts.append(t)
    return starts


@settings(max_examples=30, deadline=None)
@given(
    rpm=st.integers(min_value=100, max_value=6_000),  # (the same at any scale)
    late_share=st.floats(min_value=0.0, max_value=3.0),
    seed=st.integers(0, 1000),
)
def test_requests_never_exceed_rpm_in_any_window_and_are_spread_evenly(
    rpm: int, late_share: float, seed: int
) -> None:
    interval = 60 / rpm
    starts = run(RateLimiter(rpm=rpm), 3 * rpm, late=late_share * interval, seed=seed)
    assert max_in_window(starts, 60.0) <= rpm  # the limit, in any minute
    rate = rpm * 0.98 / 60
    for w in (1.0, 5.0):  # evenly: no burst, not even at the start
        assert max_in_window(starts, w) <= rate * w + 2
    assert sum(t < 1.0 for t in starts) <= rate + 2
    if late_share < 0.5:  # a loop that is late by less than a slot loses nothing
        span = starts[-1] - starts[0]
        assert (len(starts) - 1) / span == pytest.approx(rate, rel=0.01)


def test_tokens_reserved_never_exceed_tpm_plus_one_request() -> None:
    tpm = 120_000  # 2,000 a second
    lim = RateLimiter(tpm=tpm)
    rng = random.Random(1)
    t, points = 0.0, []
    for _ in range(3000):
        cost = rng.randint(10, 400)
        t += lim.delay(t, cost) + rng.random() * 0.01
        lim.start(t, cost)
        points.append((t, float(cost)))
    assert max_sum_in_window(points, 60.0) <= tpm + 400
    assert max_sum_in_window(points, 1.0) <= tpm * 0.98 / 60 + 400
    assert sum(c for t, c in points if t < 1.0) <= tpm * 0.98 / 60 + 400


def test_a_reply_that_used_more_tokens_than_reserved_delays_the_next_start() -> None:
    lim = RateLimiter(tpm=6000, headroom=0.0)  # 100 tokens a second
    lim.start(0.0, 100)
    assert lim.delay(0.0, 100) == pytest.approx(1.0)
    lim.settle(reserved=100, used=300, output=250)
    assert lim.delay(0.0, 100) == pytest.approx(3.0)
    assert lim.expected_output == 250  # the next reservation uses what replies use
    assert lim.reserve_for(20, None) == 270 and lim.reserve_for(20, 50) == 70


def _fixture_headers(name: str) -> tuple[dict[str, str], float]:
    fx = json.loads((FIXTURES / "headers" / name).read_text())
    headers = {k.lower(): v[0] for k, v in fx["headers"].items()}
    return headers, parsedate_to_datetime(headers["date"]).timestamp()


def test_real_openai_headers() -> None:
    h, wall = _fixture_headers("openai_stream_200_headers.json")
    info = parse_limits(h, wall)
    assert info.requests == Budget(29999, 0.002)
    assert info.tokens == (Budget(149999993, 0.0),)
    lim = RateLimiter()
    lim.observe(0.0, 200, h, wall)
    assert lim.delay(0.0) < 1e-6  # plenty left: no wait


def test_real_anthropic_headers_and_retry_after_on_a_200_is_ignored() -> None:
    h, wall = _fixture_headers("anthropic_stream_200_headers.json")
    info = parse_limits(h, wall)
    # input, output and all tokens; the reset time had passed when the answer came
    assert info.tokens == (
        Budget(2399000, 0.0),
        Budget(1999000, 0.0),
        Budget(400000, 0.0),
    )
    assert info.retry_after == 24.0  # Anthropic sends it on a 200 ...
    lim = RateLimiter()
    lim.observe(0.0, 200, h, wall)
    assert lim.delay(0.0) == 0.0  # ... where it means nothing
    lim.observe(0.0, 429, h, wall)
    assert lim.delay(0.0) == 24.0  # on a 429 it is honoured


def test_a_budget_used_up_pauses_until_its_reset_and_a_small_one_spaces_starts() -> (
    None
):
    lim = RateLimiter()
    lim.observe(
        10.0,
        200,
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"},
        0.0,
    )
    assert lim.delay(10.0) == pytest.approx(1.5)
    lim = RateLimiter()
    lim.observe(
        10.0,
        200,
        {"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "5s"},
        0.0,
    )
    assert lim.delay(10.0) == pytest.approx(0.5)  # 10 left in 5 s: one every 0.5 s
    lim = RateLimiter(expected_output=100)
    lim.observe(
        0.0,
        200,
        {"x-ratelimit-remaining-tokens": "50", "x-ratelimit-reset-tokens": "2s"},
        0.0,
    )
    assert lim.delay(0.0) == pytest.approx(2.0)  # not enough for one more reply


def test_429s_pause_every_start_back_off_and_cut_concurrency_once_per_window() -> None:
    lim = RateLimiter(backoff=0.5)
    assert lim.rate_limited(0.0, 2.0, sent_at=-0.1) == 2.0  # retry-after, as asked
    assert lim.delay(0.0) == 2.0
    assert lim.concurrency(0.0, 40) == 30  # cut to 75 %
    # a whole window of 429s for requests sent before the cut: no further cut
    for _ in range(20):
        lim.rate_limited(0.5, None, sent_at=-0.05)
    assert lim.concurrency(0.5, 40) == 32  # (and recovering: +10 % a second)
    # without retry-after: doubling pauses while 429s keep coming
    lim = RateLimiter(backoff=0.5)
    assert [lim.rate_limited(0.0, None) for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    lim.succeeded()
    assert lim.rate_limited(10.0, None) == 0.5
    # recovers fully with time
    assert lim.concurrency(10.0, 40) == 30 and lim.concurrency(13.0, 40) == 40


def test_a_cut_slows_the_rate_too() -> None:
    lim = RateLimiter(rpm=600, headroom=0.0)  # one every 0.1 s
    lim.rate_limited(0.0, 0.0)
    lim.start(0.0)
    assert lim.delay(0.0) == pytest.approx(0.1 / 0.75)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1m30s", 90.0),
        ("6m0s", 360.0),
        ("2ms", 0.002),
        ("1h2m3.5s", 3723.5),
        ("20", 20.0),
        ("0.5", 0.5),
        ("1700000030", 30.0),  # a Unix time
        ("2023-11-14T22:13:50Z", 30.0),  # RFC 3339 (Anthropic)
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),  # an HTTP date
        ("2023-11-14T22:12:00Z", 0.0),  # already past
        ("soon", None),
        ("", None),
        ("nan", None),
        ("1x", None),
    ],
)
def test_reset_values_in_every_form_servers_use(
    value: str, seconds: float | None
) -> None:
    got = parse_reset(value, wall=1_700_000_000.0)
    assert got == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_headers() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}, 0) == 0.25
    assert parse_retry_after({"retry-after": "3"}, 0) == 3.0
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, 4) == 6
    assert parse_retry_after({"retry-after": "later"}, 0) is None
    assert parse_retry_after({}, 0) is None


def test_a_pacer_refuses_a_limit_that_is_not_a_positive_number() -> None:
    for bad in (0, -5, float("inf"), float("nan")):
        with pytest.raises(ValueError):
            Pacer(bad)
