"""A minimal HTTP/1.1 server that streams a pre-built OpenAI chat-completions reply.

Run it in its own process so its CPU is not counted against the client being measured::

    python -m bench.server            # prints "PORT <n>" on stdout, then serves

``POST /v1/chat/completions`` answers with ``N`` content chunks, a finish chunk, a usage
chunk and ``data: [DONE]``. ``N`` comes from the ``x-bench-chunks`` header, or the ``n``
query parameter, or an ``x_bench_chunks`` field in the JSON request body (which wins);
the default is 1000. The body is built once per ``N`` (and cached) and
written as fast as the socket takes it, with chunked transfer encoding framed by
``x-bench-framing`` (or ``framing=``):

- ``event`` (the default): one HTTP chunk per SSE event, as a real server flushes each
  event as it is generated. A client's HTTP layer then handles one chunk per event.
- ``bulk``: 64 KiB HTTP chunks that cut events anywhere, as a buffering proxy sends them.

With ``x-bench-pace: SECONDS`` (or ``pace=``) each event is instead written on its own,
that long after the previous one ("trickle": one event per socket read, as when a model
generates tokens live).

Connections are kept alive (HTTP/1.1 keep-alive), so a client that reuses its pool pays
for the TCP handshake once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "FRAMINGS",
    "MODEL",
    "body_size",
    "build_events",
    "expected_text",
    "main",
    "words",
]

MODEL = "gpt-4o-mini"
RESPONSE_ID = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
CREATED = 1741570283
DEFAULT_CHUNKS = 1000
_WRITE_SLICE = 256 * 1024
BULK_CHUNK = 64 * 1024
FRAMINGS = ("event", "bulk")
# Tokens as a chat model emits them: mostly a leading space and a short word, some
# punctuation and newlines (escaped as \n in the JSON). ASCII only, so the reply's size
# in bytes is its length in characters.
_VOCAB = (
    " The", " stream", " of", " tokens", " arrives", " one", " at", " a", " time",
    ",", " and", " each", " chunk", " carries", " only", " the", " new", " text", ".",
    " We", " keep", " every", " piece", " in", " a", " list", " then", " join", " once",
    "\n\n", " Notebook", " output", " updates", " twenty", " times", " per", " second",
    ":", " fast", " enough", " for", " reading", "!", " Why", "?", " because",
    " rendering", " is", " the", " costly", " part", "\n", "-", " item",
)  # fmt: skip


def words(n: int) -> list[str]:
    """The ``n`` content deltas of the reply, deterministic."""
    vocab = _VOCAB
    size = len(vocab)
    return [vocab[(i * 7 + i // size) % size] for i in range(n)]


def expected_text(n: int) -> str:
    """The reply's full text: what every client must end up with."""
    return "".join(words(n))


def _chunk(choices: list[object], **extra: object) -> str:
    obj: dict[str, object] = {
        "id": RESPONSE_ID,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": choices,
        **extra,
    }
    return json.dumps(obj, separators=(",", ":"))


def build_events(n: int) -> list[bytes]:
    """The SSE events of an ``n``-chunk reply, each ``data: …\\n\\n``."""
    datas = [
        _chunk(
            [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "finish_reason": None,
                }
            ]
        )
    ]
    prefix = _chunk([{"index": 0, "delta": {"content": "\x00"}, "finish_reason": None}])
    head, _, tail = prefix.partition('"\\u0000"')
    datas.extend(head + json.dumps(w) + tail for w in words(n))
    datas.append(_chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    usage = {"prompt_tokens": 9, "completion_tokens": n, "total_tokens": n + 9}
    datas.append(_chunk([], usage=usage))
    datas.append("[DONE]")
    return [f"data: {d}\n\n".encode() for d in datas]


def body_size(n: int) -> int:
    """The size of the decoded body (what a client's ``aiter_bytes`` yields)."""
    return sum(map(len, build_events(n)))


def _framed(pieces: list[bytes]) -> list[bytes]:
    """Chunked transfer encoding, one HTTP chunk per piece, plus the last chunk."""
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


class _Server:
    def __init__(self) -> None:
        self._events: dict[int, list[bytes]] = {}
        self._bodies: dict[tuple[int, str], bytes] = {}

    def events(self, n: int) -> list[bytes]:
        events = self._events.get(n)
        if events is None:
            events = self._events[n] = build_events(n)
        return events

    def body(self, n: int, framing: str) -> bytes:
        body = self._bodies.get((n, framing))
        if body is None:
            events = self.events(n)
            if framing == "bulk":
                raw = b"".join(events)
                pieces = [
                    raw[i : i + BULK_CHUNK] for i in range(0, len(raw), BULK_CHUNK)
                ]
            else:
                pieces = events
            body = self._bodies[n, framing] = b"".join(_framed(pieces))
        return body

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass
        except asyncio.CancelledError:
            pass  # the server is shutting down with this connection idle
        finally:
            writer.close()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False  # the client closed an idle keep-alive connection
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        url = urlsplit(target)
        query = parse_qs(url.query)
        if method != "POST" or not url.path.endswith("/chat/completions"):
            return await _error(writer, "404 Not Found", "not found")
        try:
            n = int(
                _body_chunks(body)
                or headers.get("x-bench-chunks")
                or query.get("n", [DEFAULT_CHUNKS])[0]
            )
            pace = float(headers.get("x-bench-pace") or query.get("pace", [0.0])[0])
        except ValueError as exc:
            return await _error(writer, "400 Bad Request", str(exc))
        framing = headers.get("x-bench-framing") or query.get("framing", ["event"])[0]
        if framing not in FRAMINGS:
            return await _error(
                writer, "400 Bad Request", f"framing: one of {FRAMINGS}"
            )
        close = headers.get("connection", "").lower() == "close"
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
            + (b"connection: close\r\n" if close else b"")
            + b"\r\n"
        )
        if pace > 0:
            await self._trickle(_framed(self.events(n)), pace, writer)
        else:
            body = self.body(n, framing)
            view = memoryview(body)
            for start in range(0, len(body), _WRITE_SLICE):
                writer.write(view[start : start + _WRITE_SLICE])
                await writer.drain()
        await writer.drain()
        return not close

    @staticmethod
    async def _trickle(
        framed: list[bytes], pace: float, writer: asyncio.StreamWriter
    ) -> None:
        """One event per write, ``pace`` seconds apart (on a schedule, so sleep's
        overshoot does not add up)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, piece in enumerate(framed):
            delay = start + i * pace - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(piece)
            await writer.drain()


def _body_chunks(body: bytes) -> int | None:
    """``x_bench_chunks`` in the JSON request body, if any (it beats the header)."""
    if b"x_bench_chunks" not in body:
        return None
    value = json.loads(body).get("x_bench_chunks")
    return int(value) if value is not None else None


async def _error(writer: asyncio.StreamWriter, status: str, message: str) -> bool:
    msg = json.dumps({"error": {"message": message}}).encode()
    writer.write(
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"\r\n%s" % (status.encode(), len(msg), msg)
    )
    await writer.drain()
    return True


async def _serve(host: str, port: int, prebuild: list[int], watch_stdin: bool) -> None:
    server = _Server()
    for n in prebuild:
        for framing in FRAMINGS:
            server.body(n, framing)
    srv = await asyncio.start_server(server.handle, host, port)
    sys.stdout.write(f"PORT {srv.sockets[0].getsockname()[1]}\n")
    sys.stdout.flush()
    if watch_stdin:
        # Serve until stdin closes: the parent process ended or closed the pipe.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        srv.close()
    else:
        await srv.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--prebuild",
        type=int,
        nargs="*",
        default=[],
        help="chunk counts whose bodies to build before printing the port",
    )
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="stop when stdin closes (how bench.engine ties the server to itself)",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port, args.prebuild, args.exit_on_stdin_eof))


if __name__ == "__main__":
    main()
