"""What a reply cost, in US dollars: its usage priced with the genai-prices dataset.

Prices are never written here: they come from ``genai-prices`` (a maintained dataset of
model prices, with the dates they changed), looked up at the time the turn was asked.

Which price:

- When the base URL names a provider the dataset knows (``api.openai.com``,
  ``api.anthropic.com``, ``openrouter.ai``, ``api.groq.com``, ``api.mistral.ai``,
  ``api.deepseek.com``, Azure, Bedrock, Google …), that provider's price. A provider
  that does not list the model leaves the cost unknown: another provider's price for
  the same name would be a guess.
- Otherwise (a gateway, a proxy, a local server) by the model name alone, as the
  dataset matches names (``gpt-…`` is OpenAI's, ``claude…`` Anthropic's …): gateways
  and proxies serve the same models under the same names.
- The name the server reported (``turn.model``, e.g. ``gpt-4o-2024-08-06``) first,
  then the name asked for.

What is counted: uncached input, cache reads (``cached_input_tokens``) and cache writes
(``cache_write_tokens``; Anthropic's one-hour writes at their own price, from the raw
usage), output, reasoning tokens at their own price where a model has one, and
Anthropic's web searches. Each attempt of a reply (fallback, recovery) and each step of
a tool loop is priced on its own model and server, then added up.

Unknown model, or no usage: ``None`` ("cost unknown"), never a guess. A request the
server refused (an HTTP error) or never received costs nothing. Token counts nbstream
estimated (a server that sends no usage) give an estimated cost, marked as such.

genai-prices loads in about half a second, the first time a cost is asked;
``warm_up()`` loads it on a thread ahead of time.

>>> from nbstream._core.events import Usage
>>> price_usage(Usage(input_tokens=1000, output_tokens=100), ["gpt-4o"], "") is None
False
>>> price_usage(Usage(input_tokens=1000, output_tokens=100), ["no-such-model"], "")
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .events import Usage

if TYPE_CHECKING:
    from .record import Attempt
    from .turn import Turn

__all__ = [
    "Cost",
    "format_usd",
    "price_usage",
    "step_cost",
    "turn_cost",
    "warm_up",
]

log = logging.getLogger("nbstream")

# Errors that mean "the server refused or was never reached": nothing was billed.
_NOT_BILLED = frozenset({"APIStatusError", "APIConnectionError", "NotAStreamError"})


@dataclass(frozen=True, slots=True)
class Cost:
    """What a reply cost, in US dollars.

    ``input_usd`` is the prompt (uncached, cache reads and writes), ``output_usd`` the
    reply (reasoning included); ``total_usd`` adds any per-request or per-search
    charge. ``estimated`` when some token counts were nbstream's estimates.
    ``priced_as`` names each price used, as ``provider:model`` of the dataset.

    >>> Cost(0.001, 0.0002, 0.0012)
    Cost($0.0012)
    """

    input_usd: float
    output_usd: float
    total_usd: float
    estimated: bool = False
    priced_as: tuple[str, ...] = ()

    def __repr__(self) -> str:
        mark = "~" if self.estimated else ""
        return f"Cost({mark}{format_usd(self.total_usd)})"

    def __str__(self) -> str:
        return ("~" if self.estimated else "") + format_usd(self.total_usd)


def format_usd(usd: float) -> str:
    """Dollars with two significant digits below ten cents (``$0.0012``), else cents
    (``$1.25``). js/src/readout.js formats them the same way."""
    if usd <= 0 or not math.isfinite(usd):
        return "$0.00"
    decimals = min(10, max(2, 1 - math.floor(math.log10(usd))))
    return f"${usd:.{decimals}f}"


# -- a turn ---------------------------------------------------------------------------


def turn_cost(turn: Turn) -> Cost | None:
    """The cost of the whole reply: every step of a tool loop, every attempt of each.
    ``None`` while it streams, or when any part's cost is unknown."""
    return _add(step_cost(step) for step in _model_steps(turn))


def step_cost(turn: Turn) -> Cost | None:
    """The cost of one model step (one request and its fallbacks), without the other
    steps of a tool loop: the figure for one row of ``to_pandas()``."""
    if turn.status == "streaming":
        return None
    attempts = turn.attempts
    when = turn.created_at
    parts: list[Cost | None] = []
    for a in attempts:
        names = [a.model]
        if len(attempts) == 1:  # the name the server reported is this attempt's
            names = [turn.model or a.model, turn.request.model, a.model]
        parts.append(_attempt_cost(a, names, when))
    return _add(parts)


def _model_steps(turn: Turn) -> list[Turn]:
    """The model steps of a reply (``turn.steps`` without its tool results, which
    cost nothing here); a reply without tools is its only step."""
    from .turn import Turn

    return [s for s in turn.steps if isinstance(s, Turn)]


def _attempt_cost(a: Attempt, names: Sequence[str], when: float) -> Cost | None:
    if a.usage is None:
        if a.error is not None and a.error.kind in _NOT_BILLED:
            return Cost(0.0, 0.0, 0.0)
        return None
    return price_usage(a.usage, names, a.base_url, when=when)


def _add(parts: Iterable[Cost | None]) -> Cost | None:
    costs = list(parts)
    if not costs or any(c is None for c in costs):
        return None
    known = [c for c in costs if c is not None]
    if len(known) == 1:
        return known[0]
    names: list[str] = []
    for c in known:
        names += [n for n in c.priced_as if n not in names]
    return Cost(
        input_usd=float(sum(Decimal(repr(c.input_usd)) for c in known)),
        output_usd=float(sum(Decimal(repr(c.output_usd)) for c in known)),
        total_usd=float(sum(Decimal(repr(c.total_usd)) for c in known)),
        estimated=any(c.estimated for c in known),
        priced_as=tuple(names),
    )


# -- one request ------------------------------------------------------------------------


def price_usage(
    usage: Usage,
    names: Sequence[str | None],
    base_url: str,
    *,
    when: float | None = None,
) -> Cost | None:
    """The cost of one request's ``usage``, for the first of ``names`` the dataset
    prices at ``base_url`` (see the module docstring), at the time ``when`` (a Unix
    time; now if not given). ``None`` when no price is known."""
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    counts = _counts(usage)
    if counts is None:
        return None
    at = round(when) if when is not None else None  # to the second: the cache key
    snapshot = _snapshot()
    if snapshot is None:
        return None
    # genai_prices.UpdatePrices may put newer prices in place: they are another key
    data = (id(snapshot), snapshot.timestamp)
    seen: set[str] = set()
    for name in names:
        if not name or name in seen:
            continue
        seen.add(name)
        found = _price(name, base_url, counts, at, data)
        if found is not None:
            inp, out, total, label = found
            return Cost(float(inp), float(out), float(total), usage.estimated, (label,))
    return None


def _counts(u: Usage) -> tuple[tuple[str, int], ...] | None:
    """The usage in the dataset's terms (hashable, for the cache)."""
    raw: dict[str, Any] = u.raw if isinstance(u.raw, dict) else {}
    inp, out = u.input_tokens or 0, u.output_tokens or 0
    read, write = u.cached_input_tokens or 0, u.cache_write_tokens or 0
    reasoning = u.reasoning_tokens or 0
    if read + write > inp or reasoning > out:
        return None  # counts that contradict each other: no honest price
    counts = {"input_tokens": inp, "output_tokens": out}
    if read:
        counts["cache_read_tokens"] = read
    if write:
        counts["cache_write_tokens"] = write
        hour = _int(raw.get("cache_creation"), "ephemeral_1h_input_tokens")
        if 0 < hour <= write:  # Anthropic's one-hour cache writes cost more
            counts["cache_write_1h_tokens"] = hour
    if reasoning:
        counts["output_reasoning_tokens"] = reasoning
    searches = _int(raw.get("server_tool_use"), "web_search_requests")
    if searches > 0:
        counts["web_searches"] = searches
    return tuple(sorted(counts.items()))


def _int(d: Any, key: str) -> int:
    v = d.get(key) if isinstance(d, dict) else None
    return v if type(v) is int and v >= 0 else 0


@functools.lru_cache(maxsize=4096)
def _price(
    name: str,
    base_url: str,
    counts: tuple[tuple[str, int], ...],
    at: int | None,
    data: tuple[int, Any],
) -> tuple[Decimal, Decimal, Decimal, str] | None:
    found = _find(name, base_url, data)
    prices = _dataset()
    if found is None or prices is None:
        return None
    provider, model = found
    when = datetime.fromtimestamp(at, UTC) if at is not None else datetime.now(UTC)
    try:
        calc = model.calc_price(
            prices.Usage(**dict(counts)), provider, genai_request_timestamp=when
        )
    except (ValueError, ArithmeticError) as exc:
        log.debug("no price for %s at %s: %s", name, base_url, exc)
        return None
    label = f"{provider.id}:{model.id}"
    return calc.input_price, calc.output_price, calc.total_price, label


@functools.lru_cache(maxsize=1024)
def _find(name: str, base_url: str, data: tuple[int, Any]) -> tuple[Any, Any] | None:
    """(provider, model) of the dataset (``data`` names its snapshot): by the base
    URL's provider if it names one, else by the model name alone."""
    snapshot = _snapshot()
    if snapshot is None:
        return None
    try:
        provider = snapshot.find_provider(None, None, base_url) if base_url else None
    except LookupError:
        provider = None
    if provider is not None:
        model = provider.find_model(name, all_providers=snapshot.providers)
        return (provider, model) if model is not None else None
    try:
        provider, model = snapshot.find_provider_model(name, None, None, None)
        return provider, model
    except LookupError:
        return None


# -- the dataset ---------------------------------------------------------------------------

_load_lock = threading.Lock()
_warming = False


def _dataset() -> Any:
    """The genai_prices module with its data loaded, or None if it is not installed."""
    with _load_lock:
        try:
            import genai_prices
            import genai_prices.data_snapshot

            genai_prices.data_snapshot.get_snapshot()
        except ImportError:  # a dependency; if missing, costs are unknown, said once
            if not getattr(_dataset, "warned", False):
                _dataset.warned = True  # type: ignore[attr-defined]
                log.warning("genai-prices is not installed: costs are unknown")
            return None
        return genai_prices


def _snapshot() -> Any:
    """The prices in use: genai-prices' own, or newer ones ``UpdatePrices`` fetched."""
    prices = _dataset()
    return prices.data_snapshot.get_snapshot() if prices is not None else None


def warm_up() -> None:
    """Load the price dataset on a thread now (about half a second of imports), so
    the first reply's cost does not wait for it."""
    global _warming
    if _warming or "genai_prices.data" in sys.modules:
        return
    _warming = True
    threading.Thread(target=_dataset, name="nbstream-prices", daemon=True).start()
