"""Running a ``%%chat`` cell where it runs: awaited on the kernel's loop with a live view
(interactive Jupyter), in the background (``-b``), synchronously (terminal IPython, or
``run_cell_magic`` in a kernel), or with one deterministic output (nbclient, nbval,
papermill). Whichever way, a Stop closes the connection and the turn keeps its partial
reply."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING

from IPython.display import display

from .._core.errors import NbstreamError
from .._core.transcript import Turn
from .._http.streams import AsyncStream, Stream
from .cell_output import (
    LiveOutput,
    batch_bundle,
    keep_loop_awake,
    terminal_text,
)
from .cell_request import CellRequest
from .readout import readout as readout_of
from .readout import readout_text
from .toolblocks import Approvals

if TYPE_CHECKING:
    from .magics import ChatMagics, Mode

__all__ = ["CellRunner"]


class CellRunner:
    """Runs the cells of one ``ChatMagics``; keeps the streams it runs, for Stop."""

    def __init__(self, magics: ChatMagics) -> None:
        self.magics = magics
        self.running: set[AsyncStream | Stream] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, line: str, cell: str) -> None:
        """A cell, awaited (what the input transformer makes of ``%%chat``)."""
        request = self.magics.prepare(line, cell)
        mode = self.magics.mode()
        if mode == "terminal":
            self.run_sync(request, mode)
            return
        if request.background and mode == "interactive":
            self._start_background(request)
            return
        await self._run_async(request, mode)

    def _start_background(self, request: CellRequest) -> None:
        approvals = Approvals() if request.approve else None
        stream = request.conv.astream(
            request.message, **request.stream_params(approvals)
        )
        view = LiveOutput(stream, self.magics.allow_images, approvals)

        async def go() -> None:
            # an error or a stop shows in the cell's output, and stays in the transcript
            with contextlib.suppress(NbstreamError, asyncio.CancelledError):
                await self._consume(stream, view, request)

        task = asyncio.get_running_loop().create_task(go())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run_async(self, request: CellRequest, mode: Mode) -> None:
        approvals = Approvals() if request.approve else None
        stream = request.conv.astream(
            request.message, **request.stream_params(approvals)
        )
        interactive = mode == "interactive"
        view = (
            LiveOutput(stream, self.magics.allow_images, approvals)
            if interactive
            else None
        )
        ticker = asyncio.get_running_loop().create_task(keep_loop_awake())
        try:
            await self._consume(stream, view, request)
        except asyncio.CancelledError:
            # The kernel's interrupt button: the reply is stopped and kept; say so.
            raise KeyboardInterrupt(
                "the reply was stopped; its partial text is kept"
            ) from None
        finally:
            ticker.cancel()

    async def _consume(
        self, stream: AsyncStream, view: LiveOutput | None, request: CellRequest
    ) -> None:
        self.running.add(stream)
        try:
            async with stream:
                async for ev in stream:
                    if view is not None:
                        view.add(ev)
        finally:
            self.running.discard(stream)
            self._finish(stream.turn, view, request)

    def run_sync(self, request: CellRequest, mode: str) -> None:
        # no widget message is handled while this cell runs synchronously: ask on stdin
        stream = request.conv.stream(request.message, **request.stream_params(None))
        live = mode == "sync-kernel"
        view = LiveOutput(stream, self.magics.allow_images) if live else None
        self.running.add(stream)
        interrupted = False
        try:
            with stream:
                for ev in stream:
                    if view is not None:
                        view.add(ev)
                    elif mode == "terminal":
                        said = terminal_text(ev)
                        if said:
                            sys.stdout.write(said)
                            sys.stdout.flush()
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            self.running.discard(stream)
            if mode == "terminal":
                turn = stream.turn
                if interrupted or turn.status == "cancelled":
                    sys.stdout.write("\n[stopped: the partial reply is kept]")
                sys.stdout.write(f"\n[{readout_text(readout_of(turn))}]\n")
                sys.stdout.flush()
                self._store(request, turn)
            else:
                self._finish(stream.turn, view, request)

    def _finish(
        self, turn: Turn, view: LiveOutput | None, request: CellRequest
    ) -> None:
        self._store(request, turn)
        if view is not None:
            view.finish(turn)
        else:
            display(batch_bundle(turn, self.magics.allow_images), raw=True)

    def _store(self, request: CellRequest, turn: Turn) -> None:
        if request.output and self.magics.shell is not None:
            self.magics.shell.user_ns[request.output] = turn

    def stop_all(self) -> int:
        running = list(self.running)
        for s in running:
            s.cancel()
        return len(running)
