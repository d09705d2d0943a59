"""``engine="ray"`` on a real local Ray instance (started once for this module, 2 CPUs,
all of it on 127.0.0.1), against the loopback model server of tests/batchkit.py.

Ray starts in 6-19 s on a loaded machine (more at times): it is started once, here,
and shut down at the end; the two tests that need a Ray driver of their own (a
cluster given by ``ray_address=``; a local instance nbstream starts and stops) run
it in a child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Ray reaches its own processes through the machine's address unless told to stay on
# loopback; read when ray is imported, so before that (children inherit it).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

import nbstream  # noqa: E402
from nbstream import Client, ConfigurationError  # noqa: E402
from nbstream._core.ratelimit import RateLimiter  # noqa: E402
from nbstream.middleware import Middleware  # noqa: E402
from tests.batchkit import (  # noqa: E402
    KEY,
    ScriptedModel,
    answer,
    any_slice_of,
    max_in_window,
    wait_until,
)
from tests.kernel import clean_env  # noqa: E402
from tests.loopback import LoopbackServer, Reply, Seen  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[str]:
    """A local Ray instance of this process; yields its address (GCS)."""
    assert not ray.is_initialized(), "another test left Ray running"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        assert address.startswith("127.0.0.1:"), address
        yield address
    finally:
        ray.shutdown()


class PidModel(ScriptedModel):
    """The scripted model, noting which process sent each request: the owner of the
    client's end of the connection, looked up while the connection is open."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.pids: list[int] = []
        self.server_port = 0  # set once served
        self._by_port: dict[int, int] = {}

    def __call__(self, seen: Seen) -> Reply:
        assert seen.peer is not None
        port = seen.peer[1]
        pid = self._by_port.get(port)
        if pid is None:
            # the client's end: from its port to the server's (a local port can
            # serve connections to other places at the same time)
            for c in psutil.net_connections(kind="tcp"):
                if (
                    c.pid
                    and c.laddr
                    and c.raddr
                    and (c.laddr.port, c.raddr.port) == (port, self.server_port)
                ):
                    pid = self._by_port[port] = c.pid
                    break
        with self.lock:
            self.pids.append(pid or -1)
        return super().__call__(seen)


def client_for(srv: LoopbackServer, **kw: Any) -> Client:
    kw.setdefault("retry_delay", 0.01)
    return Client(base_url=srv.base_url, api_key=KEY, model="m", **kw)


def test_a_batch_runs_on_ray_workers_and_streams_back(
    ray_instance: str, tmp_path: Path
) -> None:
    n = 24
    prompts = [f"q{i}" for i in range(n)]
    with LoopbackServer(keep_alive=True) as srv:
        model = PidModel(delay=0.02)
        model.server_port = srv.port
        srv.serve(model)
        job = nbstream.batch(
            prompts,
            client=client_for(srv),
            engine="ray",
            ray_workers=2,
            concurrency=4,
            store=tmp_path / "ray.sqlite",
        )
        # results reach the job (its counts, its store) as they finish
        streamed = wait_until(lambda: 0 < job.counts["done"] < n, 120)
        job.wait(timeout=120)
    assert streamed
    assert job.status == "finished" and job.counts["done"] == n
    df = job.to_pandas()
    assert list(df["text"]) == [answer(p) for p in prompts]
    assert set(model.completed.values()) == {1}
    # the requests came from the two worker processes, not from this one
    details = job.status()
    workers = {w["pid"] for w in details["workers"]}
    assert len(workers) == 2 and os.getpid() not in workers
    assert set(model.pids) == workers  # each request's sender: a worker
    # the workers run this nbstream (the work tree under test)
    assert {w["file"] for w in details["workers"]} == {
        str(ROOT / "nbstream" / "__init__.py")
    }
    assert details["ray_address"] == ray_instance
    assert details["started_by_nbstream"] is False
    assert ray.is_initialized()  # the caller's instance stays up
    # the key: in no log file of the Ray session, not in the actor table, no repr
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    logs = [p for p in session.rglob("*") if p.is_file() and p.stat().st_size < 1e8]
    assert logs
    for p in logs:
        assert any_slice_of(KEY, p.read_bytes()) is None, p
    actors = repr(ray._private.state.actors()).encode()
    assert b"Worker" in actors and any_slice_of(KEY, actors) is None
    shown = (repr(job) + repr(details) + repr(job.transcript)).encode()
    assert any_slice_of(KEY, shown) is None


def _hang_from(first: int) -> Any:
    def plan(prompt: str, n: int) -> str | None:
        return "hang" if n == 1 and int(prompt.split()[1]) >= first else None

    return plan


def test_stop_keeps_partial_replies_and_a_rerun_sends_the_rest(
    ray_instance: str, tmp_path: Path
) -> None:
    todo = [f"question {i:03d} " * 3 for i in range(16)]
    store = tmp_path / "stop.sqlite"
    # one connection per request: the server sees each one the worker closes
    with LoopbackServer() as srv:
        model = PidModel(_hang_from(8))
        model.server_port = srv.port
        srv.serve(model)
        client = client_for(srv)
        job = nbstream.batch(
            todo, client=client, engine="ray", concurrency=4, store=store
        )
        try:
            # rows 0-7 finish; rows 8-11 hang in the workers, each a partial reply
            assert wait_until(
                lambda: sum(s.stalled_at is not None for s in srv.requests) == 4, 120
            )
            assert wait_until(lambda: job.counts["done"] == 8, 30)
            hung = [s for s in srv.requests if s.stalled_at is not None]
            job.cancel()
            job.wait(timeout=60)
        finally:
            model.gate.open()
        assert job.status == "cancelled"
        assert {k: job.counts[k] for k in ("done", "cancelled", "pending")} == {
            "done": 8,
            "cancelled": 4,
            "pending": 4,
        }
        # the workers closed the stopped requests' connections
        assert srv.wait_for(lambda: all(s.client_closed_at for s in hung), 10)
        df = job.to_pandas()
        assert list(df["status"][:12]) == ["done"] * 8 + ["cancelled"] * 4
        assert list(df["text"][8:12]) == ["echo: " + p[:3] for p in todo[8:12]]
        # a rerun sends exactly what is missing, once each, again through Ray
        before = model.prompts_sent()
        again = nbstream.batch(
            todo, client=client, engine="ray", concurrency=4, store=store
        ).wait(timeout=120)
        sent = model.prompts_sent() - before
    assert set(sent) == set(todo[8:]) and set(sent.values()) == {1}
    assert again.counts["done"] == 16 and again.reused == 8
    assert os.getpid() not in model.pids and -1 not in model.pids
    # the rerun took the actors the first job left (they take seconds to start)
    assert again.status()["workers"] == job.status()["workers"]


def test_the_rate_limit_holds_across_workers(
    ray_instance: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rpm = 3000  # 50 a second, over two workers
    n = 120
    permits: list[float] = []  # when the driver let each attempt start
    start = RateLimiter.start

    def noted(self: RateLimiter, now: float, cost: float) -> None:
        permits.append(time.monotonic())
        start(self, now, cost)

    monkeypatch.setattr(RateLimiter, "start", noted)
    with LoopbackServer(keep_alive=True) as srv:
        model = ScriptedModel()
        srv.serve(model)
        job = nbstream.batch(
            [f"q{i}" for i in range(n)],
            client=client_for(srv),
            engine="ray",
            ray_workers=2,
            concurrency=16,
            rpm=rpm,
            store=tmp_path / "rpm.sqlite",
        )
        job.wait(timeout=120)
    assert job.counts["done"] == n
    # One driver hands out every start, paced as for the local engine: at most
    # rate * T + 2 in any T seconds (rate: rpm less 2 % headroom), whatever the
    # number of workers ...
    rate = 0.98 * rpm / 60
    assert len(permits) == n
    assert max_in_window(permits, 1.0) <= rate + 2
    # ... and the server sees them so, but for the delay of a Ray call, which can
    # bunch a few (up to 0.1 s seen under load; the headroom, 1.2 s a minute,
    # absorbs it over rpm's own minute): allowed 0.25 s here
    times = model.times()
    assert max_in_window(times, 1.0) <= rate * 1.25 + 2
    assert times[-1] - times[0] >= 0.9 * (n - 1) / rate


def test_a_client_whose_middleware_would_not_reach_the_workers_is_refused(
    tmp_path: Path,
) -> None:
    client = Client(
        base_url="http://127.0.0.1:9/v1", model="m", middleware=[Middleware()]
    )
    with pytest.raises(ConfigurationError, match="middleware"):
        nbstream.batch(["x"], client=client, engine="ray", store=tmp_path / "x.sqlite")
    with pytest.raises(ConfigurationError, match="ray_workers=0"):
        nbstream.batch(["x"], engine="ray", ray_workers=0)


_CHILD = textwrap.dedent(
    """
    import json, sys
    import ray
    import nbstream
    url, store, address = sys.argv[1], sys.argv[2], sys.argv[3] or None
    client = nbstream.Client(base_url=url, api_key=sys.argv[4], model="m")
    job = nbstream.batch([f"q{i}" for i in range(6)], client=client, engine="ray",
                         ray_address=address, ray_workers=1, store=store)
    job.wait(timeout=300)
    print(json.dumps({"counts": job.counts, "status": job.status(),
                      "connected_after": ray.is_initialized()}))
    """
)


def _child(srv: LoopbackServer, tmp_path: Path, address: str) -> dict[str, Any]:
    store = str(tmp_path / "c.sqlite")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, srv.base_url, store, address, KEY],
        env=clean_env(
            PYTHONPATH=str(ROOT), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_ADDRESS=""
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert KEY not in out.stdout + out.stderr
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_cluster_given_by_ray_address_is_joined_and_left_running(
    ray_instance: str, tmp_path: Path
) -> None:
    with LoopbackServer(keep_alive=True) as srv:
        srv.serve(ScriptedModel())
        result = _child(srv, tmp_path, ray_instance)
    assert result["counts"]["done"] == 6
    assert result["status"]["ray_address"] == ray_instance
    assert result["status"]["started_by_nbstream"] is True  # it connected itself
    assert result["connected_after"] is False  # and disconnected at the end
    # the cluster itself is still up: this process still runs tasks on it
    assert ray.get(ray.remote(lambda: 7).remote(), timeout=60) == 7


def test_with_no_instance_nbstream_starts_one_and_shuts_it_down(
    ray_instance: str, tmp_path: Path
) -> None:
    # in a child: this process is connected to its own instance
    with LoopbackServer(keep_alive=True) as srv:
        srv.serve(ScriptedModel())
        result = _child(srv, tmp_path, "")
    assert result["counts"]["done"] == 6
    assert result["status"]["started_by_nbstream"] is True
    address = result["status"]["ray_address"]
    assert address.startswith("127.0.0.1:") and address != ray_instance  # a new one
    assert result["connected_after"] is False
    # and it is gone: soon nothing listens at its address any more
    port = int(address.rsplit(":", 1)[1])

    def closed() -> bool:
        conns = psutil.net_connections("tcp")
        return all(c.laddr.port != port for c in conns if c.status == "LISTEN")

    assert wait_until(closed, 30)


def test_ray_calls_run_on_one_long_lived_thread() -> None:
    """A local instance dies with the thread that started it (Linux's parent-death
    signal is per thread): nbstream starts it on a thread that lives on."""
    from nbstream._batch.rayengine import _ray_thread

    names = {_ray_thread().submit(lambda: threading.current_thread().name).result()}
    names.add(_ray_thread().submit(lambda: threading.current_thread().name).result())
    assert len(names) == 1 and next(iter(names)).startswith("nbstream-ray")
