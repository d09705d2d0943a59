"""OpenAI's Batch API (``engine="openai-batch"``), as documented in the API reference
(Files: https://platform.openai.com/docs/api-reference/files; Batch:
https://platform.openai.com/docs/api-reference/batch). vLLM's ``run-batch`` reads the
same input file.

- Input file, one JSON object a line: ``{"custom_id": str, "method": "POST", "url":
  "/v1/chat/completions", "body": {...}}``, custom ids unique; at most 50,000 lines
  and 200 MB a file.
- ``POST /files`` (multipart: ``purpose=batch``, ``file``) → ``{"id": "file-…", …}``.
- ``POST /batches`` ``{"input_file_id", "endpoint", "completion_window": "24h"}`` →
  a batch object: ``id``, ``status`` (``validating``, ``in_progress``,
  ``finalizing``, ``completed``; ``failed``, ``expired``, ``cancelling``,
  ``cancelled``), ``request_counts`` (``total``, ``completed``, ``failed``),
  ``output_file_id``, ``error_file_id``, ``errors`` (``{"data": [{"code",
  "message", "line"}]}`` when validation failed).
- ``GET /batches/{id}``; ``POST /batches/{id}/cancel``.
- ``GET /files/{id}/content``: the output and error files, one line a request:
  ``{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null,
  "error": {"code", "message"} | null}``. Requests the window did not reach have
  ``error.code`` ``batch_expired``; those a cancel stopped ``batch_cancelled``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._core.errors import APIError
from .._http.request import encode_body
from .batchapi import Line, Poll, counts_of, result_object
from .rest import Rest

__all__ = ["ENDPOINT", "OpenAIBatch"]

ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class OpenAIBatch:
    name = "openai-batch"
    label = "OpenAI batch"
    api = "openai"
    max_requests = 50_000
    max_bytes = 190 * 1024 * 1024  # under the 200 MB a file may hold

    def entry(self, custom_id: str, body: dict[str, Any]) -> bytes:
        line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
        return encode_body(line)

    async def submit(self, rest: Rest, entries: list[bytes]) -> str:
        upload = await rest.upload(
            "/files", {"purpose": "batch"}, "nbstream-batch.jsonl", b"\n".join(entries)
        )
        batch = await rest.call(
            "POST",
            "/batches",
            {
                "input_file_id": _str(rest, upload, "id"),
                "endpoint": ENDPOINT,
                "completion_window": "24h",
            },
        )
        return _str(rest, batch, "id")

    async def retrieve(self, rest: Rest, batch_id: str) -> Poll:
        return _poll(await rest.call("GET", f"/batches/{batch_id}"))

    async def cancel(self, rest: Rest, batch_id: str) -> None:
        await rest.call("POST", f"/batches/{batch_id}/cancel")

    async def results(
        self, rest: Rest, batch_id: str, poll: Poll, ids: list[str]
    ) -> Iterator[Line]:
        files = [poll.raw.get(k) for k in ("output_file_id", "error_file_id")]
        downloads = [
            await rest.lines(f"/files/{f}/content") for f in files if isinstance(f, str)
        ]
        return _lines(downloads, poll, ids)


def _poll(b: Any) -> Poll:
    """What a batch object says, whatever its shape."""
    b = b if isinstance(b, dict) else {}
    status = str(b.get("status", "unknown"))
    return Poll(status, status in TERMINAL, counts_of(b.get("request_counts")), b)


def _lines(
    downloads: list[Iterator[bytes]], poll: Poll, ids: list[str]
) -> Iterator[Line]:
    seen: set[str] = set()
    for lines in downloads:
        for raw in lines:
            line = _line(raw)
            if line is not None:
                seen.add(line.custom_id)
                yield line
    # what the files leave out: the batch's end says why
    errors = poll.raw.get("errors")
    errors = errors.get("data") if isinstance(errors, dict) else None
    errors = (
        [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
    )
    by_line = {e["line"]: e for e in errors if type(e.get("line")) is int}
    general = "; ".join(str(e.get("message")) for e in errors if not e.get("line"))
    for n, cid in enumerate(ids, 1):
        if cid in seen:
            continue
        if poll.status == "failed":
            e = by_line.get(n, {})
            yield Line(
                cid,
                "failed",
                message="the batch failed validation: "
                + (str(e.get("message") or "") or general or "no reason given"),
                code=e.get("code") if isinstance(e.get("code"), str) else None,
            )
        elif poll.status in ("expired", "cancelled"):
            yield Line(cid, poll.status)  # type: ignore[arg-type]
        else:
            yield Line(cid, "missing")


def _line(raw: bytes) -> Line | None:
    found = result_object(raw)
    if found is None:
        return None
    cid, obj = found
    err, resp = obj.get("error"), obj.get("response")
    if isinstance(err, dict):
        code = err.get("code") if isinstance(err.get("code"), str) else None
        if code == "batch_expired":
            return Line(cid, "expired")
        if code == "batch_cancelled":
            return Line(cid, "cancelled")
        return Line(cid, "failed", message=str(err.get("message") or ""), code=code)
    if not isinstance(resp, dict):
        return Line(cid, "failed", message="the result line has no response")
    status = resp.get("status_code")
    body = resp.get("body")
    if status == 200:
        return Line(cid, "done", body=body)
    message, code = None, None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        code = body["error"].get("code") or body["error"].get("type")
    return Line(
        cid,
        "failed",
        status_code=status if isinstance(status, int) else None,
        message=f"HTTP {status}: {message or 'no message'}",
        code=code if isinstance(code, str) else None,
    )


def _str(rest: Rest, obj: Any, name: str) -> str:
    value = obj.get(name) if isinstance(obj, dict) else None
    if not isinstance(value, str) or not value:
        raise APIError(f"the answer has no {name!r}: {rest.scrub(str(obj)[:200])!r}")
    return value
