"""Record streams to a file; replay them offline through the same parser.

(With client.py, the only module that touches httpx2: replay is an HTTP transport.)

A recording is JSON Lines, one exchange a line: the request (path and body: no headers,
so no key) and the response (status, content type, and the raw body chunks with the
seconds between them). Replay is an HTTP transport under the normal client, so replayed
bytes go through exactly the code a live stream does.

Switch it on with ``NBSTREAM_RECORD=FILE`` or ``NBSTREAM_REPLAY=FILE_OR_DIR``
(``NBSTREAM_REPLAY_SPEED``: 1 keeps the recorded pace, 0 replays at once), with
``Client(record=…, replay=…)``, or with ``%%chat --record FILE`` / ``--replay FILE``.
Replay finds the exchange whose request equals the one being sent (in any order; the same
request twice replays its recordings in turn) and refuses one that matches nothing, saying
what differs from the closest recording.

>>> rec = Recording([])
>>> rec.describe_mismatch("/chat/completions", {"model": "m"})
'there are no recordings to replay'
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from .._core.errors import NbstreamError

__all__ = [
    "Exchange",
    "Recording",
    "RecordingTransport",
    "ReplayError",
    "ReplayTransport",
    "api_path",
]

FORMAT = "nbstream.recording"
VERSION = 1
_KEEP_HEADERS = ("content-type", "content-encoding", "x-request-id", "request-id")


class ReplayError(NbstreamError):
    """A request that no recording matches; the message says what differs."""


@dataclass
class Exchange:
    """One recorded request and its streamed response."""

    path: str
    body: Any
    status: int
    headers: dict[str, str]
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    # how the body broke after its chunks (e.g. "RemoteProtocolError: peer closed
    # connection …"), replayed as the same failure; None for a body that ended
    broke: str | None = None

    def to_json(self) -> str:
        chunks = []
        for dt, data in self.chunks:
            try:
                chunks.append([round(dt, 6), "t", data.decode("utf-8")])
            except UnicodeDecodeError:  # a chunk that splits a character
                chunks.append([round(dt, 6), "b", base64.b64encode(data).decode()])
        record = {
            "format": FORMAT,
            "version": VERSION,
            "request": {"path": self.path, "body": self.body},
            "response": {
                "status": self.status,
                "headers": self.headers,
                "chunks": chunks,
                **({"broke": self.broke} if self.broke else {}),
            },
        }
        line = json.dumps(record, ensure_ascii=False)
        try:
            line.encode()
        except UnicodeEncodeError:  # a lone surrogate (in a prompt): as its \\u escape
            line = json.dumps(record)
        return line

    @classmethod
    def from_json(cls, line: str, where: str) -> Exchange:
        d = json.loads(line)
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise ReplayError(
                f"{where} is not an nbstream recording of version {VERSION}: record it "
                "again with NBSTREAM_RECORD=FILE."
            )
        req, resp = d["request"], d["response"]
        chunks = [
            (float(dt), text.encode("utf-8") if kind == "t" else base64.b64decode(text))
            for dt, kind, text in resp["chunks"]
        ]
        return cls(
            req["path"],
            req["body"],
            resp["status"],
            resp["headers"],
            chunks,
            resp.get("broke"),
        )


def api_path(url_path: str) -> str:
    """``/v1/chat/completions`` → ``/chat/completions``: recordings do not depend on
    where the server was mounted."""
    for suffix in ("/chat/completions", "/messages"):
        if url_path.rstrip("/").endswith(suffix):
            return suffix
    return url_path


def _key(path: str, body: Any) -> str:
    return path + " " + json.dumps(body, sort_keys=True, ensure_ascii=False)


class Recording:
    """The exchanges of one or more recording files, looked up by request."""

    def __init__(self, exchanges: list[Exchange]) -> None:
        self.exchanges = exchanges
        self._queues: dict[str, list[Exchange]] = {}
        for ex in exchanges:
            self._queues.setdefault(_key(ex.path, ex.body), []).append(ex)
        self._served: dict[str, int] = {}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recording:
        """Load a ``.jsonl`` file, or every ``*.jsonl`` file in a folder."""
        p = Path(path)
        if not p.exists():
            raise ReplayError(
                f"Nothing to replay: {p} does not exist. Record first with "
                f"NBSTREAM_RECORD={p} (or %%chat --record {p})."
            )
        files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
        exchanges = []
        for f in files:
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    exchanges.append(Exchange.from_json(line, f"{f}:{n}"))
        return cls(exchanges)

    def take(self, path: str, body: Any) -> Exchange:
        """The recording for this request (the same request again: the next one)."""
        key = _key(path, body)
        queue = self._queues.get(key)
        if not queue:
            raise ReplayError(
                f"Replay has no recording of this request: {self.describe_mismatch(path, body)}. "
                "Record it (NBSTREAM_RECORD=FILE) or send what was recorded."
            )
        n = self._served.get(key, 0)
        self._served[key] = n + 1
        return queue[n % len(queue)]

    def describe_mismatch(self, path: str, body: Any) -> str:
        if not self.exchanges:
            return "there are no recordings to replay"
        same_path = [ex for ex in self.exchanges if ex.path == path]
        if not same_path:
            paths = sorted({ex.path for ex in self.exchanges})
            return f"the recordings are for {paths}, not {path!r} (another api?)"
        best = min(same_path, key=lambda ex: len(_differences(ex.body, body)))
        diffs = _differences(best.body, body)
        shown = "; ".join(diffs[:3]) + (
            f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
        )
        return f"the closest recording differs: {shown}"


def _differences(recorded: Any, asked: Any, where: str = "") -> list[str]:
    if isinstance(recorded, dict) and isinstance(asked, dict):
        out: list[str] = []
        for k in sorted(set(recorded) | set(asked)):
            at = f"{where}.{k}" if where else k
            if k not in asked:
                out.append(f"{at} was recorded but is not sent")
            elif k not in recorded:
                out.append(f"{at} is sent but was not recorded")
            else:
                out.extend(_differences(recorded[k], asked[k], at))
        return out
    if isinstance(recorded, list) and isinstance(asked, list):
        if len(recorded) != len(asked):
            return [f"{where} has {len(asked)} items, the recording {len(recorded)}"]
        out = []
        for i, (r, a) in enumerate(zip(recorded, asked, strict=True)):
            out.extend(_differences(r, a, f"{where}[{i}]"))
        return out
    if recorded != asked:
        return [f"{where} is {_short(asked)}, recorded {_short(recorded)}"]
    return []


def _short(v: Any) -> str:
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


class _ReplayBody(httpx2.AsyncByteStream):
    def __init__(
        self, chunks: list[tuple[float, bytes]], speed: float, broke: str | None
    ) -> None:
        self._chunks = chunks
        self._speed = speed
        self._broke = broke

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for dt, data in self._chunks:
            if self._speed > 0 and dt > 0:
                await asyncio.sleep(dt / self._speed)  # speed 2: twice as fast
            yield data
        if self._broke:  # the connection broke here when it was recorded
            kind, _, detail = self._broke.partition(": ")
            broken = getattr(httpx2, kind, None)
            if not (
                isinstance(broken, type) and issubclass(broken, httpx2.TransportError)
            ):
                broken = httpx2.ReadError
            raise broken(detail or self._broke)


class ReplayTransport(httpx2.AsyncBaseTransport):
    """Answers requests from a ``Recording`` instead of the network."""

    def __init__(self, recording: Recording, speed: float = 1.0) -> None:
        self.recording = recording
        self.speed = speed

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content or b"null")
        ex = self.recording.take(api_path(request.url.path), body)
        return httpx2.Response(
            ex.status,
            headers=ex.headers,
            stream=_ReplayBody(ex.chunks, self.speed, ex.broke),
            request=request,
        )


Scrub = Callable[[bytes], bytes]


class _RecordingBody(httpx2.AsyncByteStream):
    def __init__(
        self, inner: httpx2.Response, exchange: Exchange, sink: Path, scrub: Scrub
    ) -> None:
        self._inner = inner
        self._ex = exchange
        self._sink = sink
        self._scrub = scrub

    async def __aiter__(self) -> AsyncIterator[bytes]:
        last = time.perf_counter()
        try:
            async for data in self._inner.aiter_raw():
                now = time.perf_counter()
                self._ex.chunks.append((now - last, data))
                last = now
                yield data
        except (
            httpx2.TransportError
        ) as exc:  # recorded, to break the same way on replay
            self._ex.broke = f"{type(exc).__name__}: {exc}"
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()
        self._ex.chunks = _scrubbed(self._ex.chunks, self._scrub)
        self._sink.parent.mkdir(parents=True, exist_ok=True)
        with open(self._sink, "a", encoding="utf-8") as f:
            f.write(self._ex.to_json() + "\n")


def _scrubbed(
    chunks: list[tuple[float, bytes]], scrub: Scrub
) -> list[tuple[float, bytes]]:
    """The body with the key masked, in the same pieces: the key may lie across two of
    them, so the whole body is scrubbed (keeping its length) and cut where it was."""
    body = b"".join(data for _, data in chunks)
    clean = scrub(body)
    if clean == body:
        return chunks
    out, pos = [], 0
    for dt, data in chunks:
        out.append((dt, clean[pos : pos + len(data)]))
        pos += len(data)
    return out


class RecordingTransport(httpx2.AsyncBaseTransport):
    """Passes requests to the network and appends each exchange to ``path``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        verify: bool = True,
        inner: httpx2.AsyncBaseTransport | None = None,
        scrub: Scrub | None = None,
    ) -> None:
        self.path = Path(path)
        self.inner = inner or httpx2.AsyncHTTPTransport(verify=verify)
        self.scrub: Scrub = scrub or (lambda b: b)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.perf_counter()
        response = await self.inner.handle_async_request(request)
        scrub = self.scrub  # nothing the key could be in is written as it came
        headers = {
            k: scrub(v.encode()).decode("utf-8", "replace")
            for k, v in response.headers.items()
            if k.lower() in _KEEP_HEADERS
        }
        try:
            body = json.loads(scrub(request.content or b"null"))
        except ValueError:  # a mask cut through an escape sequence
            body = json.loads(request.content or b"null")
            body = json.loads(scrub(json.dumps(body).encode()))
        exchange = Exchange(
            api_path(request.url.path), body, response.status_code, headers
        )
        exchange.chunks.append((time.perf_counter() - started, b""))  # time to headers
        inner = httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=response.stream,
            request=request,
        )
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_RecordingBody(inner, exchange, self.path, self.scrub),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()
