"""Anthropic's Message Batches API (``engine="anthropic-batch"``), as documented in
the API reference (https://docs.anthropic.com/en/api/creating-message-batches and
the pages beside it) and the batch-processing guide.

- ``POST /messages/batches`` ``{"requests": [{"custom_id", "params"}]}``: ``params``
  is a Messages request (``max_tokens`` required), ``custom_id`` unique in the
  batch, 1-64 characters of ``[a-zA-Z0-9_-]``; at most 100,000 requests and 256 MB.
  No ``anthropic-beta`` header is needed since the API left beta (it was
  ``message-batches-2024-09-24``); headers given to the client are sent all the same.
- The batch: ``id``, ``type: "message_batch"``, ``processing_status``
  (``in_progress``, ``canceling``, ``ended``), ``request_counts`` (``processing``,
  ``succeeded``, ``errored``, ``canceled``, ``expired``), ``results_url`` (once
  ended), ``created_at``, ``expires_at``, ``ended_at``, ``cancel_initiated_at``.
- ``GET /messages/batches/{id}``; ``POST /messages/batches/{id}/cancel``.
- Results: JSONL at ``results_url`` (``GET /messages/batches/{id}/results``), in any
  order: ``{"custom_id", "result": {"type": "succeeded", "message": {...}} |
  {"type": "errored", "error": {"type": "error", "error": {"type", "message"}}} |
  {"type": "canceled"} | {"type": "expired"}}``.

The key goes with every call (``x-api-key``); ``results_url`` is followed only when
it is on the client's own server, else the documented path is asked instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._core.errors import APIError
from .._http.request import encode_body
from .batchapi import Line, Poll, counts_of, result_object
from .rest import Rest, same_origin

__all__ = ["ERROR_STATUS", "AnthropicBatch"]

# An errored result's error type → the HTTP status the Messages API gives it.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBatch:
    name = "anthropic-batch"
    label = "Anthropic batch"
    api = "anthropic"
    max_requests = 100_000
    max_bytes = 250 * 1024 * 1024  # under the 256 MB a batch may hold

    def entry(self, custom_id: str, body: dict[str, Any]) -> bytes:
        req = {"custom_id": custom_id, "params": body}
        return encode_body(req)

    async def submit(self, rest: Rest, entries: list[bytes]) -> str:
        data = b'{"requests":[' + b",".join(entries) + b"]}"
        batch = await rest.call("POST", "/messages/batches", data=data)
        bid = batch.get("id") if isinstance(batch, dict) else None
        if not isinstance(bid, str) or not bid:
            raise APIError(
                f"the answer has no batch id: {rest.scrub(str(batch)[:200])!r}"
            )
        return bid

    async def retrieve(self, rest: Rest, batch_id: str) -> Poll:
        return _poll(await rest.call("GET", f"/messages/batches/{batch_id}"))

    async def cancel(self, rest: Rest, batch_id: str) -> None:
        await rest.call("POST", f"/messages/batches/{batch_id}/cancel")

    async def results(
        self, rest: Rest, batch_id: str, poll: Poll, ids: list[str]
    ) -> Iterator[Line]:
        url = poll.raw.get("results_url")
        if not (isinstance(url, str) and same_origin(url, rest.base_url)):
            url = f"/messages/batches/{batch_id}/results"
        return _lines(await rest.lines(url), ids)


def _poll(b: Any) -> Poll:
    """What a message batch object says, whatever its shape."""
    b = b if isinstance(b, dict) else {}
    status = str(b.get("processing_status", "unknown"))
    return Poll(status, status == "ended", counts_of(b.get("request_counts")), b)


def _lines(lines: Iterator[bytes], ids: list[str]) -> Iterator[Line]:
    seen: set[str] = set()
    for raw in lines:
        line = _line(raw)
        if line is not None:
            seen.add(line.custom_id)
            yield line
    for cid in ids:
        if cid not in seen:
            yield Line(cid, "missing")


def _line(raw: bytes) -> Line | None:
    found = result_object(raw)
    if found is None:
        return None
    cid, obj = found
    result = obj.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    if kind == "succeeded":
        return Line(cid, "done", body=result.get("message"))  # type: ignore[union-attr]
    if kind == "canceled":
        return Line(cid, "cancelled")
    if kind == "expired":
        return Line(cid, "expired")
    if kind == "errored":
        err = result.get("error")  # type: ignore[union-attr]
        if isinstance(err, dict) and isinstance(err.get("error"), dict):
            err = err["error"]  # the documented {"type": "error", "error": {...}}
        err = err if isinstance(err, dict) else {}
        etype = err.get("type") if isinstance(err.get("type"), str) else None
        status = ERROR_STATUS.get(etype or "")
        message = str(err.get("message") or "no message")
        return Line(
            cid,
            "failed",
            status_code=status,
            message=f"{etype or 'error'}: {message}",
            code=etype,
        )
    return Line(cid, "failed", message=f"a result of type {kind!r}")
