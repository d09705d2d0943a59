"""The request key: what makes two requests the same request. Pure: no I/O.

A request is identified by a SHA-256 of its canonical JSON: the API (wire format), the
base URL, the model, the messages sent (history included), the system prompt and the
parameters, never the API key or a header. The batch store and the reply cache both
key their results by it, so a finished request found under its key is never sent again.

>>> k = request_key("openai", "http://h/v1", "m", [{"role": "user", "content": "Hi"}],
...                 None, {"temperature": 0})
>>> len(k), k == request_key("openai", "http://h/v1/", "m",
...                          [{"role": "user", "content": "Hi"}], None, {"temperature": 0})
(64, True)
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["KEY_VERSION", "canonical", "describe_request", "keyed", "request_key"]

KEY_VERSION = 1  # bump when what goes into a key changes: old stores then miss, safely


def canonical(obj: Any) -> str:
    """Sorted keys, no spaces, no NaN: the same value always gives the same text.
    Raises ``TypeError`` / ``ValueError`` for a value JSON cannot hold."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def describe_request(
    api: str,
    base_url: str,
    model: str,
    messages: list[dict[str, Any]],
    system: str | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    """The request as stored (and hashed): no key, no header."""
    return {
        "v": KEY_VERSION,
        "api": api,
        "base_url": base_url.rstrip("/"),
        "model": model,
        "messages": messages,
        "system": system,
        "params": params,
    }


def keyed(
    api: str,
    base_url: str,
    model: str,
    messages: list[dict[str, Any]],
    system: str | None,
    params: dict[str, Any],
) -> tuple[str, str]:
    """``(key, the request as canonical JSON)``. Raises ``TypeError`` or ``ValueError``
    when a message or parameter is not JSON."""
    text = canonical(describe_request(api, base_url, model, messages, system, params))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), text


def request_key(
    api: str,
    base_url: str,
    model: str,
    messages: list[dict[str, Any]],
    system: str | None,
    params: dict[str, Any],
) -> str:
    return keyed(api, base_url, model, messages, system, params)[0]
