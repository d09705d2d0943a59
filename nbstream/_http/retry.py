"""When to ask again, and how long to wait first. Pure functions: no I/O, no clock but
the one passed in.

>>> should_retry(529, None), should_retry(400, None), should_retry(400, "true")
(True, False, True)
>>> retry_after({"retry-after-ms": "1500"}, now=0.0)
1.5
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping

from .._core.ratelimit import parse_retry_after
from .request import RETRY_STATUSES

__all__ = ["retry_after", "retry_delay", "should_retry", "times"]


def should_retry(status: int, x_should_retry: str | None) -> bool:
    """A status worth asking again for; the server's ``x-should-retry`` decides first."""
    should = (x_should_retry or "").strip().lower()
    if should == "true":
        return True
    if should == "false":
        return False
    return status in RETRY_STATUSES or status >= 500


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms``, then ``retry-after`` (seconds
    or an HTTP date, against ``now`` in Unix seconds). The rate limiter reads it too."""
    return parse_retry_after(headers, now)


def retry_delay(
    attempt: int,
    after: float | None,
    base: float,
    jitter: Callable[[], float] = random.random,
) -> float:
    """The wait before attempt ``attempt + 1``: what the server asked for, else
    exponential backoff from ``base`` (capped at 8 s) with up to 25 % jitter."""
    if after is not None:
        return after
    delay: float = min(8.0, base * 2.0 ** (attempt - 1))
    return delay * (1 - 0.25 * jitter())


def times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"
