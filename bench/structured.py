"""What structured output (``response_format=``) costs per delta, in the core alone.

An OpenAI-format stream whose reply is one JSON object (``{"rows": [{…}, …]}``, a
growing table) is fed to the core ``Pipeline`` one SSE event per call, as a real server
sends it. The CPU time per delta is measured for:

- ``plain``: no response_format (the baseline: what structured output must not change);
- ``structured, unread``: response_format set, nobody reads ``turn.partial``;
- ``read every delta``: ``turn.partial`` read after every delta (a user's loop);
- ``read at 20 Hz``: read at most every 50 ms (what a live view would do);
- ``read every delta, no bound``: the same with the rate bound off (``RATIO = 0``),
  i.e. a full partial parse per delta, to show what the bound saves;

plus the end of the reply (validation by the pydantic model) once. At 1k and 10k
deltas (``--big`` adds 100k): a cost per delta that stays flat as the reply grows is
linear overall.

    python -m bench.structured           # ~30 s
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from pydantic import BaseModel

from nbstream._core import structured
from nbstream._core.pipeline import Pipeline
from nbstream._core.response_format import with_response_format
from nbstream._core.transcript import Request, Turn


class Row(BaseModel):
    id: int
    name: str
    score: float


class Table(BaseModel):
    rows: list[Row]


def reply_text(n_deltas: int) -> str:
    rows = []
    i = 0
    while True:
        rows.append({"id": i, "name": f"row number {i}", "score": round(i * 0.37, 2)})
        text = json.dumps({"rows": rows})
        if len(text) / 4 >= n_deltas:
            return text
        i += 1


def events(text: str, n_deltas: int) -> list[bytes]:
    size = max(1, len(text) // n_deltas)
    out = []
    for i in range(0, len(text), size):
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": text[i : i + size]}}],
        }
        out.append(f"data: {json.dumps(chunk)}\n\n".encode())
    fin = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    out.append(f"data: {json.dumps(fin)}\n\ndata: [DONE]\n\n".encode())
    return out


def run(chunks: list[bytes], mode: str) -> tuple[float, float, int, Turn]:
    """(CPU seconds of the stream, CPU seconds of the end, reads, the turn)."""
    params: dict[str, Any] = {}
    st = None
    if mode != "plain":
        params, st = with_response_format({"response_format": Table}, "openai")
    turn = Turn(Request([], "m", "openai", "u", params))
    turn.structured = st
    pipe = Pipeline("openai", turn)
    reads = 0
    value: Any = None
    last_read = 0.0
    every = mode.startswith("read every")
    at_20hz = mode == "read at 20 Hz"
    clock = time.perf_counter
    t0 = time.process_time()
    for i, chunk in enumerate(chunks):
        pipe.feed(chunk, i * 1e-3)
        if every:
            value = turn.partial
            reads += 1
        elif at_20hz and clock() - last_read >= 0.05:
            last_read = clock()
            value = turn.partial
            reads += 1
    pipe.close(len(chunks) * 1e-3)
    t1 = time.process_time()
    del value
    if st is not None:
        assert turn.parsed is not None, turn.parse_error
    t2 = time.process_time()
    return t1 - t0, t2 - t1, reads, turn


MODES = [
    "plain",
    "structured, unread",
    "read every delta",
    "read at 20 Hz",
    "read every delta, no bound",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--big", action="store_true", help="add 100k deltas")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sizes = [1_000, 10_000] + ([100_000] if args.big else [])
    default = structured.RATIO
    results: dict[int, dict[str, float]] = {}
    ends: dict[int, float] = {}
    for n in sizes:
        text = reply_text(n)
        chunks = events(text, n)
        deltas = len(chunks) - 1
        results[n] = {}
        for mode in MODES:
            if mode.endswith("no bound") and n > 10_000:
                continue  # quadratic: minutes at 100k
            samples, end_samples = [], []
            rounds = 1 if mode.endswith("no bound") and n >= 10_000 else args.rounds
            for _ in range(rounds):
                structured.RATIO = 0.0 if mode.endswith("no bound") else default
                stream_s, end_s, _reads, turn = run(chunks, mode)
                assert turn.text == text
                samples.append(stream_s / deltas * 1e6)
                end_samples.append(end_s * 1e3)
            structured.RATIO = default
            results[n][mode] = statistics.median(samples)
            if mode == "structured, unread":
                ends[n] = statistics.median(end_samples)
        print(f"{n} deltas ({len(text):,} characters of JSON) done", flush=True)
    head = "| CPU µs per delta | " + " | ".join(f"{n:,} deltas" for n in sizes)
    print("\n" + head + " | 10k / 1k |")
    print("| --- |" + " --- |" * (len(sizes) + 1))
    for mode in MODES:
        row = [results[n].get(mode) for n in sizes]
        cells = " | ".join(f"{v:.2f}" if v is not None else "-" for v in row)
        a, b = results[1_000].get(mode), results[10_000].get(mode)
        ratio = f"{b / a:.2f}x" if a and b else "-"
        print(f"| {mode} | {cells} | {ratio} |")
    print(
        "| the end: parse + validate once (ms) | "
        + " | ".join(f"{ends[n]:.2f}" for n in sizes)
        + " | |"
    )


if __name__ == "__main__":
    main()
