"""Conversation totals: turns, tokens, cost and time, as the chat panel's header and
``%chat history`` show them. Pure; ``totals_text`` has a twin in js/src/readout.js.

>>> from nbstream import Transcript
>>> totals(Transcript())["turns"]
0
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .._core.pricing import format_usd
from .._core.transcript import Transcript, Turn

__all__ = ["totals", "totals_text"]


def totals(transcript: Transcript) -> dict[str, Any]:
    """Every turn added up (JSON-able). The cost adds the turns whose cost is known
    (``cost_known`` of them) and counts the others (``cost_unknown``, finished turns
    only: a reply still streaming has no cost yet), never guessing theirs."""
    inp = out = 0
    estimated = cost_estimated = False
    elapsed = 0.0
    cost = Decimal(0)
    known = unknown = 0
    for t in transcript:
        usage = t.total_usage  # every model step of a tool loop
        if usage is not None:
            inp += usage.input_tokens or 0
            out += usage.output_tokens or 0
            estimated = estimated or usage.estimated
        elapsed += sum(
            s.metrics.elapsed_s or 0.0 for s in t.steps if isinstance(s, Turn)
        )
        if t.status == "streaming":
            continue
        c = t.cost_details
        if c is None:
            unknown += 1
        else:
            known += 1
            cost += Decimal(repr(c.total_usd))
            cost_estimated = cost_estimated or c.estimated
    return {
        "turns": len(transcript),
        "input_tokens": inp,
        "output_tokens": out,
        "estimated": estimated,
        "elapsed_s": elapsed,
        "cost_usd": float(cost),
        "cost_known": known,
        "cost_unknown": unknown,
        "cost_estimated": cost_estimated,
    }


def _tokens(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 10000 else str(n)


def _cost(t: dict[str, Any]) -> str:
    if "cost_usd" not in t:
        return ""
    known, unknown = t.get("cost_known") or 0, t.get("cost_unknown") or 0
    if not known:
        return "cost unknown" if unknown else ""
    total = ("~" if t.get("cost_estimated") else "") + format_usd(t["cost_usd"])
    if not unknown:
        return total
    return f"{total} + {unknown} {'turn' if unknown == 1 else 'turns'} of unknown cost"


def totals_text(t: dict[str, Any]) -> str:
    """``3 turns · 1.2k in · 300 out tokens · $0.0042 · 4.5 s``."""
    if not t.get("turns"):
        return ""
    est = "~" if t.get("estimated") else ""
    n = t["turns"]
    parts = [
        f"{n} {'turn' if n == 1 else 'turns'}",
        f"{est}{_tokens(t['input_tokens'])} in · {est}{_tokens(t['output_tokens'])} "
        "out tokens",
        _cost(t),
        f"{t['elapsed_s']:.1f} s",
    ]
    return " · ".join(p for p in parts if p)
