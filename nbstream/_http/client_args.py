"""Checking a ``Client``'s arguments when it is made, so that a bad one fails there with
its fix, not in the middle of a reply: extra headers (and which carry secrets), the
fallback list, the recovery strategy, the middleware."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .._core.errors import ConfigurationError
from .._core.recovery import Recover
from .._core.secrets import check_key
from ..middleware import Middleware
from .runner import Entry
from .transport import HTTP_CHOICES, HttpChoice

if TYPE_CHECKING:
    from .client import Client

__all__ = [
    "checked_headers",
    "entries",
    "http_choice",
    "middleware",
    "recover",
    "secret_headers",
]


_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|session", re.IGNORECASE)


def checked_headers(headers: dict[str, str]) -> dict[str, str]:
    """Extra headers, refused (never echoed) if HTTP cannot carry them."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ConfigurationError(
                "Client(headers=...) takes a dict of str to str; "
                f"the header {name!r} is not one."
            )
        if value:
            check_key(value, "Client(headers=...)", f"The value of header {name!r}")
        out[name] = value
    return out


_OFFICIAL = {
    "api.openai.com": "OPENAI_API_KEY",
    "api.anthropic.com": "ANTHROPIC_API_KEY",
}


def entries(client: Client, fallbacks: Sequence[str | Client]) -> list[Entry]:
    """``fallbacks=`` checked now, so that a bad entry fails here with its fix, not in
    the middle of a broken reply."""
    from .client import Client  # the class of the client being made

    if isinstance(fallbacks, str | Client):
        fallbacks = [fallbacks]
    out: list[Entry] = []
    for i, f in enumerate(fallbacks):
        if isinstance(f, str):
            if not f.strip():
                raise ConfigurationError(
                    f"fallbacks[{i}] is an empty model name: give a model name (asked "
                    "on this client's server) or another Client."
                )
            out.append(Entry(client, f))
        elif isinstance(f, Client):
            if f.fallbacks:
                raise ConfigurationError(
                    f"fallbacks[{i}] has fallbacks of its own: list every entry in "
                    "this client's fallbacks instead (one flat list, tried in order)."
                )
            host = urlsplit(f.base_url).hostname or ""
            if host in _OFFICIAL and f.api_key is None:
                raise ConfigurationError(
                    f"fallbacks[{i}] ({f.model} at {f.base_url}) has no API key: "
                    f"set {_OFFICIAL[host]} or pass Client(api_key=...) for it."
                )
            out.append(Entry(f, f.model))
        else:
            raise ConfigurationError(
                f"fallbacks[{i}] is {type(f).__name__}: give model names (str) or "
                "Client objects, e.g. fallbacks=['gpt-4.1-mini', Client(...)]."
            )
    return out


def recover(recover: str | None) -> Recover | None:
    if recover is None or recover in ("restart", "prefill", "user_turn"):
        return recover  # type: ignore[return-value]
    raise ConfigurationError(
        f"recover={recover!r} is not a strategy: use 'restart' (ask again from "
        "scratch), 'prefill' (continue the partial reply), 'user_turn' (ask to "
        "continue) or None (keep the partial reply as an error)."
    )


def middleware(items: Sequence[Middleware]) -> tuple[Middleware, ...]:
    for i, m in enumerate(items):
        if not isinstance(m, Middleware):
            raise ConfigurationError(
                f"middleware[{i}] is {type(m).__name__}, not an "
                "nbstream.middleware.Middleware: subclass it and override the hooks "
                "you need."
            )
    return tuple(items)


def secret_headers(headers: dict[str, str]) -> list[str]:
    """The values of headers that carry a secret (e.g. Azure's api-key, a gateway's
    token), to scrub like the key."""
    out: list[str] = []
    for name, value in headers.items():
        if _SECRET_HEADER.search(name):
            out += [value, value.partition(" ")[2]]
    return [v for v in out if v]


def http_choice(arg: str | None, env: str | None) -> HttpChoice:
    """``Client(http=...)``, else ``NBSTREAM_HTTP``, else ``"auto"``."""
    value, where = (arg, "Client(http=...)") if arg else (env, "NBSTREAM_HTTP")
    value = (value or "auto").strip().lower()
    for choice in HTTP_CHOICES:
        if value == choice:
            return choice
    raise ConfigurationError(
        f"{where} is {value!r}: use 'auto' (nbstream's own HTTP/1.1 client unless a "
        "proxy or record/replay needs httpx2), 'httpx2' (always httpx2) or 'h1' "
        "(always nbstream's own)."
    )
