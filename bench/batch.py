"""Benchmark of ``nbstream.batch``: many short requests from one process.

``bench.server`` (its own process, so its CPU is not counted) answers every request with
a 50-event OpenAI stream. In this process, interleaved round by round, 2,000 requests at
concurrency 100 go through:

- ``nbstream.batch`` (local engine; a fresh store file each round, results written to it);
- nbstream ``achat`` + ``asyncio.gather`` + a semaphore (the engine alone, no store);
- the openai SDK ``AsyncOpenAI`` + ``asyncio.gather`` + a semaphore (the common pattern).

Then: memory growth against the number of requests (batch, whose results go to the
store, against gather, which keeps every turn), the progress views' cost (the terminal
bar and a notebook view, refreshed 4 times a second), the store's write rate, and where
the CPU of a batch goes (``--profile``).

Then the same load through ``engine="ray"`` on a local Ray instance (``batch_ray.py``:
requests/s, the driver's and the workers' CPU; ``--no-ray`` skips it).

    python -m bench.batch            # ~3 min on an idle 2-core machine (+ ~1 min Ray)
    python -m bench.batch --quick    # ~30 s
    python -m bench.batch --profile  # cProfile of one batch run, by own time

Prints markdown tables and writes ``bench/results/batch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai

import nbstream
from bench.engine import serve
from bench.server import MODEL, expected_text
from nbstream._batch import job as job_module
from nbstream._core.events import Finish, TextDelta, Usage, UsageEvent
from nbstream._core.pipeline import Pipeline
from nbstream._core.transcript import Request, Turn
from nbstream._http.streams import LoopThread
from nbstream._store.store import Result, Store
from nbstream._store.writer import Writer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
API_KEY = "sk-bench"
EVENTS = 50
EXPECTED = expected_text(EVENTS)

BATCH = "nbstream.batch (h1)"
ACHAT = "nbstream achat + gather (h1)"
BATCH_HTTPX = "nbstream.batch (httpx2)"
ACHAT_HTTPX = "nbstream achat + gather (httpx2)"
SDK = "openai SDK AsyncOpenAI + gather"
FLOOR = "floor: asyncio streams + own HTTP/1.1 + json"
CONTENDERS = (BATCH, ACHAT, BATCH_HTTPX, ACHAT_HTTPX, SDK, FLOOR)
NBS = (BATCH, ACHAT, BATCH_HTTPX, ACHAT_HTTPX)  # the targets are nbstream's

# Targets from the issue.
TARGET_RPS = 1000.0
TARGET_CPU_MS = 1.0
TARGET_VS_SDK = 6.0
TARGET_PROGRESS_SHARE = 0.02


@dataclass(frozen=True)
class Plan:
    requests: int
    concurrency: int
    rounds: int
    memory_sizes: tuple[int, ...]
    store_rows: int


FULL = Plan(2000, 100, 3, (500, 2000, 4000), 20_000)
QUICK = Plan(500, 100, 1, (250, 1000), 5_000)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prompts(n: int, tag: str = "") -> list[str]:
    return [f"hi {tag}{i}" for i in range(n)]


class Contenders:
    def __init__(self, base_url: str, concurrency: int, events: int = EVENTS) -> None:
        headers = {"x-bench-chunks": str(events)}
        self.base_url = base_url
        self.events = events
        self.expected = expected_text(events)
        self.concurrency = concurrency

        def client(http: str) -> nbstream.Client:
            return nbstream.Client(
                base_url=base_url,
                model=MODEL,
                api_key=API_KEY,
                headers=headers,
                http=http,
            )

        self.batch_client, self.nb = client("h1"), client("h1")
        self.batch_httpx, self.nb_httpx = client("httpx2"), client("httpx2")
        self.oai = openai.AsyncOpenAI(
            base_url=base_url, api_key=API_KEY, max_retries=0, default_headers=headers
        )
        self.runner = asyncio.Runner()
        self.tmp = tempfile.TemporaryDirectory(prefix="nbstream-bench-")
        self.stores = 0
        self.last_job: Any = None
        self.commits: list[tuple[int, int]] = []  # (results, commits) of each batch

    def store(self) -> str:
        self.stores += 1
        return os.path.join(self.tmp.name, f"run{self.stores}.sqlite")

    # -- the three ways ------------------------------------------------------------
    def batch(self, n: int, *, httpx: bool = False, **kw: Any) -> int:
        job = nbstream.batch(
            prompts(n, f"{self.stores}-"),
            client=self.batch_httpx if httpx else self.batch_client,
            concurrency=self.concurrency,
            store=self.store(),
            progress=kw.pop("progress", False),
            **kw,
        )
        job.wait()
        self.last_job = job
        w = job._writer
        if w is not None:
            self.commits.append((w.written, w.commits))
        return int(job.counts["done"])

    async def _gather(self, n: int, one: Callable[[str], Any]) -> list[Any]:
        sem = asyncio.Semaphore(self.concurrency)

        async def guarded(p: str) -> Any:
            async with sem:
                return await one(p)

        return await asyncio.gather(*(guarded(p) for p in prompts(n)))

    async def _nb_one(self, prompt: str) -> Turn:
        return await self.nb.achat(prompt)

    async def _nb_httpx_one(self, prompt: str) -> Turn:
        return await self.nb_httpx.achat(prompt)

    async def _sdk_one(self, prompt: str) -> str:
        stream = await self.oai.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        async with stream:
            async for chunk in stream:
                if chunk.choices:
                    content = chunk.choices[0].delta.content
                    if content:
                        parts.append(content)
        return "".join(parts)

    def achat(self, n: int, *, httpx: bool = False) -> int:
        one = self._nb_httpx_one if httpx else self._nb_one
        turns = self.runner.run(self._gather(n, one))
        return sum(t.text == self.expected for t in turns)

    def sdk(self, n: int) -> int:
        texts = self.runner.run(self._gather(n, self._sdk_one))
        return sum(t == self.expected for t in texts)

    def floor(self, n: int) -> int:
        """What Python itself costs: keep-alive connections on asyncio streams, the
        chunked body and SSE split by hand, ``json.loads`` per event, text joined."""
        return self.runner.run(
            _floor(self.base_url, n, self.concurrency, self.expected)
        )

    def run(self, name: str, n: int) -> int:
        runs: dict[str, Callable[[int], int]] = {
            BATCH: self.batch,
            ACHAT: self.achat,
            BATCH_HTTPX: lambda n: self.batch(n, httpx=True),
            ACHAT_HTTPX: lambda n: self.achat(n, httpx=True),
            SDK: self.sdk,
            FLOOR: self.floor,
        }
        return runs[name](n)

    def check_last_batch(self) -> None:
        df = self.last_job.to_pandas()
        wrong = int((df["text"] != self.expected).sum())
        if wrong:
            raise AssertionError(f"{wrong} batch replies have the wrong text")

    def close(self) -> None:
        for c in (self.nb, self.batch_client, self.nb_httpx, self.batch_httpx):
            c.close()
        self.runner.run(self.oai.close())
        self.runner.close()
        self.tmp.cleanup()


async def _floor(base_url: str, n: int, concurrency: int, expected: str) -> int:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    path = url.path + "/chat/completions"
    events = len(expected_text_words(expected))
    todo = iter(range(n))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in todo:
                body = json.dumps(
                    {
                        "model": MODEL,
                        "messages": [{"role": "user", "content": f"hi {i}"}],
                        "stream": True,
                    }
                ).encode()
                writer.write(
                    f"POST {path} HTTP/1.1\r\nhost: {host}\r\n"
                    f"content-type: application/json\r\nx-bench-chunks: {events}\r\n"
                    f"content-length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head[:40]
                parts: list[str] = []
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    data = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    for line in data[:-2].split(b"\n"):
                        if line.startswith(b"data: ") and line != b"data: [DONE]":
                            for ch in json.loads(line[6:])["choices"]:
                                content = ch["delta"].get("content")
                                if content:
                                    parts.append(content)
                ok += "".join(parts) == expected
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def expected_text_words(text: str) -> list[str]:
    """The number of content events of a reply (bench.server's vocabulary)."""
    from bench.server import words

    n = 1
    while "".join(words(n)) != text:
        n += 1
    return words(n)


def measure(fn: Callable[[], int], n: int) -> dict[str, float]:
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    ok = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if ok != n:
        raise AssertionError(f"only {ok} of {n} requests came back whole")
    return {"rps": n / wall, "cpu_ms": cpu / n * 1000, "wall_s": wall}


# -- throughput -----------------------------------------------------------------------


def throughput(c: Contenders, plan: Plan) -> dict[str, list[dict[str, float]]]:
    n = plan.requests
    for name in CONTENDERS:  # warm up: connections, imports, caches
        c.run(name, min(n, 300))
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in CONTENDERS}
    for r in range(plan.rounds):
        k = r % len(CONTENDERS)
        for name in CONTENDERS[k:] + CONTENDERS[:k]:
            s = measure(lambda name=name: c.run(name, n), n)  # type: ignore[misc]
            samples[name].append(s)
            log(f"  round {r + 1}: {name}: {s['rps']:.0f} req/s, {s['cpu_ms']:.2f} ms")
            if name in (BATCH, BATCH_HTTPX):
                c.check_last_batch()
    return samples


# -- fixed cost and cost per event ----------------------------------------------------


def cost_model(url: str, plan: Plan) -> dict[str, Any]:
    """CPU per request with 1-event and 50-event replies: the fixed cost of a request
    (building, sending, the pool, the turn, the store) and the cost of one event.
    Also the batch with each request sent to the producer directly instead of
    through ``AsyncStream`` (``local.DIRECT``)."""
    from nbstream._batch import local

    n = plan.requests
    ways: dict[str, Callable[[Contenders], int]] = {
        "batch (h1)": lambda c: c.batch(n),
        "achat (h1)": lambda c: c.achat(n),
        "batch (h1), producer directly": lambda c: _direct(c, n),
        "batch (httpx2)": lambda c: c.batch(n, httpx=True),
        "achat (httpx2)": lambda c: c.achat(n, httpx=True),
    }
    cpu: dict[str, dict[int, list[float]]] = {w: {1: [], EVENTS: []} for w in ways}
    cs = {e: Contenders(url, plan.concurrency, e) for e in (1, EVENTS)}
    try:
        for c in cs.values():
            c.batch(200)
            c.achat(200)
        for _ in range(max(2, plan.rounds)):
            for events, c in cs.items():
                for way, fn in ways.items():
                    cpu[way][events].append(measure(lambda: fn(c), n)["cpu_ms"])  # noqa: B023
    finally:
        for c in cs.values():
            c.close()
        local.DIRECT = False
    out: dict[str, Any] = {}
    for way, by in cpu.items():
        one, many = statistics.median(by[1]), statistics.median(by[EVENTS])
        out[way] = {
            "cpu_ms_1_event": one,
            f"cpu_ms_{EVENTS}_events": many,
            "fixed_ms": one,
            "per_event_us": (many - one) / (EVENTS - 1) * 1000,
        }
    return out


def _direct(c: Contenders, n: int) -> int:
    from nbstream._batch import local

    local.DIRECT = True
    try:
        return c.batch(n)
    finally:
        local.DIRECT = False


# -- memory ---------------------------------------------------------------------------


def memory(c: Contenders, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """tracemalloc over one run of each size (the prompts exist before tracing)."""
    out: list[dict[str, Any]] = []
    for n in sizes:
        for who in (BATCH, ACHAT):
            gc.collect()
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            kept: Any
            if who == BATCH:
                c.batch(n)
                kept = c.last_job  # what the user holds: the job
            else:
                kept = c.runner.run(c._gather(n, c._nb_one))  # the user's list of turns
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out.append(
                {
                    "who": who,
                    "requests": n,
                    "peak_bytes": peak - base,
                    "retained_bytes": current - base,
                }
            )
            del kept
            c.last_job = None
            log(f"  memory {who} {n}: retained {(current - base) / n:.0f} B/request")
    return out


def slope(rows: list[dict[str, Any]], who: str, key: str) -> float:
    """Bytes per extra request, from the smallest to the largest run."""
    mine = sorted((r for r in rows if r["who"] == who), key=lambda r: r["requests"])
    a, b = mine[0], mine[-1]
    return float((b[key] - a[key]) / (b["requests"] - a["requests"]))


# -- the progress views ---------------------------------------------------------------


@contextmanager
def timed_refresh() -> Iterator[list[float]]:
    """Sum the CPU of every progress refresh (it runs on the loop thread)."""
    spent: list[float] = []
    original = job_module.Job._refresh

    def refresh(self: Any, final: bool = False) -> None:
        t0 = time.thread_time()
        original(self, final)
        spent.append(time.thread_time() - t0)

    job_module.Job._refresh = refresh  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        job_module.Job._refresh = original  # type: ignore[method-assign]


def progress_cost(c: Contenders, n: int) -> dict[str, Any]:
    """A run with the terminal bar (to a buffer) and a notebook view (ipywidgets,
    no kernel: the same work but for sending) refreshed 4 times a second."""
    sink = io.StringIO()
    views: list[Any] = []
    original_init = job_module.Job.__init__

    def init_with_view(self: Any, *a: Any, **kw: Any) -> None:
        original_init(self, *a, **kw)
        views.append(self.view())

    with_cpu: list[float] = []
    without_cpu: list[float] = []
    shares: list[float] = []
    every: list[float] = []
    for _ in range(2):  # interleaved: the machine's load changes
        with timed_refresh() as spent, redirect_stderr(sink):
            job_module.Job.__init__ = init_with_view  # type: ignore[method-assign]
            try:
                with_views = measure(lambda: c.batch(n, progress=True), n)
            finally:
                job_module.Job.__init__ = original_init  # type: ignore[method-assign]
        with_cpu.append(with_views["cpu_ms"])
        shares.append(sum(spent) / (with_views["cpu_ms"] * n / 1000))
        every += spent
        without_cpu.append(measure(lambda: c.batch(n), n)["cpu_ms"])
    return {
        "requests": n,
        "refreshes": len(every),
        "refresh_cpu_ms_each": 1000 * statistics.mean(every) if every else 0.0,
        "refresh_cpu_share": statistics.median(shares),
        "cpu_ms_per_request_with_views": statistics.median(with_cpu),
        "cpu_ms_per_request_without": statistics.median(without_cpu),
        "views": len(views),
    }


# -- the store --------------------------------------------------------------------------


def _turn(i: int) -> Turn:
    turn = Turn(Request([{"role": "user", "content": f"hi {i}"}], MODEL, "openai", "u"))
    pipe = Pipeline("openai", turn)
    events: list[Any] = [TextDelta(w) for w in EXPECTED.split(" ")]
    events += [Finish("stop"), UsageEvent(Usage(9, EVENTS, EVENTS + 9))]
    pipe.apply(events, 0.01)
    pipe.close(0.02)
    return turn


def store_rate(rows: int) -> dict[str, Any]:
    """Results (a 50-delta turn each) handed to the writer as fast as possible."""
    turns = [_turn(i) for i in range(200)]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "w.sqlite")
        Store(path).close()
        writer = Writer(path, lambda exc: None)
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(rows):
            key = f"{i:064x}"
            writer.put(Result(key, "{}", "done", True, turns[i % 200], 1))
        writer.close().result(120)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = os.path.getsize(path) + sum(
            os.path.getsize(path + s)
            for s in ("-wal", "-shm")
            if os.path.exists(path + s)
        )
    return {
        "rows": rows,
        "rows_per_s": rows / wall,
        "cpu_us_per_row": cpu / rows * 1e6,
        "commits": writer.commits,
        "bytes_per_row": size / rows,
    }


# -- profile --------------------------------------------------------------------------


def profile(c: Contenders, n: int) -> str:
    """cProfile of one batch run, on the loop thread (where the engine runs)."""
    pr = cProfile.Profile()
    lt = LoopThread.get()

    async def on(flag: bool) -> None:
        pr.enable() if flag else pr.disable()

    c.batch(300)  # warm
    lt.submit(on(True)).result()
    c.batch(n)
    lt.submit(on(False)).result()
    out = io.StringIO()
    stats = pstats.Stats(pr, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    groups: dict[str, float] = {}
    total = 0.0
    for (file, _line, _fn), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        key = _group(file)
        groups[key] = groups.get(key, 0.0) + tt
    out.write("\nOwn time by layer (loop thread):\n")
    for key, tt in sorted(groups.items(), key=lambda kv: -kv[1]):
        out.write(f"  {key:34s} {tt / total:6.1%}  {tt / n * 1e6:7.0f} µs/request\n")
    return out.getvalue()


def _group(file: str) -> str:
    for mark, name in (
        ("nbstream/_batch", "nbstream batch (dispatch, job)"),
        ("nbstream/_core", "nbstream core (sse, parse, turn)"),
        ("nbstream/_http/h1", "nbstream h1 (HTTP/1.1, pool)"),
        ("nbstream/_http", "nbstream http (producer, transport)"),
        ("httpcore2", "httpcore2 (pool, http11)"),
        ("h11", "h11 (HTTP/1.1 parsing)"),
        ("httpx2", "httpx2 (client, models)"),
        ("anyio", "anyio"),
        ("asyncio", "asyncio"),
        ("json", "json"),
    ):
        if mark in file:
            return name
    return "other (stdlib, builtins)"


# -- report ---------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    tp = results["throughput"]
    med = {
        k: {m: statistics.median(s[m] for s in v) for m in ("rps", "cpu_ms")}
        for k, v in tp.items()
    }
    lines = [
        f"## Batch: {results['plan']['requests']} requests x {EVENTS} events, "
        f"concurrency {results['plan']['concurrency']}, one process "
        f"(median of {results['plan']['rounds']} rounds)",
        "",
        "| way | requests/s | CPU ms / request | vs openai SDK |",
        "| --- | --- | --- | --- |",
    ]
    for k in CONTENDERS:
        ratio = med[k]["rps"] / med[SDK]["rps"]
        lines.append(
            f"| {k} | {med[k]['rps']:.0f} | {med[k]['cpu_ms']:.2f} | {ratio:.1f}x |"
        )
    lines += [
        "",
        "| target | " + " | ".join(NBS) + " |",
        "| --- |" + " --- |" * len(NBS),
    ]
    checks: list[tuple[str, Callable[[str], float], Callable[[float], bool], str]] = [
        (
            f"≥ {TARGET_RPS:.0f} requests/s",
            lambda k: med[k]["rps"],
            lambda v: v >= TARGET_RPS,
            "{:.0f}",
        ),
        (
            f"≤ {TARGET_CPU_MS:g} ms CPU a request",
            lambda k: med[k]["cpu_ms"],
            lambda v: v <= TARGET_CPU_MS,
            "{:.2f} ms",
        ),
        (
            f"≥ {TARGET_VS_SDK:g}x the SDK pattern's requests/s",
            lambda k: med[k]["rps"] / med[SDK]["rps"],
            lambda v: v >= TARGET_VS_SDK,
            "{:.1f}x",
        ),
    ]
    for target, value, ok, fmt in checks:
        cells = [
            f"{fmt.format(value(k))}: {'met' if ok(value(k)) else 'NOT met'}"
            for k in NBS
        ]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| memory | batch (results in the store) | achat + gather (keeps the turns) |",
        "| --- | --- | --- |",
    ]
    mem = results["memory"]
    for n in sorted({r["requests"] for r in mem}):
        b = next(r for r in mem if r["who"] == BATCH and r["requests"] == n)
        a = next(r for r in mem if r["who"] == ACHAT and r["requests"] == n)
        lines.append(
            f"| {n} requests: peak / retained | {b['peak_bytes'] / 2**20:.1f} / "
            f"{b['retained_bytes'] / 2**20:.1f} MiB | {a['peak_bytes'] / 2**20:.1f} / "
            f"{a['retained_bytes'] / 2**20:.1f} MiB |"
        )
    lines.append(
        f"| retained per extra request | {slope(mem, BATCH, 'retained_bytes'):.0f} B "
        f"| {slope(mem, ACHAT, 'retained_bytes'):.0f} B |"
    )
    cm = results["cost_model"]
    lines += [
        "",
        "| CPU per request | 1-event replies (≈ fixed cost) | per extra event |",
        "| --- | --- | --- |",
    ]
    for way, m in cm.items():
        lines.append(f"| {way} | {m['fixed_ms']:.2f} ms | {m['per_event_us']:.1f} µs |")
    p = results["progress"]
    s = results["store"]
    lines += [
        "",
        f"Progress views (terminal bar + a notebook view, 4 refreshes/s): "
        f"{p['refreshes']} refreshes, {p['refresh_cpu_ms_each']:.2f} ms CPU each, "
        f"{p['refresh_cpu_share']:.2%} of the run's CPU (target < "
        f"{TARGET_PROGRESS_SHARE:.0%}); CPU/request {p['cpu_ms_per_request_with_views']:.2f} "
        f"ms with, {p['cpu_ms_per_request_without']:.2f} ms without.",
        "",
        f"Store: {s['rows_per_s']:,.0f} results/s written ({s['cpu_us_per_row']:.0f} µs "
        f"CPU each, {s['commits']} commits for {s['rows']:,} rows, "
        f"{s['bytes_per_row']:.0f} bytes/row on disk). During the throughput runs: "
        f"{s['in_runs']['results']:,} results in {s['in_runs']['commits']:,} commits "
        f"({s['in_runs']['results'] / max(1, s['in_runs']['commits']):.1f} a commit).",
    ]
    r = results.get("ray")
    if r:
        lines += [
            "",
            f"Ray (local instance started in {r['ray_start_s']:.1f} s; "
            f"{r['workers']} workers, started in {r['actors_cold_start_s']:.1f} s by "
            f"the first job, reused after): {r['rps']:.0f} requests/s "
            f"({r['rps_after_first_result']:.0f} after the first result); CPU per "
            f"request: driver {r['driver_cpu_ms']:.2f} ms, workers "
            f"{r['workers_cpu_ms']:.2f} ms.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, one round")
    parser.add_argument("--profile", action="store_true", help="cProfile one batch run")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray contender")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch.json")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    with serve((EVENTS,)) as url:
        c = Contenders(url, plan.concurrency)
        try:
            if args.profile:
                print(profile(c, plan.requests))
                return 0
            log("throughput")
            tp = throughput(c, plan)
            written = sum(w for w, _ in c.commits)
            commits = sum(n for _, n in c.commits)
            log("fixed cost and cost per event")
            cm = cost_model(url, plan)
            log("memory")
            mem = memory(c, plan.memory_sizes)
            log("progress views")
            prog = progress_cost(c, plan.requests)
            ray_results = None
            if not args.no_ray:
                from bench.batch_ray import ray_throughput

                log("ray")
                ray_results = ray_throughput(
                    url, plan.requests, plan.concurrency, plan.rounds
                )
        finally:
            c.close()
    log("store")
    st = store_rate(plan.store_rows)
    results = {
        "mode": "quick" if args.quick else "full",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load": os.getloadavg(),
        "plan": plan.__dict__,
        "throughput": tp,
        "cost_model": cm,
        "memory": mem,
        "progress": prog,
        "store": {**st, "in_runs": {"results": written, "commits": commits}},
        "ray": ray_results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
