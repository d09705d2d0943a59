"""Rendering a long reply in the browser: the ChatWidget in JupyterLab, headless Chromium.

A real ``jupyter lab`` (tests/lab.py) runs a kernel whose ``ChatWidget`` streams a reply
of ``N`` tokens (the same token stream as bench/iopub.py: words of ~4.6 characters, a
paragraph break every 97 tokens) from the loopback server (tests/loopback.py), written a
few tokens every 20 ms at a fixed rate. Playwright types the question and presses Enter.

Measured in the page, with instruments installed before the question is sent:

- a ``PerformanceObserver`` for ``longtask`` entries (main-thread tasks over 50 ms);
- a ``requestAnimationFrame`` loop: the longest gap between two frames;
- a ``MutationObserver`` on the panel: when the reply's body first ends with the reply's
  last characters ("last delta shown") and when the message is also marked complete
  (the final Markdown render). Each is "painted" at the end of the next frame: a
  ``MessageChannel`` task posted from the next ``requestAnimationFrame`` callback
  (conservative by at most one frame).

The server's last delta is the loopback server's ``finished_at`` (its last write);
page and test process share the system clock (``performance.timeOrigin + now()`` vs
``time.time()``; the skew between the two is measured and reported).

Targets: the final text painted within 0.5 s of the server's last delta, and no long
task over 200 ms while streaming. Reported, not asserted.

    python -m bench.browser                # 20k tokens at 1,000 tok/s, 3 runs (~2 min)
    python -m bench.browser --profile      # then one more run under the CPU profiler

Prints a table and writes ``bench/results/browser.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.iopub import WRITE_INTERVAL_S, make_tokens, paced_reply
from tests.lab import (
    Lab,
    Notebook,
    missing_requirements,
    open_browser,
    wait_until,
    write_notebook,
)
from tests.loopback import LoopbackServer, Seen

RESULTS = Path(__file__).parent / "results" / "browser.json"
TARGET_PAINT_S = 0.5
TARGET_LONGTASK_MS = 200.0
CELL = "import nbstream\nchat = nbstream.ChatWidget()\nchat"

# Installed in the page before the question is sent. Returns performance.timeOrigin.
INSTRUMENT = """({tail}) => {
  const b = window.__bench = {longtasks: [], frameGaps: [], textAt: null,
    textPainted: null, finalAt: null, finalPainted: null, done: false,
    sentAt: null};
  const po = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) b.longtasks.push([e.startTime, e.duration]);
  });
  po.observe({type: "longtask"});
  b.stopObserver = () => po.disconnect();
  let last = null;
  const frame = (ts) => {
    if (last !== null) b.frameGaps.push([ts, ts - last]);
    last = ts;
    if (!b.done) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  const norm = (s) => s.replace(/\\s+/g, " ").trim();
  const root = document.querySelector(".nbs-chat");
  const afterPaint = (key) => requestAnimationFrame(() => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => { b[key] = performance.now(); };
    ch.port2.postMessage(0);
  });
  const check = () => {
    const msgs = root.querySelectorAll(".nbs-msg.nbs-assistant");
    const m = msgs[msgs.length - 1];
    if (!m) return;
    const tc = m.querySelector(".nbs-body").textContent;
    if (!norm(tc.slice(-4 * tail.length)).endsWith(tail)) return;
    const now = performance.now();
    if (b.textAt === null) { b.textAt = now; afterPaint("textPainted"); }
    if (b.finalAt === null && m.dataset.status === "complete") {
      b.finalAt = now;
      afterPaint("finalPainted");
      mo.disconnect();
    }
  };
  const mo = new MutationObserver(check);
  mo.observe(root, {subtree: true, childList: true, characterData: true,
                    attributes: true, attributeFilter: ["data-status"]});
  return performance.timeOrigin;
}"""


@dataclass
class Run:
    tokens: int
    rate: float  # nominal tokens/s
    rate_actual: float  # tokens / the server's first to last write
    generation_s: float
    chars: int
    profiled: bool
    last_delta_shown_s: float  # server's last delta → its text painted
    final_painted_s: float  # server's last delta → complete + final Markdown painted
    longest_longtask_ms: float  # while streaming (question sent → final painted)
    longtasks: int
    longtasks_over_100ms: int
    total_blocking_ms: float  # sum of (duration - 50 ms) over long tasks
    longest_frame_gap_ms: float
    frames: int
    clock_skew_ms: float  # |page clock - Python clock|, upper bound
    complete: bool
    longtask_tail: list[list[float]] = field(default_factory=list)
    paint_target_met: bool = False
    longtask_target_met: bool = False


def _clock_skew_ms(page: Any) -> float:
    """An upper bound on |page wall clock - time.time()|, in ms."""
    best = float("inf")
    for _ in range(5):
        t0 = time.time()
        page_ms = page.evaluate("() => performance.timeOrigin + performance.now()")
        t1 = time.time()
        mid = (t0 + t1) / 2 * 1000
        best = min(best, abs(page_ms - mid) + (t1 - t0) * 500)
    return best


def measure(
    nb: Notebook,
    srv: LoopbackServer,
    tokens: list[str],
    rate: float,
    *,
    cdp: Any | None = None,
) -> tuple[Run, dict[str, Any] | None]:
    page = nb.page
    nb.run(0)  # a fresh widget for every run
    root = page.locator(".nbs-chat").first
    root.wait_for(timeout=15_000)
    wait_until(lambda: root.get_attribute("data-status") == "idle", 15, "the panel")
    text = "".join(tokens)
    tail = " ".join(text.split())[-32:]
    reply, _ = paced_reply(tokens, rate)
    srv.enqueue(reply)
    before = len(srv.requests)
    skew = _clock_skew_ms(page)
    origin = page.evaluate(INSTRUMENT, {"tail": tail})
    box = root.get_by_role("textbox", name="Message")
    box.fill("Write a long essay.")
    if cdp is not None:
        cdp.send("Profiler.enable")
        cdp.send("Profiler.setSamplingInterval", {"interval": 500})
        cdp.send("Profiler.start")
    sent_ms = page.evaluate("() => performance.now()")
    box.press("Enter")
    assert srv.wait_for(lambda: len(srv.requests) > before, 10), "no request"
    seen: Seen = srv.requests[before]
    budget = len(tokens) / rate * 2 + 30
    srv.wait_for(lambda: seen.finished_at is not None, budget)
    wait_until(
        lambda: page.evaluate("() => window.__bench.finalPainted !== null"),
        30,
        "the final text to be painted",
        0.1,
    )
    profile = cdp.send("Profiler.stop")["profile"] if cdp is not None else None
    b = page.evaluate(
        "() => { const b = window.__bench; b.done = true; b.stopObserver(); "
        "return {...b, stopObserver: null}; }"
    )
    assert seen.finished_at is not None
    # the server's last write, on the page's clock
    offset = time.time() - time.monotonic()
    last_ms = (seen.finished_at + offset) * 1000 - origin
    first_ms = (seen.received_at + offset) * 1000 - origin
    final_ms = b["finalPainted"]
    window = [lt for lt in b["longtasks"] if sent_ms <= lt[0] <= final_ms]
    gaps = [g for ts, g in b["frameGaps"] if sent_ms <= ts <= final_ms]
    shown = str(root.locator(".nbs-msg.nbs-assistant .nbs-body").last.inner_text())
    gen_s = (last_ms - first_ms) / 1000
    run = Run(
        tokens=len(tokens),
        rate=rate,
        rate_actual=len(tokens) / gen_s,
        generation_s=gen_s,
        chars=len(text),
        profiled=cdp is not None,
        last_delta_shown_s=(b["textPainted"] - last_ms) / 1000,
        final_painted_s=(final_ms - last_ms) / 1000,
        longest_longtask_ms=max((d for _, d in window), default=0.0),
        longtasks=len(window),
        longtasks_over_100ms=sum(d > 100 for _, d in window),
        total_blocking_ms=sum(d - 50 for _, d in window),
        longest_frame_gap_ms=max(gaps, default=0.0),
        frames=len(gaps),
        clock_skew_ms=skew,
        complete=" ".join(shown.split()) == " ".join(text.split()),
        longtask_tail=[
            [round((s - last_ms) / 1000, 3), round(d, 1)] for s, d in window
        ][-8:],
    )
    run.paint_target_met = run.final_painted_s <= TARGET_PAINT_S
    run.longtask_target_met = run.longest_longtask_ms <= TARGET_LONGTASK_MS
    return run, profile


# -- CPU profile ------------------------------------------------------------------------
_BUNDLE = Path(__file__).resolve().parent.parent / "nbstream" / "static" / "chat.js"


def _source_at(line: int, col: int, width: int = 40) -> str:
    """The minified bundle's text where a function starts (its names are mangled)."""
    try:
        lines = _BUNDLE.read_text().splitlines()
        return repr(lines[line][col : col + width])
    except (OSError, IndexError):
        return ""


def summarize_profile(profile: dict[str, Any], top: int = 15) -> dict[str, Any]:
    """Self and total time per function from a CDP ``Profiler`` profile."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    parent: dict[int, int] = {}
    for n in profile["nodes"]:
        for c in n.get("children", []):
            parent[c] = n["id"]

    def key(node: dict[str, Any]) -> str:
        cf = node["callFrame"]
        url = cf.get("url") or ""
        name = (cf.get("functionName") or "(anonymous)")[:60]
        line, col = cf.get("lineNumber", 0), cf.get("columnNumber", 0)
        if url.startswith("blob:"):  # anywidget imports the bundle from a blob: URL
            return f"{name} [chat.js:{line + 1}:{col + 1}] {_source_at(line, col)}"
        if url:
            return f"{name} [{url.rsplit('/', 1)[-1][:40]}:{line + 1}]"
        return name

    self_us: dict[str, float] = defaultdict(float)
    total_us: dict[str, float] = defaultdict(float)
    by_source: dict[str, float] = defaultdict(float)
    for sample, delta in zip(profile["samples"], profile["timeDeltas"], strict=True):
        node = nodes[sample]
        self_us[key(node)] += delta
        url = node["callFrame"].get("url") or ""
        name = node["callFrame"].get("functionName") or ""
        if url.startswith("blob:"):
            by_source["nbstream bundle (widget JS)"] += delta
        elif url:
            by_source["JupyterLab and widget manager"] += delta
        elif name in ("(idle)", "(program)", "(garbage collector)"):
            by_source[name] += delta
        else:
            by_source["native (DOM, parser, layout called from JS)"] += delta
        seen: set[str] = set()
        nid: int | None = sample
        while nid is not None:
            k = key(nodes[nid])
            if k not in seen:
                total_us[k] += delta
                seen.add(k)
            nid = parent.get(nid)
    busy = sum(v for k, v in by_source.items() if k != "(idle)")

    def rows(d: dict[str, float]) -> list[list[Any]]:
        items = sorted(
            ((k, v) for k, v in d.items() if k not in ("(idle)", "(root)")),
            key=lambda kv: -kv[1],
        )
        return [[k, round(v / 1000, 1), round(v / busy, 3)] for k, v in items[:top]]

    return {
        "busy_ms": round(busy / 1000, 1),
        "by_source": rows(by_source),
        "self": rows(self_us),
        "total": rows(total_us),
    }


# -- report -----------------------------------------------------------------------------
def table(runs: list[Run]) -> str:
    lines = [
        "| run | tokens | rate (tok/s) | last delta shown | final painted | longest "
        "long task | long tasks (>100 ms) | blocking | worst frame gap | complete |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, r in enumerate(runs, 1):
        name = f"{i}{' (profiled)' if r.profiled else ''}"
        lines.append(
            f"| {name} | {r.tokens:,} | {r.rate_actual:,.0f} "
            f"| {r.last_delta_shown_s * 1000:,.0f} ms "
            f"| {r.final_painted_s * 1000:,.0f} ms "
            f"| {r.longest_longtask_ms:,.0f} ms "
            f"| {r.longtasks} ({r.longtasks_over_100ms}) "
            f"| {r.total_blocking_ms:,.0f} ms | {r.longest_frame_gap_ms:,.0f} ms "
            f"| {'yes' if r.complete else 'NO'} |"
        )
    return "\n".join(lines)


def verdict(runs: list[Run]) -> dict[str, Any]:
    plain = [r for r in runs if not r.profiled] or runs
    paint = [r.final_painted_s for r in plain]
    longest = [r.longest_longtask_ms for r in plain]
    return {
        "final_painted_s_median": statistics.median(paint),
        "final_painted_s_worst": max(paint),
        "longest_longtask_ms_median": statistics.median(longest),
        "longest_longtask_ms_worst": max(longest),
        "paint_target_met": max(paint) <= TARGET_PAINT_S,
        "longtask_target_met": max(longest) <= TARGET_LONGTASK_MS,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=1000.0, help="tokens per second")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--profile", action="store_true", help="one more run under the CPU profiler"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="where to write JSON")
    args = ap.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"bench.browser: cannot run: {why}", file=sys.stderr)
        return 2

    t0 = time.monotonic()
    load_before = os.getloadavg()
    tokens = make_tokens(args.tokens)
    runs: list[Run] = []
    profile: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="nbstream-bench-") as tmpdir:
        tmp = Path(tmpdir)
        with LoopbackServer() as srv:
            env = {
                "NBSTREAM_BASE_URL": srv.base_url,
                "NBSTREAM_MODEL": "bench-model",
                "NBSTREAM_API_KEY": "sk-bench-not-a-key",
            }
            with Lab(tmp, env) as lab, open_browser(tmp) as browser:
                write_notebook(lab.root / "bench.ipynb", [CELL])
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.set_default_timeout(15_000)
                nb = Notebook(page, lab, "bench.ipynb").open()
                nb.hide_sidebar()
                # warm up: the widget stack, the HTTP client, the JS paths
                measure(nb, srv, make_tokens(300, seed=1), 1000)
                for i in range(args.runs):
                    print(f"… run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
                    runs.append(measure(nb, srv, tokens, args.rate)[0])
                if args.profile:
                    print("… profiled run", file=sys.stderr, flush=True)
                    cdp = page.context.new_cdp_session(page)
                    run, raw = measure(nb, srv, tokens, args.rate, cdp=cdp)
                    runs.append(run)
                    assert raw is not None
                    profile = summarize_profile(raw)
                import jupyterlab

                versions = {
                    "jupyterlab": jupyterlab.__version__,
                    "playwright": metadata.version("playwright"),
                    "chromium": browser.version,
                }

    load_after = os.getloadavg()
    print(table(runs))
    v = verdict(runs)
    print()
    print(
        f"Targets: final text painted within {TARGET_PAINT_S:g} s of the server's last "
        f"delta: {'met' if v['paint_target_met'] else 'MISSED'} (worst "
        f"{v['final_painted_s_worst'] * 1000:,.0f} ms); no long task over "
        f"{TARGET_LONGTASK_MS:g} ms while streaming: "
        f"{'met' if v['longtask_target_met'] else 'MISSED'} (worst "
        f"{v['longest_longtask_ms_worst']:,.0f} ms)."
    )
    if profile is not None:
        print()
        print(
            f"CPU profile of the profiled run (main thread busy {profile['busy_ms']} ms):"
        )
        for title, rows in (
            ("by source", profile["by_source"]),
            ("self time", profile["self"][:10]),
            ("total time", profile["total"][:12]),
        ):
            print(f"  {title}:")
            for name, ms, share in rows:
                print(f"    {ms:9,.1f} ms {share:6.1%}  {name}")
    print(
        f"\n{args.tokens:,} tokens ({len(''.join(tokens)):,} characters), the server "
        f"writing {WRITE_INTERVAL_S * 1000:.0f} ms of tokens per write; {versions}; "
        f"{os.cpu_count()} CPUs, load average {load_before[0]:.1f} before and "
        f"{load_after[0]:.1f} after (other work on the machine lengthens long tasks). "
        f"Total time {time.monotonic() - t0:.0f} s."
    )
    result = {
        "benchmark": "browser",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **versions,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "method": __doc__,
        "targets": {
            "final_painted_s": TARGET_PAINT_S,
            "longest_longtask_ms": TARGET_LONGTASK_MS,
        },
        "verdict": v,
        "runs": [asdict(r) for r in runs],
        "profile": profile,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Wrote {args.out}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
