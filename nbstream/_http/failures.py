"""What a failed request says: the error a user sees for a timeout, a connection that
could not be made, or a non-2xx answer, naming the cause and the fix. Everything that
came from the server is scrubbed of the key before it is cut short.
"""

from __future__ import annotations

import json
from typing import Any

from .._core.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    NbstreamError,
    TimeoutPhase,
)
from .._core.providers import clip
from .._core.response_format import rejection_hint
from .request import RequestSpec
from .retry import times
from .transport import TransportFailure

__all__ = ["send_failed", "status_error", "timeout"]


def timeout(spec: RequestSpec, phase: TimeoutPhase) -> APITimeoutError:
    what = {
        "first_byte": "the first byte of the answer",
        "first_token": "the first piece of the reply (only keep-alive comments came)",
        "idle": "the next piece of the reply",
        "total": "the whole reply",
    }.get(phase, phase)
    limit = getattr(spec.timeouts, phase)
    return APITimeoutError(
        f"No answer from {spec.base_url} within {limit:g} s while waiting for {what}. "
        "The partial reply is kept. If the model is just slow, raise the limit: "
        f"Client(timeout=Timeouts({phase}=...)).",
        phase=phase,
    )


def send_failed(
    spec: RequestSpec, exc: TransportFailure, attempt: int, max_connections: int | None
) -> NbstreamError:
    s, t = spec.settings, spec.timeouts
    if exc.kind == "connect_timeout":
        return APITimeoutError(
            f"Could not connect to {s.base_url} within {t.connect} s (tried "
            f"{times(attempt)}). Check the base URL (from {s.source}) and your "
            "network.",
            phase="connect",
        )
    if exc.kind == "pool_timeout":
        return APITimeoutError(
            f"All {max_connections} connections of this client to {s.base_url} stayed "
            f"busy for {t.connect} s. Allow more at once (Client(max_connections="
            "...)), or send fewer requests at a time.",
            phase="pool",
        )
    detail = clip(spec.scrubber, exc.detail, 300)
    if exc.kind == "protocol":  # it connected, but what came back was not HTTP
        return APIConnectionError(
            f"{s.base_url} did not answer with valid HTTP/1.1 ({detail}; tried "
            f"{times(attempt)}). Check that the base URL (from {s.source}) points at "
            "an HTTP API server."
        )
    if exc.kind == "broken":
        return APIConnectionError(
            f"The connection to {s.base_url} broke before the answer came ({detail}; "
            f"tried {times(attempt)}). Is the server running? Check the base URL "
            f"(from {s.source})."
        )
    hint = (
        "Start the local model with `python -m nbstream.local`, or point nbstream "
        "at a server: NBSTREAM_BASE_URL / OPENAI_API_KEY / ANTHROPIC_API_KEY."
        if "local-model default" in s.source
        else f"Is the server running? Check the base URL (from {s.source})."
    )
    return APIConnectionError(
        f"Could not connect to {s.base_url} ({detail}; tried {times(attempt)}). {hint}"
    )


def status_error(
    spec: RequestSpec,
    status: int,
    reason: str,
    headers: dict[str, str],
    body: str,
    attempt: int,
    after: float | None,
) -> APIStatusError:
    """``body`` is scrubbed already."""
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    msg, etype, _code = (
        spec.provider.error_details(parsed)
        if parsed is not None
        else (None, None, None)
    )
    request_id = (
        headers.get("x-request-id")
        or headers.get("request-id")
        or (parsed.get("request_id") if isinstance(parsed, dict) else None)
    )
    request_id = clip(spec.scrubber, str(request_id), 200) if request_id else None
    provider_msg = clip(spec.scrubber, msg or body.strip(), 500) or None
    hint = rejection_hint(spec.api, spec.params, status, body) or _status_hint(
        status, spec, after, attempt
    )
    model = f" for model {spec.settings.model!r}" if status in (400, 404, 422) else ""
    text = (
        f"{spec.base_url} answered HTTP {status} {reason}{model}: "
        f"{(provider_msg or '(no message)').rstrip('. ')}"
        f"{' [request id ' + request_id + ']' if request_id else ''}. {hint}"
    )
    return APIStatusError(
        text,
        status_code=status,
        provider_message=provider_msg,
        request_id=request_id,
        retry_after=after,
        error_type=etype,
        body=body,
    )


def _status_hint(
    status: int, spec: RequestSpec, after: float | None, attempt: int
) -> str:
    settings = spec.settings
    if status in (401, 403):
        withheld = settings.withheld_key
        if withheld and settings.api_key is None:
            return (
                f"{withheld} is set, but nbstream sends it only to its own provider, "
                f"not to {settings.base_url}: for this server set NBSTREAM_API_KEY "
                "or pass api_key=..."
            )
        var = "ANTHROPIC_API_KEY" if spec.api == "anthropic" else "OPENAI_API_KEY"
        return (
            "Check the API key: pass api_key=..., or set NBSTREAM_API_KEY or "
            f"{var}{'' if settings.api_key else ' (none is set)'}."
        )
    if status == 404:
        return "Check the model name and the base URL (it usually ends in /v1)."
    if status == 429:
        wait = f"retry after {after:g} s" if after is not None else "wait"
        return f"Rate limited (tried {times(attempt)}): {wait}, or send fewer requests."
    if status >= 500:
        return f"The server failed (tried {times(attempt)}); try again later."
    return "The provider's message says what to change in the request."
