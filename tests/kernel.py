"""A real IPython kernel (ipykernel over ZeroMQ) for tests, via jupyter_client.

A reader thread records every IOPub message with its arrival time, so a test can wait
for "the first delta" or "the final display" with a bound, while the kernel keeps going.
``click_stop`` sends the same comm message the browser sends when Stop is clicked.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without the developer's own nbstream, OpenAI and
    Anthropic settings, plus ``settings``: what a test kernel or subprocess gets."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NBSTREAM_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(settings)
    return env


@dataclass
class Msg:
    type: str
    content: dict[str, Any]
    parent_id: str | None
    received: float  # time.monotonic() in the test process


@dataclass
class Execution:
    msg_id: str
    kernel: Kernel
    reply: dict[str, Any] | None = None
    done_at: float | None = None

    @property
    def messages(self) -> list[Msg]:
        return [m for m in self.kernel.iopub() if m.parent_id == self.msg_id]

    def wait(self, timeout: float = 30) -> Execution:
        """Wait until the kernel is idle after this cell."""
        ok = self.kernel.wait_for(
            lambda: any(
                m.type == "status" and m.content["execution_state"] == "idle"
                for m in self.messages
            ),
            timeout,
        )
        if not ok:
            raise TimeoutError(f"the cell did not finish within {timeout} s")
        idle = next(
            m
            for m in self.messages
            if m.type == "status" and m.content["execution_state"] == "idle"
        )
        self.done_at = idle.received
        self.reply = self.kernel.shell_reply(self.msg_id, timeout)
        return self

    def of_type(self, *types: str) -> list[Msg]:
        return [m for m in self.messages if m.type in types]

    @property
    def error(self) -> dict[str, Any] | None:
        errs = self.of_type("error")
        return errs[0].content if errs else None

    @property
    def stderr(self) -> str:
        return "".join(
            m.content["text"]
            for m in self.of_type("stream")
            if m.content["name"] == "stderr"
        )

    @property
    def stdout(self) -> str:
        return "".join(
            m.content["text"]
            for m in self.of_type("stream")
            if m.content["name"] == "stdout"
        )

    def displays(self) -> list[dict[str, Any]]:
        return [m.content for m in self.of_type("display_data", "execute_result")]

    def widget_comm(self) -> str | None:
        for m in self.messages:
            if m.type == "comm_open":
                state = m.content["data"].get("state", {})
                if state.get("_anywidget_id", "").endswith("ReplyView"):
                    return str(m.content["comm_id"])
        return None


class Kernel:
    """``with Kernel(env) as k: k.run("%load_ext nbstream")``"""

    def __init__(
        self, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        """``env``: the kernel's whole environment (see ``clean_env``)."""
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(
            env=env if env is not None else dict(os.environ), cwd=str(cwd or Path.cwd())
        )
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self._msgs: list[Msg] = []
        self._replies: dict[str | None, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                raw = self.kc.get_iopub_msg(timeout=0.2)
            except Exception:  # queue.Empty, or the channel closing at shutdown
                continue
            msg = Msg(
                raw["msg_type"],
                raw["content"],
                raw["parent_header"].get("msg_id"),
                time.monotonic(),
            )
            with self._cond:
                self._msgs.append(msg)
                self._cond.notify_all()

    def iopub(self) -> list[Msg]:
        with self._cond:
            return list(self._msgs)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._cond.release()
                try:
                    if predicate():
                        return True
                finally:
                    self._cond.acquire()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))

    def shell_reply(self, msg_id: str, timeout: float) -> dict[str, Any]:
        """The execute_reply of ``msg_id`` (replies of other cells are kept for later)."""
        deadline = time.monotonic() + timeout
        while msg_id not in self._replies:
            raw = self.kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            self._replies[raw["parent_header"].get("msg_id")] = raw["content"]
        return self._replies.pop(msg_id)

    def execute(self, code: str, *, allow_stdin: bool = True) -> Execution:
        msg_id = self.kc.execute(code, allow_stdin=allow_stdin)
        return Execution(msg_id, self)

    def run(
        self, code: str, *, allow_stdin: bool = True, timeout: float = 30
    ) -> Execution:
        return self.execute(code, allow_stdin=allow_stdin).wait(timeout)

    def eval(self, expr: str, timeout: float = 30) -> str:
        """The printed value of ``expr`` in the kernel."""
        ex = self.run(f"print(repr({expr}))", timeout=timeout)
        if ex.error:
            raise RuntimeError(f"{ex.error['ename']}: {ex.error['evalue']}")
        return ex.stdout.strip()

    def click_stop(self, comm_id: str) -> None:
        """Send what the browser sends when the Stop button is clicked."""
        content = {
            "comm_id": comm_id,
            "data": {"method": "custom", "content": {"type": "stop"}},
        }
        msg = self.kc.session.msg("comm_msg", content)
        self.kc.shell_channel.send(msg)

    def interrupt(self) -> None:
        self.km.interrupt_kernel()

    def close(self) -> None:
        self._stop = True
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self._reader.join(2)

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Deltas:
    """The widget's delta messages of one cell, in order."""

    seqs: list[int] = field(default_factory=list)
    text: str = ""
    first_at: float | None = None


def deltas(ex: Execution) -> Deltas:
    out = Deltas()
    for m in ex.of_type("comm_msg"):
        data = m.content.get("data", {})
        if data.get("method") != "custom":
            continue
        c = data["content"]
        if c.get("type") == "delta":
            out.seqs.append(c["seq"])
            out.text += c.get("text", "")
            if out.first_at is None:
                out.first_at = m.received
    return out
