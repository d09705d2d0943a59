"""What the progress views show: a ``Snapshot`` of a job, and its text. Pure: no I/O.

>>> s = Snapshot(total=10, done=4, failed=1, cancelled=0, running=2, pending=5,
...              reused=0, retries=3, input_tokens=40, output_tokens=120,
...              elapsed_s=2.0, rate=2.5, status="running", errors=())
>>> line(s)
'4/10 done · 1 failed · 2 running · 3 retries · 120 tokens out · 2.5/s · ETA 2 s'
>>> from dataclasses import replace
>>> line(replace(s, cost_usd=0.0042, cost_estimated=True))
'4/10 done · 1 failed · 2 running · 3 retries · 120 tokens out · ~$0.0042 · 2.5/s · ETA 2 s'
>>> summary(s)
'batch running: 10 rows · 4 done · 1 failed · 5 pending'
"""

from __future__ import annotations

from dataclasses import dataclass

from .._core.pricing import format_usd

__all__ = ["Snapshot", "bar", "line", "summary"]


@dataclass(frozen=True, slots=True)
class Snapshot:
    total: int
    done: int
    failed: int
    cancelled: int
    running: int
    pending: int  # not finished yet, running ones included
    reused: int  # finished before this run (found in the store)
    retries: int
    input_tokens: int
    output_tokens: int
    elapsed_s: float
    rate: float | None  # rows finished per second, lately
    status: str  # running | finished | cancelled | stopped | failed
    errors: tuple[str, ...]  # the last few, newest last
    note: str | None = None  # the engine's own words (e.g. a provider batch's counts)
    cost_usd: float | None = None  # of this run's priced rows; None: none priced
    cost_estimated: bool = False  # some of it rests on estimated token counts
    cost_unknown: int = 0  # rows with usage whose model has no known price

    @property
    def eta_s(self) -> float | None:
        if self.status != "running" or not self.rate or self.pending == 0:
            return None
        return self.pending / self.rate


def _n(x: int) -> str:
    return f"{x:,}"


def _s(x: float) -> str:
    if x < 60:
        return f"{x:.0f} s"
    if x < 3600:
        return f"{x // 60:.0f} min {x % 60:.0f} s"
    return f"{x // 3600:.0f} h {x % 3600 // 60:.0f} min"


def line(s: Snapshot) -> str:
    """One line with the live numbers (timings included)."""
    parts = [f"{_n(s.done)}/{_n(s.total)} done"]
    if s.failed:
        parts.append(f"{_n(s.failed)} failed")
    if s.cancelled:
        parts.append(f"{_n(s.cancelled)} stopped")
    if s.running:
        parts.append(f"{_n(s.running)} running")
    if s.retries:
        parts.append(f"{_n(s.retries)} retries")
    if s.output_tokens:
        parts.append(f"{_n(s.output_tokens)} tokens out")
    if s.cost_usd is not None:
        cost = ("~" if s.cost_estimated else "") + format_usd(s.cost_usd)
        parts.append(
            cost + (f" ({_n(s.cost_unknown)} unpriced)" if s.cost_unknown else "")
        )
    elif s.cost_unknown:
        parts.append("cost unknown")
    if s.rate:
        parts.append(f"{s.rate:,.1f}/s")
    if s.note:
        parts.append(s.note)
    eta = s.eta_s
    if eta is not None:
        parts.append(f"ETA {_s(eta)}")
    elif s.status != "running":
        parts.append(f"{s.status} in {_s(s.elapsed_s)}")
    return " · ".join(parts)


def summary(s: Snapshot) -> str:
    """The same run to run: counts, no timings (what nbclient and nbval show)."""
    parts = [f"{_n(s.total)} rows", f"{_n(s.done)} done", f"{_n(s.failed)} failed"]
    if s.cancelled:
        parts.append(f"{_n(s.cancelled)} stopped")
    if s.pending:
        parts.append(f"{_n(s.pending)} pending")
    return f"batch {s.status}: " + " · ".join(parts)


def bar(s: Snapshot, width: int = 24) -> str:
    """``[██████░░░░]``: finished rows (done, failed or stopped) out of all."""
    settled = s.done + s.failed + s.cancelled
    full = round(width * settled / s.total) if s.total else width
    return "[" + "█" * full + "░" * (width - full) + "]"
