"""What to do with an attempt's turn: keep it, ask again, or record the failure.
Pure: no I/O.

- ``complete`` → done (a ``length`` finish is a whole reply too).
- ``incomplete`` (the stream ended with no finish and no end marker), a connection that
  broke, a timeout, an error event mid-stream, and HTTP 408, 409, 429, 5xx, 529 →
  asked again, from the start (a batch wants whole replies).
- HTTP 400, 404, 413, 422 → failed, and ``final``: the server refused the request
  itself, so a rerun of the batch does not send it again.
- HTTP 401, 403 and other 4xx, a body that is not a stream, an event over the size
  limit, an internal error → failed, not final: a rerun (with another key, say) sends
  it again.

>>> from nbstream._core.transcript import Request, Turn
>>> t = Turn(Request([], "m", "openai", "u")); t.status = "complete"
>>> decide(t).verdict
'done'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .._core.transcript import Turn
from .._http.request import RETRY_STATUSES

__all__ = ["FINAL_STATUSES", "Decision", "decide"]

FINAL_STATUSES = frozenset({400, 404, 413, 422})
_TRANSIENT_KINDS = frozenset(
    {"APIConnectionError", "APITimeoutError", "ProviderStreamError"}
)

Verdict = Literal["done", "retry", "failed"]


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    final: bool = False  # failed, and never sent again by a rerun
    rate_limited: bool = False  # a 429 / 529: the whole batch slows down
    retry_after: float | None = None  # what the server asked to wait


def decide(turn: Turn) -> Decision:
    status = turn.status
    if status == "complete":
        return Decision("done")
    if status == "incomplete":
        return Decision("retry")
    err = turn.error
    if err is None:  # "cancelled", or an error with nothing said about it
        return Decision("failed")
    code = err.status_code
    if code is not None:
        if code in (429, 529):
            return Decision("retry", rate_limited=True, retry_after=err.retry_after)
        if code in RETRY_STATUSES or code >= 500:
            return Decision("retry", retry_after=err.retry_after)
        return Decision("failed", final=code in FINAL_STATUSES)
    if err.kind in _TRANSIENT_KINDS:
        return Decision("retry")
    return Decision("failed")
