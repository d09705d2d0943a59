"""The Ray contender of ``bench.batch``: the same load through ``engine="ray"`` on a
local Ray instance (2 CPUs, on 127.0.0.1), started once for the measurement.

The first job starts the actors (``ray_workers``, default one per CPU: seconds, a
new worker process each: reported as the cold start); later jobs take them over (the
engine parks them between jobs), as the measured rounds do. CPU: this process's (the driver: dispatch, rate limits, the store) and
the workers' (sampled from their processes while the job runs), per request; Ray's
own daemons (raylet, GCS) are not counted.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

# Ray reaches its own processes through the machine's address unless told to stay on
# loopback (read when ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import psutil

import nbstream
from bench.server import MODEL, expected_text

__all__ = ["ray_throughput"]


def _one(client: nbstream.Client, n: int, concurrency: int, tag: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="nbstream-bench-ray-") as d:
        c0, t0 = time.process_time(), time.perf_counter()
        job = nbstream.batch(
            [f"hi ray {tag} {i}" for i in range(n)],
            client=client,
            engine="ray",
            concurrency=concurrency,
            store=os.path.join(d, "ray.sqlite"),
            progress=False,
        )
        first: float | None = None
        workers: dict[int, list[float]] = {}  # pid → [CPU when first seen, latest]
        while job.running:
            if first is None and job.counts["done"]:
                first = time.perf_counter()
            for w in job.status().get("workers", ()):
                try:
                    t = psutil.Process(w["pid"]).cpu_times()
                except psutil.Error:
                    continue  # ended: its last sample stands
                # a worker process started before the job (Ray keeps idle ones):
                # its CPU from when the job's actors were ready
                workers.setdefault(w["pid"], [t.user + t.system] * 2)[1] = (
                    t.user + t.system
                )
            time.sleep(0.02)
        job.wait()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        end = time.perf_counter()
        df = job.to_pandas()
        wrong = int((df["text"] != expected_text(50)).sum())
        if wrong or job.counts["done"] != n:
            raise AssertionError(f"ray: {wrong} wrong replies, {job.counts}")
    steady = (n - 1) / (end - first) if first is not None and end > first else None
    return {
        "rps": n / wall,
        "rps_after_first_result": steady,
        "start_s": (first - t0) if first is not None else None,
        "driver_cpu_ms": cpu / n * 1000,
        "workers_cpu_ms": sum(b - a for a, b in workers.values()) / n * 1000,
        "workers": len(workers),
        "wall_s": wall,
    }


def ray_throughput(
    url: str, requests: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - t0
    try:
        client = nbstream.Client(
            base_url=url,
            model=MODEL,
            api_key="sk-bench",
            headers={"x-bench-chunks": "50"},
        )
        cold = _one(client, min(requests, 300), concurrency, "warm")
        samples = [_one(client, requests, concurrency, f"r{r}") for r in range(rounds)]
    finally:
        ray.shutdown()
    keys = ("rps", "rps_after_first_result", "start_s")
    keys += ("driver_cpu_ms", "workers_cpu_ms")
    med = {
        k: statistics.median(s[k] for s in samples if s[k] is not None) for k in keys
    }
    return {
        "ray_start_s": started,
        "actors_cold_start_s": cold["start_s"],
        "requests": requests,
        "workers": samples[-1]["workers"],
        "samples": samples,
        **med,
    }
