"""Benchmark of the streaming engine: CPU per chunk, memory, cold start, import time.

One OpenAI-format stream is served on loopback by ``bench.server`` (a separate process,
so its CPU is not counted) to the contenders in this process, interleaved round by
round: nbstream ``achat``, nbstream ``chat`` (sync), the openai SDK
``create(stream=True)``, plain httpx2 + ``httpx2.EventSource`` + ``json.loads``, and two
fair baselines with our own SSE split and orjson: over httpx2's body bytes, and over a
raw asyncio connection with our own HTTP/1.1 chunked decoding; plus a floor, httpx2
reading the body and doing nothing with it. Every run is checked: each contender must
end up with the whole reply text. Then the core alone from memory, the SSE decoder on
one 15 MiB event in small and large pieces, memory, and cold start.

    python -m bench.engine            # the full run (~2 min idle on 2 cores, ~5 loaded)
    python -m bench.engine --quick    # smaller counts, fewer rounds (~20 s)
    python -m bench.engine --profile 100000   # cProfile of one nbstream achat
    python -m bench.engine --ladder 100000    # httpx2 + orjson → nbstream, step by step

Prints markdown tables and writes ``bench/results/engine.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
import orjson

import nbstream
from bench.server import BULK_CHUNK, FRAMINGS, MODEL, body_size, build_events
from bench.server import expected_text as _expected_text
from nbstream._core.events import TextDelta
from nbstream._core.pipeline import Pipeline
from nbstream._core.providers import provider_for
from nbstream._core.sse import SSEDecoder
from nbstream._core.transcript import Request, Turn
from nbstream._http.settings import Timeouts
from nbstream._http.transport import HTTP

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
API_KEY = "sk-bench"
PROMPT = "hi"

NB_ASYNC = "nbstream achat (h1)"
NB_SYNC = "nbstream chat (sync, h1)"
NB_ASYNC_HTTPX = "nbstream achat (httpx2)"
NB_SYNC_HTTPX = "nbstream chat (sync, httpx2)"
NBSTREAMS = (NB_ASYNC, NB_SYNC, NB_ASYNC_HTTPX, NB_SYNC_HTTPX)
OPENAI = "openai SDK create(stream=True)"
HTTPX = "httpx2 + EventSource + json"
HTTPX_ORJSON = "httpx2 bytes + orjson"
RAW_ORJSON = "asyncio + own dechunking + orjson"
FLOOR = "floor: httpx2 aiter_bytes, no parsing"
FLOOR_H1 = "floor: nbstream h1 body(), no parsing"
CONTENDERS = (
    *NBSTREAMS,
    OPENAI,
    HTTPX,
    HTTPX_ORJSON,
    RAW_ORJSON,
    FLOOR,
    FLOOR_H1,
)
LADDER_DECODER = "httpx2 bytes + nbstream SSEDecoder + orjson"
LADDER_PARSER = "httpx2 bytes + nbstream SSEDecoder + openai parser"
LADDER_PIPELINE = "httpx2 bytes + nbstream Pipeline (+ accumulator, turn)"
# From httpx2 alone to the whole nbstream client, one piece of nbstream at a time;
# then the same client on h1, from h1's own floor.
LADDER = (
    FLOOR,
    HTTPX_ORJSON,
    LADDER_DECODER,
    LADDER_PARSER,
    LADDER_PIPELINE,
    NB_ASYNC_HTTPX,
    FLOOR_H1,
    NB_ASYNC,
)
# the row each ladder step is counted from (the row above, unless said here)
LADDER_FROM = {FLOOR_H1: FLOOR, NB_ASYNC: FLOOR_H1}

# Targets from the issue.
TARGET_US_PER_CHUNK = 15.0
TARGET_SCALING = 1.15
TARGET_MEMORY_RATIO = 3.0
TARGET_COLD_MS = 20.0
TARGET_VS_ORJSON = 1.25  # nbstream over httpx2 bytes + orjson, event framing
TARGET_SSE_PIECES_RATIO = 2.0  # a big event in small pieces: linear, not quadratic

Runner = Callable[[], Awaitable[str]] | Callable[[], str]


@dataclass(frozen=True)
class Plan:
    """What one run measures; ``--quick`` is a smaller one."""

    sizes: tuple[int, ...]
    rounds: dict[int, int]  # rounds per size (every framing)
    openai_rounds: int  # the openai SDK joins only this many rounds at sizes >= 50k
    trickle_chunks: int
    trickle_pace: float
    trickle_rounds: int
    memory_sizes: tuple[int, ...]
    cold_processes: int
    cold_chunks: int
    openai_cold_processes: int
    breakdown_reps: int


FULL = Plan(
    sizes=(1_000, 10_000, 100_000),
    rounds={1_000: 11, 10_000: 7, 100_000: 4},
    openai_rounds=1,
    trickle_chunks=500,
    trickle_pace=0.001,
    trickle_rounds=3,
    memory_sizes=(10_000, 100_000),
    cold_processes=5,
    cold_chunks=100,
    openai_cold_processes=3,
    breakdown_reps=2,
)
QUICK = Plan(
    sizes=(1_000, 4_000),
    rounds={1_000: 3, 4_000: 3},
    openai_rounds=3,
    trickle_chunks=200,
    trickle_pace=0.001,
    trickle_rounds=1,
    memory_sizes=(4_000,),
    cold_processes=2,
    cold_chunks=100,
    openai_cold_processes=0,
    breakdown_reps=1,
)

_EXPECTED: dict[int, str] = {}


def expected_text(n: int) -> str:
    text = _EXPECTED.get(n)
    if text is None:
        text = _EXPECTED[n] = _expected_text(n)
    return text


# -- the server process -------------------------------------------------------------


@contextmanager
def serve(prebuild: tuple[int, ...]) -> Iterator[str]:
    """Start ``bench.server`` in its own process; yield its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.server",
            "--exit-on-stdin-eof",
            "--prebuild",
            *map(str, prebuild),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"bench.server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the server exits when its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- the contenders -----------------------------------------------------------------


class DataLines:
    """The fair baselines' own SSE split: the ``data:`` lines of a body fed in any
    chunking, each parsed with orjson, the delta texts kept in a list.

    LF line ends only (what LLM providers send); a line cut across two feeds is
    joined. ``[DONE]`` is skipped, and so are chunks without choices (usage).
    """

    __slots__ = ("parts", "rest")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.rest = b""

    def feed(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        parts, loads = self.parts, orjson.loads
        for line in lines:
            if line[:5] == b"data:" and line != b"data: [DONE]":
                choices = loads(line[6:] if line[5:6] == b" " else line[5:])["choices"]
                if choices:
                    content = choices[0]["delta"].get("content")
                    if content:
                        parts.append(content)

    def text(self) -> str:
        return "".join(self.parts)


class Dechunker:
    """HTTP/1.1 chunked transfer decoding of a body read in any pieces.

    ``feed(bytes) -> [chunk data, …]``; ``done`` once the last chunk and the (empty)
    trailer have arrived.
    """

    __slots__ = ("_head", "_left", "_skip", "_trailer", "done")

    def __init__(self) -> None:
        self._head = b""  # an unfinished chunk-size or trailer line
        self._left = 0  # bytes of chunk data still to come
        self._skip = 0  # bytes of the CRLF after the chunk data still to skip
        self._trailer = False
        self.done = False

    def feed(self, block: bytes) -> list[bytes]:
        out: list[bytes] = []
        buf = self._head + block if self._head else block
        pos, end = 0, len(buf)
        while pos < end and not self.done:
            if self._left:
                stop = min(end, pos + self._left)
                out.append(buf[pos:stop])
                self._left -= stop - pos
                pos = stop
            elif self._skip:
                step = min(end - pos, self._skip)
                self._skip -= step
                pos += step
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                line = buf[pos:eol]
                pos = eol + 2
                if self._trailer:
                    self.done = not line  # trailer fields end with an empty line
                    continue
                size = int(line.partition(b";")[0], 16)
                if size:
                    self._left, self._skip = size, 2
                else:
                    self._trailer = True
        self._head = buf[pos:]
        if self.done and self._head:
            raise ValueError(f"{len(self._head)} bytes after the end of the body")
        return out


class Contenders:
    """The clients for one stream (size, framing, pace); built once, then reused."""

    def __init__(
        self,
        base_url: str,
        n: int,
        framing: str = "event",
        pace: float = 0.0,
        *,
        keep_raw_events: bool = False,
    ) -> None:
        self.base_url = base_url
        self.n = n
        self.expected = expected_text(n)
        self.body_size = body_size(n)
        self.headers = {"x-bench-chunks": str(n), "x-bench-framing": framing}
        if pace:
            self.headers["x-bench-pace"] = repr(pace)
        self.nb, self.nb_httpx = (
            nbstream.Client(
                base_url=base_url,
                model=MODEL,
                api_key=API_KEY,
                headers=self.headers,
                max_retries=0,
                keep_raw_events=keep_raw_events,
                http=http,
            )
            for http in ("h1", "httpx2")
        )
        self.h1: HTTP | None = None  # the h1 floor's connections (built on the loop)
        self.oai = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=API_KEY,
            max_retries=0,
            default_headers=self.headers,
        )
        self.http = httpx2.AsyncClient(timeout=None)
        self.raw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def nb_achat(self) -> str:
        turn = await self.nb.achat(PROMPT)
        return turn.text

    def nb_chat(self) -> str:
        return self.nb.chat(PROMPT).text

    async def nb_achat_httpx(self) -> str:
        turn = await self.nb_httpx.achat(PROMPT)
        return turn.text

    def nb_chat_httpx(self) -> str:
        return self.nb_httpx.chat(PROMPT).text

    async def openai_sdk(self) -> str:
        parts: list[str] = []
        stream = await self.oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices:
                    content = chunk.choices[0].delta.content
                    if content:
                        parts.append(content)
        return "".join(parts)

    def _request(self) -> tuple[str, dict[str, Any], dict[str, str]]:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {
            "authorization": f"Bearer {API_KEY}",
            "accept": "text/event-stream",
            **self.headers,
        }
        return self.base_url + "/chat/completions", body, headers

    async def httpx_es(self) -> str:
        parts: list[str] = []
        url, body, headers = self._request()
        async with self.http.stream("POST", url, json=body, headers=headers) as r:
            r.raise_for_status()
            async for sse in httpx2.EventSource(r):
                if sse.data == "[DONE]":
                    continue  # read to the end: the connection goes back to the pool
                obj = json.loads(sse.data)
                for ch in obj.get("choices") or ():
                    content = ch["delta"].get("content")
                    if content:
                        parts.append(content)
        return "".join(parts)

    async def httpx_orjson(self) -> str:
        """httpx2's body bytes, our own SSE split, orjson."""
        lines = DataLines()
        url, body, headers = self._request()
        async with self.http.stream("POST", url, json=body, headers=headers) as r:
            r.raise_for_status()
            async for data in r.aiter_bytes():
                lines.feed(data)
        return lines.text()

    async def raw_orjson(self) -> str:
        """One asyncio connection (kept alive), our own HTTP/1.1 request and chunked
        decoding, the same SSE split and orjson: the cost without an HTTP library."""
        url, body, headers = self._request()
        parts = urlsplit(url)
        if self.raw is None or self.raw[1].is_closing():
            self.raw = await asyncio.open_connection(parts.hostname, parts.port)
        reader, writer = self.raw
        payload = orjson.dumps(body)
        head = [
            f"POST {parts.path} HTTP/1.1",
            f"host: {parts.netloc}",
            "content-type: application/json",
            f"content-length: {len(payload)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        response = await reader.readuntil(b"\r\n\r\n")
        if not response.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(response.decode("latin-1"))
        if b"\r\ntransfer-encoding: chunked\r\n" not in response.lower():
            raise RuntimeError("expected a chunked body")
        dechunk, lines = Dechunker(), DataLines()
        while not dechunk.done:
            block = await reader.read(256 * 1024)
            if not block:
                raise ConnectionError("the server closed the connection mid-body")
            pieces = dechunk.feed(block)
            if pieces:
                lines.feed(pieces[0] if len(pieces) == 1 else b"".join(pieces))
        return lines.text()

    # The ladder (--ladder): httpx2 bytes + orjson, then nbstream's core put in one
    # piece at a time, up to the whole client.

    async def httpx_decoder(self) -> str:
        """httpx2 bytes, nbstream's SSEDecoder, orjson."""
        parts: list[str] = []
        dec = SSEDecoder()
        url, body, headers = self._request()
        async with self.http.stream("POST", url, json=body, headers=headers) as r:
            r.raise_for_status()
            async for data in r.aiter_bytes():
                for sse in dec.feed(data):
                    if sse.data != "[DONE]":
                        choices = orjson.loads(sse.data)["choices"]
                        if choices:
                            content = choices[0]["delta"].get("content")
                            if content:
                                parts.append(content)
        dec.close()
        return "".join(parts)

    async def httpx_parser(self) -> str:
        """httpx2 bytes, nbstream's SSEDecoder and openai parser (neutral events)."""
        parts: list[str] = []
        dec, parser = SSEDecoder(), provider_for("openai").parser()
        url, body, headers = self._request()
        async with self.http.stream("POST", url, json=body, headers=headers) as r:
            r.raise_for_status()
            async for data in r.aiter_bytes():
                for sse in dec.feed(data):
                    for ev in parser.parse(sse):
                        if type(ev) is TextDelta:
                            parts.append(ev.text)
        dec.close()
        return "".join(parts)

    async def httpx_pipeline(self) -> str:
        """httpx2 bytes into nbstream's Pipeline: decoder, parser, accumulator, turn."""
        url, body, headers = self._request()
        turn = Turn(Request([], MODEL, "openai", url))
        pipe = Pipeline("openai", turn)
        t0 = time.perf_counter()
        async with self.http.stream("POST", url, json=body, headers=headers) as r:
            r.raise_for_status()
            async for data in r.aiter_bytes():
                pipe.feed(data, time.perf_counter() - t0)
        pipe.close(time.perf_counter() - t0)
        return turn.text

    async def floor(self) -> str:
        """Read the body and throw it away: the HTTP layer's own cost."""
        size = 0
        url, body, headers = self._request()
        async with self.http.stream("POST", url, json=body, headers=headers) as r:
            r.raise_for_status()
            async for data in r.aiter_bytes():
                size += len(data)
        return self.expected if size == self.body_size else f"{size} bytes"

    async def floor_h1(self) -> str:
        """nbstream's own HTTP/1.1 client reading the body (its fast path) and
        throwing it away: what h1 costs, as ``floor`` is what httpx2 costs."""
        size = 0
        url, body, headers = self._request()
        if self.h1 is None:
            self.h1 = HTTP(self.base_url, Timeouts(), http="h1")
        response = await self.h1.send(url, body, headers)
        try:
            async for data in response.body():
                size += len(data)
        finally:
            await response.aclose()
        return self.expected if size == self.body_size else f"{size} bytes"

    def runner(self, name: str) -> Runner:
        runners: dict[str, Runner] = {
            NB_ASYNC: self.nb_achat,
            NB_SYNC: self.nb_chat,
            NB_ASYNC_HTTPX: self.nb_achat_httpx,
            NB_SYNC_HTTPX: self.nb_chat_httpx,
            FLOOR_H1: self.floor_h1,
            OPENAI: self.openai_sdk,
            HTTPX: self.httpx_es,
            HTTPX_ORJSON: self.httpx_orjson,
            RAW_ORJSON: self.raw_orjson,
            FLOOR: self.floor,
            LADDER_DECODER: self.httpx_decoder,
            LADDER_PARSER: self.httpx_parser,
            LADDER_PIPELINE: self.httpx_pipeline,
        }
        return runners[name]

    async def aclose(self) -> None:
        for nb in (self.nb, self.nb_httpx):
            await nb.aclose()
            nb.close()
        if self.h1 is not None:
            await self.h1.aclose()
        await self.oai.close()
        await self.http.aclose()
        if self.raw is not None:
            self.raw[1].close()
            await self.raw[1].wait_closed()


@dataclass
class Bench:
    """Runs contenders on one persistent event loop (so connection pools persist)."""

    runner: asyncio.Runner = field(default_factory=asyncio.Runner)

    def call(self, fn: Runner) -> str:
        result = fn()
        if isinstance(result, str):
            return result
        return self.runner.run(_awaited(result))

    def measure(self, fn: Runner, expected: str) -> float:
        """CPU seconds (this process, every thread) of one request; checks the text."""
        gc.collect()
        c0 = time.process_time()
        text = self.call(fn)
        cpu = time.process_time() - c0
        if text != expected:
            raise AssertionError(
                f"{getattr(fn, '__name__', fn)} got {len(text)} characters of text, "
                f"expected {len(expected)}"
            )
        return cpu


async def _awaited(aw: Awaitable[str]) -> str:
    return await aw


# -- CPU per chunk ------------------------------------------------------------------


def cpu_rounds(
    bench: Bench,
    groups: dict[str, Contenders],
    rounds: dict[str, int],
    openai_rounds: int,
    log: Callable[[str], None],
) -> dict[str, dict[str, list[float]]]:
    """Interleave every contender and every group round by round.

    In a round each contender (in turn, rotating who starts) runs every group, so one
    contender's sizes run back to back: their ratio, taken per round, is paired against
    the machine's load of the moment. Returns ``{group: {contender: [CPU µs per chunk,
    one per round]}}``: sample ``i`` of every list is from round ``i``.
    """
    samples = {g: {c: list[float]() for c in CONTENDERS} for g in groups}
    for c in groups.values():  # warm-up: connections, lazy imports, server caches
        if c.n < 50_000:  # (a big stream's few ms of setup are noise)
            for name in CONTENDERS:
                bench.measure(c.runner(name), c.expected)
    # What is alive now (modules, clients) is no contender's garbage: freeze it, so a
    # collection costs each contender its own objects only (and gc.collect() is fast).
    gc.collect()
    gc.freeze()
    total = max(rounds.values())
    for r in range(total):
        t0 = time.perf_counter()
        k = r % len(CONTENDERS)  # rotate who goes first
        for name in CONTENDERS[k:] + CONTENDERS[:k]:
            for g, c in groups.items():
                if r >= rounds[g]:
                    continue
                if name == OPENAI and c.n >= 50_000 and r >= openai_rounds:
                    continue  # ~10 s a run: a few rounds are enough for a reference
                cpu = bench.measure(c.runner(name), c.expected)
                samples[g][name].append(cpu / c.n * 1e6)
        log(f"  round {r + 1}/{total}: {time.perf_counter() - t0:.1f} s")
    gc.unfreeze()
    return samples


# -- where the time goes (no HTTP) --------------------------------------------------


def breakdown(n: int, reps: int) -> dict[str, float]:
    """CPU µs per chunk of nbstream's core alone, fed from memory (no HTTP, no loop)."""
    events = build_events(n)
    raw = b"".join(events)
    blocks = [raw[i : i + BULK_CHUNK] for i in range(0, len(raw), BULK_CHUNK)]
    expected = expected_text(n)

    def pipeline(pieces: list[bytes]) -> float:
        turn = Turn(Request([], MODEL, "openai", "http://bench"))
        pipe = Pipeline("openai", turn)
        c0 = time.process_time()
        for i, piece in enumerate(pieces):
            pipe.feed(piece, i * 1e-4)
        pipe.close(1.0)
        text = turn.text
        cpu = time.process_time() - c0
        assert text == expected
        return cpu

    def decoder(pieces: list[bytes]) -> float:
        dec = SSEDecoder()
        c0 = time.process_time()
        for piece in pieces:
            dec.feed(piece)
        dec.close()
        return time.process_time() - c0

    def json_only(pieces: list[bytes], loads: Callable[[bytes], Any]) -> float:
        datas = [e[6:-2] for e in pieces[:-1]]  # "data: " … "\n\n", not [DONE]
        c0 = time.process_time()
        for d in datas:
            loads(d)
        return time.process_time() - c0

    async def timeouts() -> float:
        c0 = time.process_time()
        for _ in range(n):
            async with asyncio.timeout(300.0):
                pass
        return time.process_time() - c0

    cases: dict[str, Callable[[], float]] = {
        "nbstream Pipeline.feed, one event per feed": lambda: pipeline(events),
        "nbstream Pipeline.feed, 64 KiB per feed": lambda: pipeline(blocks),
        "of which SSEDecoder.feed, one event per feed": lambda: decoder(events),
        "json.loads of each chunk alone (reference)": lambda: json_only(
            events, json.loads
        ),
        "orjson.loads of each chunk alone (reference)": lambda: json_only(
            events, orjson.loads
        ),
        "asyncio.timeout() enter+exit, once per read": lambda: asyncio.run(timeouts()),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, case in cases.items():
            gc.collect()
            samples[name].append(case() / n * 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


SSE_BIG_EVENT = 15 * 1024 * 1024
SSE_PIECES = (4 * 1024, 64 * 1024)


def sse_big_event(reps: int) -> dict[str, float]:
    """CPU of ``SSEDecoder`` for one 15 MiB event cut in 4 KiB and in 64 KiB pieces.

    Re-joining the pending line with every chunk made this quadratic (14.6 s against
    1.0 s); decoding linear in the bytes costs about the same for both. The minimum
    of ``reps`` interleaved runs of each.
    """
    body = b"data: " + b"x" * SSE_BIG_EVENT + b"\n\n"
    cpu: dict[int, list[float]] = {p: [] for p in SSE_PIECES}
    for _ in range(reps):
        for piece in SSE_PIECES:
            chunks = [body[i : i + piece] for i in range(0, len(body), piece)]
            gc.collect()
            dec = SSEDecoder()
            c0 = time.process_time()
            events = [e for c in chunks for e in dec.feed(c)] + dec.close()
            cpu[piece].append(time.process_time() - c0)
            assert [len(e.data) for e in events] == [SSE_BIG_EVENT]
            del chunks, events
    small, large = (min(cpu[p]) for p in SSE_PIECES)
    return {
        "event_bytes": SSE_BIG_EVENT,
        "small_piece": SSE_PIECES[0],
        "large_piece": SSE_PIECES[1],
        "small_ms": small * 1e3,
        "large_ms": large * 1e3,
        "ratio": small / large,
    }


# -- memory -------------------------------------------------------------------------


def memory(
    bench: Bench, base_url: str, n: int, framing: str, who: str
) -> dict[str, Any]:
    """tracemalloc growth over one request of ``n`` chunks, reply text included.

    ``who``: "nbstream" (on h1), "nbstream (httpx2)", "nbstream keep_raw_events",
    "httpx2 + EventSource", or a floor: "floor" (httpx2 reading the body and keeping
    nothing: the HTTP layer's share), "floor: h1" (the same on h1).
    """
    keep_raw = who == "nbstream keep_raw_events"
    c = Contenders(base_url, n, framing, keep_raw_events=keep_raw)
    holder: list[object] = []
    plain = {
        "httpx2 + EventSource": c.httpx_es,
        "floor": c.floor,
        "floor: h1": c.floor_h1,
    }

    async def once() -> str:
        if who in plain:
            text = await plain[who]()
            holder.append(text)
            return text
        nb = c.nb_httpx if who == "nbstream (httpx2)" else c.nb
        turn = await nb.achat(PROMPT)
        holder.append(turn)  # the turn is what the user keeps
        return turn.text  # and reading the text once is part of the request

    async def warm() -> None:  # 1-chunk requests (the body field beats the header)
        for nb in (c.nb, c.nb_httpx):
            await nb.achat(PROMPT, x_bench_chunks=1)
        url, body, headers = c._request()
        body["x_bench_chunks"] = 1
        (await c.http.post(url, json=body, headers=headers)).raise_for_status()
        c.h1 = HTTP(c.base_url, Timeouts(), http="h1")
        response = await c.h1.send(url, body, headers)
        await response.read(1 << 20)

    bench.runner.run(warm())  # the connection pools exist before we trace
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        text = bench.runner.run(once())
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if text != c.expected:
        raise AssertionError(f"{who} got a different text under tracemalloc")
    reply = len(text.encode())
    holder.clear()
    del text
    bench.runner.run(c.aclose())
    return {
        "who": who,
        "chunks": n,
        "framing": framing,
        "reply_bytes": reply,
        "peak_bytes": peak - base,
        "retained_bytes": current - base,
        "peak_ratio": (peak - base) / reply,
        "retained_ratio": (current - base) / reply,
    }


# -- cold start and import time -----------------------------------------------------

_COLD_NBSTREAM = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import nbstream
    t1 = time.perf_counter()
    t2 = time.perf_counter()
    client = nbstream.Client(base_url=sys.argv[1], model="gpt-4o-mini",
                             api_key="sk-bench", http=sys.argv[3],
                             headers={"x-bench-chunks": sys.argv[2]})
    times = []
    for _ in range(4):
        s = time.perf_counter()
        turn = client.chat("hi")
        times.append(time.perf_counter() - s)
        assert turn.status == "complete", turn
    print(json.dumps({"import_s": t1 - t0, "extra_import_s": t2 - t1,
                      "requests_s": times}))
    """
)

_COLD_OPENAI = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import openai
    t1 = time.perf_counter()
    client = openai.OpenAI(base_url=sys.argv[1], api_key="sk-bench",
                           default_headers={"x-bench-chunks": sys.argv[2]})
    times = []
    for _ in range(4):
        s = time.perf_counter()
        with client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
            stream=True,
        ) as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        times.append(time.perf_counter() - s)
        assert text
    print(json.dumps({"import_s": t1 - t0, "extra_import_s": 0.0,
                      "requests_s": times}))
    """
)


def cold_start(
    script: str, base_url: str, n: int, processes: int, variant: str = ""
) -> dict[str, Any] | None:
    """Fresh processes, wall clock: import, the first request, and warm ones.

    nbstream's modules are compiled to bytecode first, as installing a wheel does (pip
    compiles what it installs; an editable install here, with PYTHONDONTWRITEBYTECODE
    set, would otherwise compile a lazily imported module inside the first request)."""
    if processes <= 0:
        return None
    compileall.compile_dir(ROOT / "nbstream", quiet=1)
    runs: list[dict[str, Any]] = []
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    for _ in range(processes):
        out = subprocess.run(
            [sys.executable, "-c", script, base_url, str(n), variant],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    firsts = [r["requests_s"][0] for r in runs]
    warms = [statistics.median(r["requests_s"][1:]) for r in runs]
    penalties = [f - w for f, w in zip(firsts, warms, strict=True)]
    return {
        "processes": processes,
        "chunks": n,
        "import_ms": _ms(statistics.median(r["import_s"] for r in runs)),
        "extra_import_ms": _ms(statistics.median(r["extra_import_s"] for r in runs)),
        "first_request_ms": _ms(statistics.median(firsts)),
        "warm_request_ms": _ms(statistics.median(warms)),
        "first_minus_warm_ms": _ms(statistics.median(penalties)),
        "runs": runs,
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# -- profile ------------------------------------------------------------------------


def profile(bench: Bench, base_url: str, n: int, framing: str, top: int = 25) -> str:
    """cProfile of one nbstream ``achat`` of ``n`` chunks, top functions by own time."""
    c = Contenders(base_url, n, framing)
    bench.call(c.nb_achat)  # warm
    prof = cProfile.Profile()
    prof.enable()
    text = bench.call(c.nb_achat)
    prof.disable()
    assert text == c.expected
    bench.runner.run(c.aclose())
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


# -- the ladder ---------------------------------------------------------------------


def ladder(bench: Bench, base_url: str, n: int, framing: str, rounds: int) -> str:
    """CPU per chunk from httpx2 bytes + orjson to nbstream achat, one piece at a time.

    Every step is measured over HTTP in the same interleaved rounds, so each piece of
    nbstream is costed where it runs (next to h11 and the event loop), which is more
    than it costs from memory.
    """
    c = Contenders(base_url, n, framing)
    for name in LADDER:  # warm-up
        bench.measure(c.runner(name), c.expected)
    gc.collect()
    gc.freeze()
    samples: dict[str, list[float]] = {name: [] for name in LADDER}
    for r in range(rounds):
        k = r % len(LADDER)
        for name in LADDER[k:] + LADDER[:k]:
            cpu = bench.measure(c.runner(name), c.expected)
            samples[name].append(cpu / n * 1e6)
    gc.unfreeze()
    bench.runner.run(c.aclose())
    lines = [
        f"{framing} framing, {_label(n)} chunks, {rounds} interleaved rounds; CPU µs "
        "per chunk, median (min), and the step from the row above (medians):",
        "",
        "| step | CPU µs per chunk | + |",
        "|---|---|---|",
    ]
    prev: str | None = None
    for name in LADDER:
        med = _median(samples[name])
        base = LADDER_FROM.get(name, prev)
        step = "" if base is None else f"{med - _median(samples[base]):+.1f}"
        if name in LADDER_FROM:
            step += f" (from {LADDER_FROM[name].split(':')[0]})"
        lines.append(f"| {name} | {med:.1f} ({min(samples[name]):.1f}) | {step} |")
        prev = name
    return "\n".join(lines)


# -- report -------------------------------------------------------------------------


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def _paired_ratio(big: list[float], mid: list[float]) -> float:
    """The median of ``big[i] / mid[i]``: sample ``i`` of both is from round ``i``
    (the bigger size has fewer rounds, so the pairs end where its samples do)."""
    return _median([b / m for b, m in zip(big, mid, strict=False)])


def _label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _g(framing: str, n: int) -> str:
    return f"{framing}/{n}"


def table(result: dict[str, Any]) -> str:
    sizes: list[int] = result["sizes"]
    med: dict[str, dict[str, float]] = result["cpu_us_per_chunk"]
    trickle: dict[str, float] = result["trickle_us_per_chunk"]
    plan = result["plan"]
    big, mid = sizes[-1], sizes[-2]
    low: dict[str, dict[str, float]] = result["cpu_min_us_per_chunk"]
    scaling: dict[str, dict[str, float]] = result["scaling"]
    rounds = ", ".join(f"{_label(int(n))}: {k}" for n, k in plan["rounds"].items())
    oai = (
        f"; the openai SDK {plan['openai_rounds']} at {_label(big)}"
        if big >= 50_000
        else ""
    )
    lines = [
        f"CPU µs per chunk of the client process, median (min) of the rounds "
        f"({rounds}{oai}); last column: "
        f"{_label(big)} over {_label(mid)}, the median of per-round ratios:",
        "",
    ]
    head = ["contender", "framing", *(_label(n) for n in sizes)]
    head += [f"{_label(big)}/{_label(mid)}"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in CONTENDERS:
        for framing in FRAMINGS:
            row = [name, framing]
            row += [
                f"{med[_g(framing, n)][name]:.1f} ({low[_g(framing, n)][name]:.1f})"
                for n in sizes
            ]
            row.append(f"{scaling[framing][name]:.2f}")
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Trickle: {plan['trickle_chunks']} chunks, one every "
        f"{plan['trickle_pace'] * 1000:g} ms (one event per socket read), CPU µs "
        "per chunk:",
        "",
        "| " + " | ".join(CONTENDERS) + " |",
        "|" + "---|" * len(CONTENDERS),
        "| " + " | ".join(f"{trickle[c]:.1f}" for c in CONTENDERS) + " |",
        "",
        f"Where nbstream's time goes (no HTTP, {_label(big)} chunks from memory):",
        "",
        "| step | CPU µs per chunk |",
        "|---|---|",
    ]
    for step, us in result["breakdown_us_per_chunk"].items():
        lines.append(f"| {step} | {us:.2f} |")
    big_event = result["sse_big_event"]
    lines.append(
        "| SSE decoder, one 15 MiB event: 4 KiB vs 64 KiB pieces (CPU ms, min of 3) "
        f"| {big_event['small_ms']:.0f} vs {big_event['large_ms']:.0f} ms = "
        f"{big_event['ratio']:.2f}x |"
    )
    lines += [
        "",
        "Memory (tracemalloc growth over one request, reading the text once):",
    ]
    lines += [
        "",
        "| client | chunks | framing | reply | peak | retained after |",
        "|---|---|---|---|---|---|",
    ]
    for m in result["memory"]:
        lines.append(
            f"| {m['who']} | {_label(m['chunks'])} | {m['framing']} "
            f"| {m['reply_bytes'] / 1024:.0f} KiB "
            f"| {m['peak_bytes'] / 1024:.0f} KiB = {m['peak_ratio']:.2f}x "
            f"| {m['retained_bytes'] / 1024:.0f} KiB = {m['retained_ratio']:.2f}x |"
        )
    floor = next(m for m in result["memory"] if m["who"] == "floor")
    nb = [m for m in result["memory"] if m["who"] == "nbstream"][-1]
    lines += [
        "",
        f"Of nbstream's peak at {_label(nb['chunks'])}, the HTTP layer's own transient "
        f"buffers (the floor's peak) are {floor['peak_bytes'] / 1024:.0f} KiB; the "
        f"rest is {(nb['peak_bytes'] - floor['peak_bytes']) / nb['reply_bytes']:.2f}x "
        "the reply.",
    ]
    lines += ["", "Cold start (fresh processes, wall clock, median):", ""]
    lines += [
        "| client | import | first request | warm request | first - warm |",
        "|---|---|---|---|---|",
    ]
    rows = (
        ("nbstream chat (h1)", "cold_nbstream"),
        ("nbstream chat (httpx2)", "cold_nbstream_httpx2"),
        ("openai SDK", "cold_openai"),
    )
    for name, key in rows:
        cold = result.get(key)
        if cold:
            extra = cold["extra_import_ms"]
            imp = f"{cold['import_ms']:.0f} ms" + (
                f" + {extra:.0f} ms" if extra else ""
            )
            lines.append(
                f"| {name} | {imp} "
                f"| {cold['first_request_ms']:.1f} ms "
                f"| {cold['warm_request_ms']:.1f} ms "
                f"| {cold['first_minus_warm_ms']:.1f} ms |"
            )
    lines += ["", "Targets:", "", "| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        lines.append(
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
        )
    return "\n".join(lines)


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    sizes: list[int] = result["sizes"]
    big, mid = sizes[-1], sizes[-2]
    med = result["cpu_us_per_chunk"]
    out: list[dict[str, Any]] = []
    for framing in FRAMINGS:
        at = med[_g(framing, big)]
        out.append(
            {
                "target": f"nbstream < {TARGET_US_PER_CHUNK:g} µs CPU per chunk "
                f"({framing} framing, {_label(big)})",
                "measured": f"{at[NB_ASYNC]:.1f} async, {at[NB_SYNC]:.1f} sync "
                f"(on httpx2 {at[NB_ASYNC_HTTPX]:.1f} / {at[NB_SYNC_HTTPX]:.1f}; "
                f"httpx2 + EventSource {at[HTTPX]:.1f}, openai SDK "
                f"{at[OPENAI]:.0f}, floors: httpx2 {at[FLOOR]:.1f}, h1 "
                f"{at[FLOOR_H1]:.1f})",
                "met": max(at[NB_ASYNC], at[NB_SYNC]) < TARGET_US_PER_CHUNK,
            }
        )
    at = med[_g("event", big)]
    vs = result["vs_httpx_orjson"]["event"]
    raw = result["vs_raw_orjson"]["event"]
    out.append(
        {
            "target": f"nbstream <= {TARGET_VS_ORJSON:g}x httpx2 bytes + orjson "
            f"(event framing, {_label(big)})",
            "measured": f"{vs[NB_ASYNC]:.2f}x async, {vs[NB_SYNC]:.2f}x sync, the "
            f"median of per-round ratios ({at[NB_ASYNC]:.1f} and {at[NB_SYNC]:.1f} "
            f"against {at[HTTPX_ORJSON]:.1f} µs). On httpx2: "
            f"{vs[NB_ASYNC_HTTPX]:.2f}x / {vs[NB_SYNC_HTTPX]:.2f}x. Against asyncio "
            f"+ own dechunking + orjson ({at[RAW_ORJSON]:.1f} µs): "
            f"{raw[NB_ASYNC]:.2f}x / {raw[NB_SYNC]:.2f}x",
            "met": max(vs[NB_ASYNC], vs[NB_SYNC]) <= TARGET_VS_ORJSON,
        }
    )
    for framing in FRAMINGS:
        r_async = result["scaling"][framing][NB_ASYNC]
        r_sync = result["scaling"][framing][NB_SYNC]
        out.append(
            {
                "target": f"per chunk at {_label(big)} within 15 % of "
                f"{_label(mid)} ({framing} framing)",
                "measured": f"{r_async:.2f} async, {r_sync:.2f} sync",
                "met": max(r_async, r_sync) <= TARGET_SCALING,
            }
        )
    mem = [
        m
        for m in result["memory"]
        if m["who"] == "nbstream" and m["chunks"] == max(result["plan"]["memory_sizes"])
    ]
    worst_mem = max(m["peak_ratio"] for m in mem)
    out.append(
        {
            "target": f"memory growth < {TARGET_MEMORY_RATIO:g}x the reply "
            f"({_label(mem[0]['chunks'])} chunks)",
            "measured": f"peak {worst_mem:.2f}x, retained "
            f"{max(m['retained_ratio'] for m in mem):.2f}x",
            "met": worst_mem < TARGET_MEMORY_RATIO,
        }
    )
    big_event = result["sse_big_event"]
    out.append(
        {
            "target": "SSE decoder: a 15 MiB event in 4 KiB pieces within "
            f"{TARGET_SSE_PIECES_RATIO:g}x the CPU of 64 KiB pieces",
            "measured": f"{big_event['ratio']:.2f}x ({big_event['small_ms']:.0f} vs "
            f"{big_event['large_ms']:.0f} ms)",
            "met": big_event["ratio"] <= TARGET_SSE_PIECES_RATIO,
        }
    )
    cold = result["cold_nbstream"]
    out.append(
        {
            "target": f"first request <= {TARGET_COLD_MS:g} ms slower than warm",
            "measured": f"{cold['first_minus_warm_ms']:.1f} ms",
            "met": cold["first_minus_warm_ms"] <= TARGET_COLD_MS,
        }
    )
    return out


def machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "nbstream": nbstream.__version__,
        "httpx2": httpx2.__version__,
        "openai": openai.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


# -- main ---------------------------------------------------------------------------


def run(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine()}
    result["plan"] = {
        **asdict(plan),
        "rounds": {str(k): v for k, v in plan.rounds.items()},
    }
    result["sizes"] = list(plan.sizes)
    bench = Bench()
    with bench.runner, serve(plan.sizes) as base_url:
        log(f"server at {base_url}; CPU rounds, {', '.join(map(_label, plan.sizes))}")
        groups = {
            _g(f, n): Contenders(base_url, n, f) for f in FRAMINGS for n in plan.sizes
        }
        rounds = {_g(f, n): plan.rounds[n] for f in FRAMINGS for n in plan.sizes}
        samples = cpu_rounds(bench, groups, rounds, plan.openai_rounds, log)
        for c in groups.values():
            bench.runner.run(c.aclose())
        result["cpu_samples_us_per_chunk"] = samples
        result["cpu_us_per_chunk"] = {
            g: {name: _median(xs) for name, xs in per.items()}
            for g, per in samples.items()
        }
        result["cpu_min_us_per_chunk"] = {
            g: {name: min(xs, default=float("nan")) for name, xs in per.items()}
            for g, per in samples.items()
        }
        big, mid = plan.sizes[-1], plan.sizes[-2]
        result["scaling"] = {
            f: {
                name: _paired_ratio(
                    samples[_g(f, big)][name], samples[_g(f, mid)][name]
                )
                for name in CONTENDERS
            }
            for f in FRAMINGS
        }
        result["vs_httpx_orjson"] = {
            f: {
                name: _paired_ratio(
                    samples[_g(f, big)][name], samples[_g(f, big)][HTTPX_ORJSON]
                )
                for name in NBSTREAMS
            }
            for f in FRAMINGS
        }
        result["vs_raw_orjson"] = {
            f: {
                name: _paired_ratio(
                    samples[_g(f, big)][name], samples[_g(f, big)][RAW_ORJSON]
                )
                for name in NBSTREAMS
            }
            for f in FRAMINGS
        }

        log(f"trickle: {plan.trickle_chunks} chunks, 1 per {plan.trickle_pace} s")
        trickle = Contenders(base_url, plan.trickle_chunks, pace=plan.trickle_pace)
        t_samples = cpu_rounds(
            bench, {"trickle": trickle}, {"trickle": plan.trickle_rounds}, 0, log
        )["trickle"]
        bench.runner.run(trickle.aclose())
        result["trickle_samples_us_per_chunk"] = t_samples
        result["trickle_us_per_chunk"] = {k: _median(v) for k, v in t_samples.items()}

        log("breakdown (no HTTP)")
        result["breakdown_us_per_chunk"] = breakdown(
            plan.sizes[-1], plan.breakdown_reps
        )

        log("SSE decoder, one 15 MiB event in 4 KiB and in 64 KiB pieces")
        result["sse_big_event"] = sse_big_event(3)

        log("memory (tracemalloc)")
        big = max(plan.memory_sizes)
        mem: list[dict[str, Any]] = []
        small = min(plan.memory_sizes)
        for who in ("nbstream", "nbstream keep_raw_events", "httpx2 + EventSource"):
            mem.append(memory(bench, base_url, small, "event", who))
        if big != small:
            mem.append(memory(bench, base_url, big, "event", "nbstream"))
        for who in ("nbstream (httpx2)", "floor", "floor: h1"):
            mem.append(memory(bench, base_url, big, "event", who))
        result["memory"] = mem

        log(f"cold start: {plan.cold_processes} fresh processes")
        result["cold_nbstream"] = cold_start(
            _COLD_NBSTREAM, base_url, plan.cold_chunks, plan.cold_processes, "auto"
        )
        result["cold_nbstream_httpx2"] = cold_start(
            _COLD_NBSTREAM, base_url, plan.cold_chunks, plan.cold_processes, "httpx2"
        )
        result["cold_openai"] = cold_start(
            _COLD_OPENAI, base_url, plan.cold_chunks, plan.openai_cold_processes
        )
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    result["targets"] = targets(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts, fewer rounds (~20 s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "engine.json",
        help="where to write the JSON results (default: bench/results/engine.json)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target is missed"
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="instead: cProfile one nbstream achat of N chunks, top functions by own "
        "time",
    )
    parser.add_argument(
        "--ladder",
        type=int,
        metavar="N",
        help="instead: CPU per chunk from httpx2 bytes + orjson to nbstream achat, one "
        "piece of nbstream at a time, N chunks, 5 interleaved rounds",
    )
    parser.add_argument(
        "--framing",
        choices=FRAMINGS,
        default="event",
        help="the framing for --profile and --ladder (default: event)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f} s] {msg}", file=sys.stderr, flush=True)

    if args.profile:
        bench = Bench()
        with bench.runner, serve((args.profile,)) as base_url:
            print(profile(bench, base_url, args.profile, args.framing))
        return 0
    if args.ladder:
        bench = Bench()
        with bench.runner, serve((args.ladder,)) as base_url:
            print(ladder(bench, base_url, args.ladder, args.framing, 5))
        return 0

    result = run(QUICK if args.quick else FULL, log)
    result["mode"] = "quick" if args.quick else "full"
    result["duration_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(table(result))
    log(f"done; results in {args.out}")
    if args.check and not all(t["met"] for t in result["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
