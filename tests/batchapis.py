"""An emulation of the providers' batch APIs on the loopback server, for
tests/test_batch_provider.py (not a test module). No provider is reachable from here:
this is built from their documented request and response formats, not from the
services, and answers in those formats:

- OpenAI Files and Batch API: https://platform.openai.com/docs/api-reference/files,
  https://platform.openai.com/docs/api-reference/batch (the batch object, the input
  file's ``BatchRequestInput`` lines, the output and error files'
  ``BatchRequestOutput`` lines).
- Anthropic Message Batches: https://docs.anthropic.com/en/api/creating-message-batches
  and the retrieve, results and cancel pages beside it.

What each request gets is scripted by ``outcome(prompt)``: ``ok`` (the model answers
``echo: <prompt>``), ``400`` (refused), ``500`` / ``overloaded`` (a transient failure),
``error`` (OpenAI: a line with an ``error`` object and no response), ``expired``,
``canceled`` (Anthropic). A batch ends after ``polls_to_end`` polls, unless held
(``hold``); a cancel ends it at the next poll with the first ``processed`` requests
answered. It keeps everything it was sent (``uploads``, ``created``, ``seen``) and
counts submissions.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.batchkit import answer
from tests.loopback import Reply, Seen

Outcome = Callable[[str], str]


@dataclass
class Batch:
    id: str
    kind: str  # "openai" | "anthropic"
    requests: list[dict[str, Any]]  # {"custom_id", "body"}
    created: dict[str, Any]  # the create call's JSON
    status: str
    polls: int = 0
    held: bool = False
    cancel: bool = False
    processed: int | None = None  # when cancelled: how many were answered
    errors: list[dict[str, Any]] = field(default_factory=list)  # failed validation
    files: dict[str, str] = field(default_factory=dict)  # output / error file ids


class BatchAPIs:
    """``server.serve(BatchAPIs(key=...))``"""

    def __init__(
        self,
        key: str,
        outcome: Outcome | None = None,
        *,
        polls_to_end: int = 2,
        results_host: str | None = None,
    ) -> None:
        self.key = key
        self.outcome: Outcome = outcome or (lambda prompt: "ok")
        self.polls_to_end = polls_to_end
        self.results_host = results_host  # Anthropic's results_url on another host
        self.base = ""  # set by the test: the server's base URL, for results_url
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.files: dict[str, bytes] = {}
        self.uploads: list[tuple[dict[str, str], bytes]] = []  # (form fields, file)
        self.batches: dict[str, Batch] = {}
        self.submissions = 0
        self.seen: list[Seen] = []
        self.hold_new = False

    # -- routing -----------------------------------------------------------------------
    def __call__(self, seen: Seen) -> Reply:
        with self.lock:
            self.seen.append(seen)
            path = seen.path.split("?")[0].removeprefix("/v1")
            if path.startswith("/messages/batches"):
                if seen.headers.get("x-api-key") != self.key:
                    return _anthropic_error(
                        401, "authentication_error", "invalid x-api-key"
                    )
                if not seen.headers.get("anthropic-version"):
                    return _anthropic_error(400, "invalid_request_error", "no version")
                return self._anthropic(seen.method, path, seen)
            if seen.headers.get("authorization") != f"Bearer {self.key}":
                return Reply.json(401, {"error": {"message": "Incorrect API key"}})
            return self._openai(seen.method, path, seen)

    def hold(self, batch_id: str | None = None, held: bool = True) -> None:
        """Keep a batch (every batch, if None) in progress until released."""
        with self.lock:
            for b in self.batches.values():
                if batch_id is None or b.id == batch_id:
                    b.held = held
            if batch_id is None:
                self.hold_new = held

    # -- OpenAI ------------------------------------------------------------------------
    def _openai(self, method: str, path: str, seen: Seen) -> Reply:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["files"]:
            return self._upload(seen)
        if method == "GET" and len(parts) == 3 and parts[0] == "files":
            data = self.files.get(parts[1])
            if data is None:
                return Reply.json(404, {"error": {"message": "No such File"}})
            return Reply(
                headers={"content-type": "application/octet-stream"},
                chunks=[data],
                framing="length",
            )
        if method == "POST" and parts == ["batches"]:
            return self._create_openai(seen.json)
        if parts[0] == "batches" and len(parts) >= 2 and parts[1] in self.batches:
            b = self.batches[parts[1]]
            if method == "POST" and parts[2:] == ["cancel"]:
                b.cancel = True
                b.status = "cancelling"
                return Reply.json(200, self._openai_object(b))
            if method == "GET" and len(parts) == 2:
                self._advance(b)
                return Reply.json(200, self._openai_object(b))
        return Reply.json(404, {"error": {"message": f"no route {method} {path}"}})

    def _upload(self, seen: Seen) -> Reply:
        head = f"Content-Type: {seen.headers.get('content-type')}\r\n\r\n".encode()
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            head + seen.body
        )
        fields: dict[str, str] = {}
        content = b""
        for part in msg.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True)
            if name == "file":
                content = data
                fields["filename"] = part.get_filename()
            else:
                fields[name] = data.decode()
        self.uploads.append((fields, content))
        if fields.get("purpose") != "batch" or not content:
            return Reply.json(400, {"error": {"message": "purpose must be batch"}})
        fid = f"file-{next(self.ids)}"
        self.files[fid] = content
        return Reply.json(
            200,
            {
                "id": fid,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": fields.get("filename"),
                "purpose": "batch",
            },
        )

    def _create_openai(self, body: dict[str, Any]) -> Reply:
        self.submissions += 1
        data = self.files.get(body.get("input_file_id", ""))
        if data is None:
            return Reply.json(400, {"error": {"message": "unknown input_file_id"}})
        requests, errors, ids = [], [], set()
        for n, raw in enumerate(data.split(b"\n"), 1):
            try:
                line = json.loads(raw)
            except ValueError:
                errors.append({"code": "invalid_json_line", "line": n, "message": "?"})
                continue
            cid = line.get("custom_id")
            if not isinstance(cid, str) or cid in ids:
                errors.append(
                    {"code": "duplicate_custom_id", "line": n, "message": "?"}
                )
            ids.add(cid)
            if line.get("url") != body.get("endpoint") or line.get("method") != "POST":
                errors.append({"code": "invalid_url", "line": n, "message": "?"})
            requests.append({"custom_id": cid, "body": line.get("body")})
        for n, r in enumerate(requests, 1):
            if r["body"].get("model") == "no-such-model":
                errors.append(
                    {"code": "model_not_found", "line": n, "message": "no such model"}
                )
        b = Batch(
            f"batch_{next(self.ids)}",
            "openai",
            requests,
            body,
            "failed" if errors else "validating",
            held=self.hold_new,
            errors=errors,
        )
        self.batches[b.id] = b
        return Reply.json(200, self._openai_object(b))

    def _openai_object(self, b: Batch) -> dict[str, Any]:
        done = b.status in ("completed", "expired", "cancelled")
        outcomes = [self._outcome(r) for r in b.requests[: self._processed(b)]]
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.created.get("endpoint"),
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.created.get("input_file_id"),
            "completion_window": b.created.get("completion_window"),
            "status": b.status,
            "output_file_id": b.files.get("output"),
            "error_file_id": b.files.get("error"),
            "created_at": int(time.time()),
            "request_counts": {
                "total": len(b.requests),
                "completed": sum(o == "ok" for o in outcomes) if done else 0,
                "failed": sum(o != "ok" for o in outcomes) if done else 0,
            },
        }

    def _openai_files(self, b: Batch) -> None:
        out, err = [], []
        for n, r in enumerate(b.requests):
            o = self._outcome(r) if n < self._processed(b) else "unprocessed"
            line: dict[str, Any] = {"id": f"batch_req_{n}", "custom_id": r["custom_id"]}
            if o == "ok":
                line |= {"response": _ok(r), "error": None}
                out.append(line)
                continue
            if o in ("400", "500"):
                msg = "Invalid value" if o == "400" else "The server had an error"
                line |= {
                    "response": {
                        "status_code": int(o),
                        "request_id": f"req_{n}",
                        "body": {"error": {"message": msg, "type": "x", "code": None}},
                    },
                    "error": None,
                }
            elif o == "expired" or (o == "unprocessed" and b.status == "expired"):
                line |= {"response": None, "error": _expired()}
            elif o == "error":
                line |= {
                    "response": None,
                    "error": {"code": "server_error", "message": "Internal error"},
                }
            else:
                continue  # cancelled before it ran: in neither file
            err.append(line)
        for name, lines in (("output", out), ("error", err)):
            if lines:
                fid = f"file-{next(self.ids)}"
                self.files[fid] = b"".join(
                    json.dumps(x).encode() + b"\n" for x in lines
                )
                b.files[name] = fid

    # -- Anthropic -----------------------------------------------------------------------
    def _anthropic(self, method: str, path: str, seen: Seen) -> Reply:
        parts = path.strip("/").split("/")  # messages, batches, [id, [results|cancel]]
        if method == "POST" and len(parts) == 2:
            self.submissions += 1
            body = seen.json
            requests = [
                {"custom_id": r["custom_id"], "body": r["params"]}
                for r in body["requests"]
            ]
            b = Batch(
                f"msgbatch_{next(self.ids):024d}",
                "anthropic",
                requests,
                body,
                "in_progress",
                held=self.hold_new,
            )
            self.batches[b.id] = b
            return Reply.json(200, self._anthropic_object(b))
        b = self.batches.get(parts[2]) if len(parts) > 2 else None
        if b is None:
            return _anthropic_error(404, "not_found_error", "no such batch")
        if method == "POST" and parts[3:] == ["cancel"]:
            b.cancel = True
            b.status = "canceling"
            return Reply.json(200, self._anthropic_object(b))
        if method == "GET" and parts[3:] == ["results"]:
            if b.status != "ended":
                return _anthropic_error(400, "invalid_request_error", "not ended")
            lines = [self._anthropic_line(b, n, r) for n, r in enumerate(b.requests)]
            data = b"".join(json.dumps(x).encode() + b"\n" for x in reversed(lines))
            return Reply(
                headers={"content-type": "application/binary"},
                chunks=[data],
                framing="length",
            )
        if method == "GET" and len(parts) == 3:
            self._advance(b)
            return Reply.json(200, self._anthropic_object(b))
        return _anthropic_error(404, "not_found_error", f"no route {method} {path}")

    def _anthropic_kind(self, b: Batch, n: int, r: dict[str, Any]) -> str:
        if n >= self._processed(b):
            return "canceled"
        return {"ok": "succeeded", "expired": "expired", "canceled": "canceled"}.get(
            self._outcome(r), "errored"
        )

    def _anthropic_object(self, b: Batch) -> dict[str, Any]:
        ended = b.status == "ended"
        counts = dict.fromkeys(
            ("processing", "succeeded", "errored", "canceled", "expired"), 0
        )
        for n, r in enumerate(b.requests):
            counts[self._anthropic_kind(b, n, r) if ended else "processing"] += 1
        host = self.results_host or self.base
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": b.status,
            "request_counts": counts,
            "ended_at": "2026-12-01T00:00:00Z" if ended else None,
            "created_at": "2026-12-01T00:00:00Z",
            "expires_at": "2026-12-02T00:00:00Z",
            "archived_at": None,
            "cancel_initiated_at": "2026-12-01T00:00:01Z" if b.cancel else None,
            "results_url": f"{host}/messages/batches/{b.id}/results" if ended else None,
        }

    def _anthropic_line(self, b: Batch, n: int, r: dict[str, Any]) -> dict[str, Any]:
        kind = self._anthropic_kind(b, n, r)
        result: dict[str, Any] = {"type": kind}
        if kind == "succeeded":
            prompt = _prompt(r)
            result["message"] = {
                "id": f"msg_{n}",
                "type": "message",
                "role": "assistant",
                "model": r["body"]["model"],
                "content": [{"type": "text", "text": answer(prompt)}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 5},
            }
        elif kind == "errored":
            etype = {"400": "invalid_request_error", "overloaded": "overloaded_error"}
            t = etype.get(self._outcome(r), "api_error")
            result["error"] = {"type": "error", "error": {"type": t, "message": "no"}}
        return {"custom_id": r["custom_id"], "result": result}

    # -- both ----------------------------------------------------------------------------
    def _advance(self, b: Batch) -> None:
        b.polls += 1
        if b.status in ("failed", "completed", "expired", "cancelled", "ended"):
            return
        if b.cancel:
            b.processed = (
                b.processed if b.processed is not None else len(b.requests) // 2
            )
            b.status = "cancelled" if b.kind == "openai" else "ended"
        elif b.held or b.polls < self.polls_to_end:
            b.status = "in_progress"
            return
        elif b.kind == "openai":
            expired = any(self._outcome(r) == "expired" for r in b.requests)
            b.status = "expired" if expired else "completed"
        else:
            b.status = "ended"
        if b.kind == "openai":
            self._openai_files(b)

    def _processed(self, b: Batch) -> int:
        return len(b.requests) if b.processed is None else b.processed

    def _outcome(self, r: dict[str, Any]) -> str:
        return self.outcome(_prompt(r))


def _prompt(r: dict[str, Any]) -> str:
    content = r["body"]["messages"][-1]["content"]
    return content if isinstance(content, str) else json.dumps(content)


def _ok(r: dict[str, Any]) -> dict[str, Any]:
    prompt = _prompt(r)
    return {
        "status_code": 200,
        "request_id": "req_ok",
        "body": {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": r["body"]["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer(prompt)},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        },
    }


def _expired() -> dict[str, str]:
    return {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window "
        "expired.",
    }


def _anthropic_error(status: int, etype: str, message: str) -> Reply:
    return Reply.json(
        status, {"type": "error", "error": {"type": etype, "message": message}}
    )
