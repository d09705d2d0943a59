"""The usage readout: its numbers as plain data (``readout``) and as one line
(``readout_text``). js/src/readout.js is the live views' twin. No I/O, no IPython."""

from __future__ import annotations

from typing import Any

from .._core.pricing import format_usd
from .._core.transcript import Turn

__all__ = ["readout", "readout_text"]


def readout(turn: Turn) -> dict[str, Any]:
    """The numbers of the readout, as plain data (JSON-able).

    While the reply streams, a count the server has not sent yet is nbstream's own and
    marked as estimated: input from the size of what was sent, output from the deltas
    so far (Anthropic's first usage has a placeholder output count, never shown). The
    cost comes when the reply has ended (``cost_usd`` None then: unknown), and then
    the counts are the whole reply's, as the cost is: every step of a tool loop (the
    timings stay the last step's).
    """
    streaming = turn.status == "streaming"
    u, m = (turn.usage if streaming else turn.total_usage), turn.metrics
    inp: int | None
    if u is not None and u.input_tokens is not None:
        inp, inp_est = u.input_tokens, u.estimated
    else:
        inp, inp_est = m.input_estimate, True
    if u is not None and u.output_tokens is not None:
        out, out_est = u.output_tokens, u.estimated
    else:
        out, out_est = m.deltas, True
    r: dict[str, Any] = {
        "status": turn.status,
        "ttft_s": m.ttft_s,
        "input_tokens": inp,
        "output_tokens": out,
        "estimated": inp_est or out_est,
        "input_estimated": inp_est,
        "output_estimated": out_est,
        "cached_input_tokens": u.cached_input_tokens if u else None,
        "cache_write_tokens": u.cache_write_tokens if u else None,
        "tokens_per_s": m.tokens_per_s,
        "elapsed_s": m.elapsed_s,
        "finish_reason": turn.finish_reason,
        "cost_usd": None,
        "cost_estimated": False,
        "cached": bool(turn.extra.get("cached")),  # answered from the reply cache
        **_models(turn),
    }
    if not streaming:
        cost = turn.cost_details
        if cost is not None:
            r["cost_usd"] = cost.total_usd
            r["cost_estimated"] = cost.estimated
    return r


def _models(turn: Turn) -> dict[str, Any]:
    """The models that wrote the reply, when more than one did."""
    attempts = turn._attempts
    if len(attempts) < 2:
        return {}
    last = attempts[-1]
    return {"models": [a.model for a in attempts if a.span is not None or a is last]}


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{round(s * 1000)} ms" if s < 1 else f"{s:.2f} s"


def readout_text(r: dict[str, Any]) -> str:
    """One line: ``complete · first token 120 ms · 12 in · 80 out tokens · $0.0012 · …``.

    ``~`` marks a count (or a cost) that rests on nbstream's estimate; a finished reply
    whose cost is not known says ``cost unknown``. js/src/readout.js is its twin."""
    parts = [str(r.get("status") or "")]
    if r.get("cached"):  # nothing was sent: no timings to show
        parts[0] += " (cached)"
        r = {
            k: v
            for k, v in r.items()
            if k not in ("ttft_s", "tokens_per_s", "elapsed_s")
        }
    if r.get("models"):
        parts.append(" → ".join(str(m) for m in r["models"]))
    if r.get("ttft_s") is not None:
        parts.append(f"first token {_fmt_s(r['ttft_s'])}")
    inp, out = r.get("input_tokens"), r.get("output_tokens")
    if inp is not None or out is not None:
        est = r.get("estimated")
        inp_mark = "~" if r.get("input_estimated", est) else ""
        out_mark = "~" if r.get("output_estimated", est) else ""
        cache = _cache_text(r)
        parts.append(
            f"{inp_mark}{inp if inp is not None else '?'} in{cache} · "
            f"{out_mark}{out if out is not None else '?'} out tokens"
            + (" (estimated)" if inp_mark or out_mark else "")
        )
    if "cost_usd" in r and r.get("status") != "streaming":
        cost = r["cost_usd"]
        if cost is None:
            parts.append("cost unknown")
        else:
            parts.append(("~" if r.get("cost_estimated") else "") + format_usd(cost))
    if r.get("tokens_per_s") is not None:
        parts.append(f"{r['tokens_per_s']:.1f} tok/s")
    if r.get("elapsed_s") is not None:
        parts.append(_fmt_s(r["elapsed_s"]))
    if r.get("finish_reason"):
        parts.append(f"finish: {r['finish_reason']}")
    return " · ".join(p for p in parts if p)


def _cache_text(r: dict[str, Any]) -> str:
    """`` (800 cached, 100 written to cache)``: the prompt tokens the provider's cache
    served, and those it stored (both priced apart)."""
    said = []
    if r.get("cached_input_tokens"):
        said.append(f"{r['cached_input_tokens']} cached")
    if r.get("cache_write_tokens"):
        said.append(f"{r['cache_write_tokens']} written to cache")
    return f" ({', '.join(said)})" if said else ""
