"""Rate limits as a policy: what to wait before the next request. Pure: no I/O, no
clock of its own. Every call takes ``now`` (monotonic seconds, e.g. ``loop.time()``);
header dates are read against ``wall`` (Unix seconds). Standard library only, so the
batch engine and an HTTP middleware can share it.

- ``parse_limits(headers, wall)`` → ``ServerLimits``: what a response says about the
  budget left: ``x-ratelimit-{remaining,reset}-{requests,tokens}`` (OpenAI and most
  compatible servers), ``anthropic-ratelimit-*-{remaining,reset}``, and
  ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date).
- ``Pacer``: a budget of ``limit`` per ``period``, spread evenly (no burst at the start).
- ``RateLimiter``: the request and token pacers, what servers say, pauses after a 429,
  and a concurrency that backs off on 429 and recovers with time.

An engine (or a middleware) drives it like this::

    limiter = RateLimiter(rpm=3000, tpm=1_000_000)
    wait = limiter.delay(now, cost)        # seconds until a request may start (0: now)
    limiter.start(now, cost)               # it started (cost: its reserved tokens)
    limiter.observe(now, status, headers, wall)   # every response, errors included
    limiter.rate_limited(now, retry_after, sent_at=...)   # it was answered 429
    limiter.settle(cost, used)             # its reply is over: the tokens it really used
    limiter.concurrency(now, 64)           # how many may be in flight now

What it guarantees (``tests/test_batch_ratelimit.py`` checks it on a fake clock):

- Requests: starts are at least ``period / (limit * (1 - headroom))`` apart, on a fixed
  schedule (a start that is late by less than one interval keeps its slot, a later one
  starts a new schedule: nothing is caught up). So any window of ``T`` seconds holds at
  most ``T * rate + 2`` starts: in one period, ``limit * (1 - headroom) + 2``, which is
  at most ``limit`` for ``limit >= 100`` with the default 2 % headroom. The headroom
  also absorbs network jitter between a request's start and the server counting it.
- Tokens: the tokens reserved (estimated input plus ``max_tokens``, or the average
  output so far) by the requests started in any window of ``T`` seconds are at most
  ``rate * T`` plus one request's reservation; the estimate is corrected with the real
  usage when each reply ends. A reservation is an upper bound only when ``max_tokens``
  is set.
- Servers: ``retry-after`` (on a non-2xx answer) and a remaining budget of 0 pause every
  start until the reset; a small remaining budget spaces the next starts evenly over
  the time to the reset. ``retry-after`` on a 2xx answer is ignored (Anthropic sends it
  on successful streams).
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "Budget",
    "Pacer",
    "RateLimiter",
    "ServerLimits",
    "parse_duration",
    "parse_limits",
    "parse_reset",
    "parse_retry_after",
]

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)")
_EPOCH = 1e9  # a bare number above this is a Unix time, not seconds to wait


def parse_duration(value: str) -> float | None:
    """OpenAI's reset format: ``"6m0s"``, ``"1s"``, ``"2ms"``, ``"1h2m3.5s"`` → seconds.

    >>> parse_duration("6m0s"), parse_duration("2ms"), parse_duration("soon")
    (360.0, 0.002, None)
    """
    text = value.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        n = float(m[1])
        total += {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[m[2]] * n
        pos = m.end()
    return total if pos == len(text) and pos else None


def parse_reset(value: str | None, wall: float) -> float | None:
    """Seconds until a budget resets, from any of the forms servers use: a duration
    (``"1m30s"``), seconds (``"20"``), a Unix time, an RFC 3339 timestamp
    (``"2025-11-15T00:56:36Z"``, Anthropic) or an HTTP date. Never negative."""
    if not value:
        return None
    text = value.strip()
    try:
        n = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(n):
            return None
        return max(0.0, n - wall if n > _EPOCH else n)
    d = parse_duration(text)
    if d is not None:
        return d
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is not None:
            return max(0.0, when.timestamp() - wall)
    except ValueError:
        pass
    return _http_date(text, wall)


def _http_date(text: str, wall: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    try:
        return max(0.0, when.timestamp() - wall)
    except (OverflowError, ValueError):
        return None


def parse_retry_after(headers: Mapping[str, str], wall: float) -> float | None:
    """``retry-after-ms``, then ``retry-after`` (seconds or an HTTP date), in seconds.
    ``headers`` has lower-case names."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            v = float(ms) / 1000
            if math.isfinite(v):
                return max(0.0, v)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        v = float(value)
        return max(0.0, v) if math.isfinite(v) else None
    except ValueError:
        return _http_date(value, wall)


@dataclass(frozen=True, slots=True)
class Budget:
    """What is left of one server budget, and in how many seconds it is full again."""

    remaining: float
    reset_s: float


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one response says. ``tokens`` may hold several budgets (Anthropic counts
    input, output and all tokens apart); the tightest one decides."""

    requests: Budget | None = None
    tokens: tuple[Budget, ...] = ()
    retry_after: float | None = None


def _int(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        n = float(value.strip())
    except ValueError:
        return None
    return n if math.isfinite(n) else None


def _budget(
    headers: Mapping[str, str], remaining: str, reset: str, wall: float
) -> Budget | None:
    left = _int(headers.get(remaining))
    when = parse_reset(headers.get(reset), wall)
    if left is None or when is None:
        return None
    return Budget(max(0.0, left), when)


def parse_limits(headers: Mapping[str, str], wall: float) -> ServerLimits:
    """Read the rate-limit headers of one response (lower-case names).

    >>> h = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}
    >>> parse_limits(h, 0.0).requests
    Budget(remaining=0.0, reset_s=1.5)
    """
    requests = _budget(
        headers, "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests", wall
    ) or _budget(
        headers,
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        wall,
    )
    tokens: list[Budget] = []
    pairs = [("x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")] + [
        (f"anthropic-ratelimit-{k}-remaining", f"anthropic-ratelimit-{k}-reset")
        for k in ("tokens", "input-tokens", "output-tokens")
    ]
    for rem, rst in pairs:
        b = _budget(headers, rem, rst, wall)
        if b is not None:
            tokens.append(b)
    return ServerLimits(requests, tuple(tokens), parse_retry_after(headers, wall))


@dataclass(slots=True)
class Pacer:
    """``limit`` units per ``period`` seconds, spread evenly: a start (of ``cost``
    units) is allowed at ``ready_at()``, and moves the next slot ``cost / rate`` on.

    >>> p = Pacer(60, period=60.0, headroom=0.0)  # one per second
    >>> p.take(0.0, 1.0); p.take(p.ready_at(), 1.0); p.ready_at()
    2.0
    """

    limit: float
    period: float = 60.0
    headroom: float = 0.02
    # Keep the schedule when a start is late by less than one step (requests: all the
    # same size). For tokens (sizes vary) a late start moves the schedule instead, so
    # a window never holds more than ``rate * T`` plus one request's tokens.
    catch_up: bool = True
    next_at: float = -math.inf
    rate: float = field(init=False)  # units per second

    def __post_init__(self) -> None:
        if not (self.limit > 0 and math.isfinite(self.limit)):
            raise ValueError(
                f"a rate limit must be a positive number, not {self.limit}"
            )
        self.rate = self.limit * (1.0 - self.headroom) / self.period

    def ready_at(self) -> float:
        return self.next_at

    def take(self, now: float, cost: float, scale: float = 1.0) -> None:
        step = cost / (self.rate * scale)
        # Late by less than one step: keep the schedule (a busy loop does not lose
        # slots); later than that: start a new schedule from now (no catching up).
        late = now - self.next_at
        base = self.next_at if late <= 0 or (self.catch_up and late < step) else now
        self.next_at = base + step

    def adjust(self, delta: float, scale: float = 1.0) -> None:
        """Move the schedule by ``delta`` units (a reservation that was too big or
        too small)."""
        self.next_at += delta / (self.rate * scale)


@dataclass(slots=True)
class RateLimiter:
    """The whole policy for one stream of requests (see the module docstring).

    ``rpm`` / ``tpm``: the caller's limits (``None``: none of its own; servers' headers
    and 429s still apply). ``backoff``: the first pause after a 429 without
    ``retry-after`` (doubling for each 429 in a row, up to ``max_pause``).
    """

    rpm: float | None = None
    tpm: float | None = None
    headroom: float = 0.02
    backoff: float = 0.5
    max_pause: float = 60.0
    cut: float = 0.75  # concurrency (and rate) factor after a 429 ...
    cut_every: float = 2.0  # ... at most once per this many seconds
    recover: float = 0.1  # the factor regained per second without a 429
    min_scale: float = 0.1
    expected_output: float = 256.0  # tokens, until replies say otherwise
    requests: Pacer | None = field(init=False, default=None)
    tokens: Pacer | None = field(init=False, default=None)
    pause_until: float = field(init=False, default=-math.inf)
    server_next: float = field(init=False, default=-math.inf)
    streak: int = field(init=False, default=0)  # 429s in a row
    _scale: float = field(init=False, default=1.0)
    _cut_at: float = field(init=False, default=-math.inf)
    _outputs: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.rpm is not None:
            self.requests = Pacer(self.rpm, 60.0, self.headroom)
        if self.tpm is not None:
            self.tokens = Pacer(self.tpm, 60.0, self.headroom, catch_up=False)

    # -- asking -----------------------------------------------------------------------
    def scale(self, now: float) -> float:
        """The share of the configured rate and concurrency in use now (1: all)."""
        if self._scale >= 1.0:
            return 1.0
        return min(1.0, self._scale + self.recover * max(0.0, now - self._cut_at))

    def concurrency(self, now: float, configured: int) -> int:
        return max(1, math.floor(configured * self.scale(now)))

    def reserve_for(self, input_tokens: float, max_tokens: float | None) -> float:
        """The tokens to reserve for a request: its input, plus ``max_tokens`` if set,
        else the average output so far."""
        out = max_tokens if max_tokens is not None else self.expected_output
        return max(1.0, input_tokens + out)

    def delay(self, now: float, cost: float = 1.0) -> float:
        """Seconds until a request reserving ``cost`` tokens may start (0: now)."""
        at = max(self.pause_until, self.server_next)
        if self.requests is not None:
            at = max(at, self.requests.ready_at())
        if self.tokens is not None:
            at = max(at, self.tokens.ready_at())
        return max(0.0, at - now)

    # -- telling ----------------------------------------------------------------------
    def start(self, now: float, cost: float = 1.0) -> None:
        s = self.scale(now)
        if self.requests is not None:
            self.requests.take(now, 1.0, s)
        if self.tokens is not None:
            self.tokens.take(now, cost, s)

    def settle(self, reserved: float, used: float | None, output: float | None) -> None:
        """A reply ended: ``used`` tokens (input + output) instead of ``reserved``."""
        if output is not None and output >= 0:
            self._outputs += 1
            n = min(self._outputs, 50)  # a running mean over the last ~50 replies
            self.expected_output += (output - self.expected_output) / n
        if self.tokens is not None and used is not None:
            self.tokens.adjust(used - reserved)

    def succeeded(self) -> None:
        self.streak = 0

    def observe(
        self, now: float, status: int, headers: Mapping[str, str], wall: float
    ) -> None:
        """Any response: honour what it says about the budgets left."""
        info = parse_limits(headers, wall)
        req = info.requests
        if req is not None:
            if req.remaining < 1:
                self.pause_until = max(self.pause_until, now + req.reset_s)
            else:
                self.server_next = max(
                    self.server_next, now + req.reset_s / req.remaining
                )
        need = self.expected_output + 1.0
        for tok in info.tokens:
            if tok.remaining < need:
                self.pause_until = max(self.pause_until, now + tok.reset_s)
            else:
                self.server_next = max(
                    self.server_next, now + tok.reset_s * need / tok.remaining
                )
        if not 200 <= status < 300 and info.retry_after is not None:
            self.pause_until = max(
                self.pause_until, now + min(info.retry_after, self.max_pause)
            )

    def rate_limited(
        self, now: float, retry_after: float | None, sent_at: float | None = None
    ) -> float:
        """A 429 (or 529): pause every start, and back off. Returns the pause.

        ``sent_at``: when that request started; a 429 for a request sent before the
        last back-off does not cut again (a whole window of them arrives together)."""
        self.streak += 1
        if retry_after is not None:
            pause = min(retry_after, self.max_pause)
        else:
            pause = min(self.backoff * 2.0 ** (self.streak - 1), self.max_pause)
        self.pause_until = max(self.pause_until, now + pause)
        fresh = sent_at is None or sent_at >= self._cut_at
        if fresh and now - self._cut_at >= self.cut_every:
            self._scale = max(self.min_scale, self.scale(now) * self.cut)
            self._cut_at = now
        return pause
