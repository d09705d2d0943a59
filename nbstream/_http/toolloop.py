"""The tool loop: ask the model; while it asks for tools, run them and ask again with
their results, until it answers without a call or ``max_steps`` model steps are done.

Each model step is one request, run as any other (retries, fallbacks, middleware),
into the caller's turn, so the live view streams every step: the text, then each call's
name and arguments as they arrive. When a step asks for tools, its reply becomes a step
of its own in ``turn.steps`` and the turn starts again, empty, for the next one.

Every call of a step runs at once: async functions as tasks on the stream's loop,
sync ones on worker threads. Whatever a call does, it ends as a ``ToolResult`` that
goes back to the model: a function that raises, an unknown tool, arguments that are
not JSON or do not fit the schema, a refused approval: each is an error result the
model can read, never the end of the loop.

Stop (cancelling the stream) lands wherever the loop is: during a model step the turn
is ``cancelled`` as any other; during tool calls, a running async function is
cancelled, a running sync one cannot be, so its result says it finishes in the
background (``status="background"``), and the turn, the empty next step, is
``cancelled`` with every step so far kept.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .._core.events import Event, StepStart, ToolRun
from .._core.reply import ToolCall
from .._core.toolresult import ToolResult, ToolStatus, cut, result_text
from .._core.transcript import Turn
from .tooloptions import Approve

if TYPE_CHECKING:
    from .._core.tools import Tool
    from .runner import Plan

__all__ = ["THREADS", "ToolLoop"]

STOP_GRACE_S = 1.0  # how long a cancelled async tool may take to end before it is
# reported as finishing in the background
MAX_ERROR_CHARS = 2_000  # an exception's message, as the model reads it
MAX_TRACEBACK_CHARS = 8_000

Emit = Callable[[list[Event]], None]

# Sync tools run here, not on the loop's default executor: a thread still running after
# a Stop must not hold up asyncio.run()'s shutdown, which waits for that executor.
THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="nbstream-tool")


class ToolLoop:
    """Runs one question's tool loop into ``turn`` (see the module docstring)."""

    def __init__(
        self, plan: Plan, turn: Turn, emit: Emit, loop: asyncio.AbstractEventLoop
    ) -> None:
        assert plan.tools is not None
        self.plan, self.turn, self.emit, self.loop = plan, turn, emit, loop
        self.options = plan.tools
        self.by_name = {t.name: t for t in self.options.tools}
        self.scrub = plan.spec.scrubber.scrub

    async def run(self) -> Turn:
        turn, plan, opts = self.turn, self.plan, self.options
        request = replace(turn.request)
        started = turn.created_at
        step = 0  # the model step running now (0 asks the question)
        while True:
            await plan.once(turn, self.emit, self.loop)
            calls = turn.tool_calls
            if turn.status != "complete" or not calls:
                return turn
            with turn._lock:
                for c in calls:  # a server that sends no ids: the history needs them
                    c.id = c.id or f"call_{step}_{c.index}"
                turn._next_step(request, started)
                results = [
                    ToolResult(c.id, c.name, c.arguments, c.input) for c in calls
                ]
                turn._steps.extend(results)
            if step + 1 >= opts.max_steps:
                self._stop_at_limit(calls, results, step)
                return turn
            await self._run_calls(calls, results, step)
            step += 1
            request = replace(turn.request, messages=[r.message() for r in results])
            started = time.time()
            self.emit([StepStart(step)])
            plan = self._next_plan()

    def _next_plan(self) -> Plan:
        """The next model step: the question and every step so far, as history (so
        each fallback renders it in its own wire format), tool choice back to auto."""
        from .runner import Plan

        first, turn = self.plan, self.turn
        so_far = Turn(turn.request)
        so_far._steps = list(turn._steps)
        so_far.status = "complete"
        history = (*first.history, so_far)
        spec = first.client._spec(
            [],
            first.system,
            first.spec.settings.model,
            first.params,
            history,
            tools=first.spec.tools,
        )
        return Plan(first.client, spec, [], first.system, first.params, history)

    # -- the calls of one step --------------------------------------------------------
    async def _run_calls(
        self, calls: Sequence[ToolCall], results: Sequence[ToolResult], step: int
    ) -> None:
        tasks = [
            self.loop.create_task(self._call(c, r, step))
            for c, r in zip(calls, results, strict=True)
        ]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            # Stop: each call records how it ended (gather cancelled them), bounded
            await asyncio.wait(tasks, timeout=STOP_GRACE_S + 1)
            turn = self.turn
            with turn._lock:
                for r in results:
                    if not r.done:  # never got to record it
                        r.finish("cancelled", _STOPPED, now=0.0, error=_STOPPED)
                if turn.status == "streaming":
                    turn.status = "cancelled"
            raise

    async def _call(self, call: ToolCall, r: ToolResult, step: int) -> None:
        """One call, to its end: never raises (but for Stop's cancellation, which it
        records and swallows: the loop re-raises it)."""
        tool = self.by_name.get(call.name)
        try:
            if tool is None:
                names = ", ".join(self.by_name) or "none"
                self._end(
                    r, "error", f"Unknown tool {call.name!r}. The tools: {names}."
                )
                return
            if call.error or call.input is None:
                why = call.error or "the arguments are missing"
                self._end(r, "error", f"The call to {call.name} was not made: {why}.")
                return
            try:
                args, kwargs = tool.bind(call.input)
            except ValueError as exc:  # ToolArgumentsError
                self._end(r, "error", str(exc))
                return
            approve = self.options.approve
            if approve is not None:
                self._event(r, "approval", step)
                if not await self._approved(approve, call, r):
                    return
            await self._invoke(tool, args, kwargs, r, step)
        except asyncio.CancelledError:
            if not r.done:
                self._end(r, "cancelled", _STOPPED)
        finally:
            self._event(r, r.status, step)

    async def _approved(self, approve: Approve, call: ToolCall, r: ToolResult) -> bool:
        try:
            answer = approve(call)
            if inspect.isawaitable(answer):
                answer = await answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._end(r, "denied", f"Not run: approving it failed ({_exc_text(exc)}).")
            return False
        if answer is True:
            return True
        self._end(r, "denied", "Not run: the user did not approve this call.")
        return False

    async def _invoke(
        self,
        tool: Tool,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        r: ToolResult,
        step: int,
    ) -> None:
        r.started_at = time.time()
        t0 = time.perf_counter()
        self._event(r, "running", step)
        ctx = contextvars.copy_context()  # the caller's context (e.g. a cell's output)
        work: asyncio.Future[Any]
        thread: Future[Any] | None = None
        if tool.is_async:
            work = self.loop.create_task(tool.fn(*args, **kwargs), context=ctx)
        else:
            thread = THREADS.submit(
                functools.partial(ctx.run, tool.fn, *args, **kwargs)
            )
            work = asyncio.wrap_future(thread, loop=self.loop)
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:
            self._stopped(work, thread, r, time.perf_counter() - t0)
            raise
        now = time.perf_counter() - t0
        try:
            value = work.result()
            if inspect.isawaitable(value):  # a sync function that returned a coroutine
                value = await value
                now = time.perf_counter() - t0
        except asyncio.CancelledError:  # the function cancelled itself
            self._end(r, "error", "CancelledError: the tool cancelled itself.", now=now)
        except (Exception, SystemExit) as exc:
            tb = "".join(traceback.format_exception(exc))
            self._end(
                r,
                "error",
                _exc_text(exc),
                now=now,
                traceback=cut(
                    self.scrub(tb), MAX_TRACEBACK_CHARS
                ),  # scrubbed, then cut
            )
        else:
            text = result_text(value, None)
            self._end(
                r, "complete", text, now=now, value=value, limit=tool.max_result_chars
            )

    def _stopped(
        self,
        work: asyncio.Future[Any],
        thread: Future[Any] | None,
        r: ToolResult,
        now: float,
    ) -> None:
        if thread is None:  # async: it ends at its next await
            work.cancel()
            self._end(r, "cancelled", _STOPPED, now=now)
            task = self.loop.create_task(_settle(work, r))  # … or runs on: said so
            _settling.add(task)
            task.add_done_callback(_settling.discard)
        elif thread.cancel():  # still waiting for a thread: it never ran
            self._end(r, "cancelled", _STOPPED, now=now)
        else:
            self._end(
                r,
                "background",
                "Stopped by the user while the function ran; it finishes in the "
                "background and its result is not used.",
                now=now,
            )

    def _end(
        self,
        r: ToolResult,
        status: ToolStatus,
        text: str,
        *,
        now: float = 0.0,
        value: Any = None,
        traceback: str | None = None,
        limit: int = MAX_ERROR_CHARS,
    ) -> None:
        # a function's result or error may hold the key: scrubbed before it is cut, or
        # a key cut in the middle would leave most of itself behind
        text = cut(self.scrub(text), limit)
        with self.turn._lock:
            error = None if status == "complete" else text
            r.finish(
                status, text, now=now, error=error, value=value, traceback=traceback
            )

    def _event(self, r: ToolResult, status: str, step: int) -> None:
        done = r.done
        self.emit(
            [
                ToolRun(
                    r.call_id,
                    r.name,
                    r.arguments,
                    status,
                    result=r.result if done else None,
                    is_error=r.is_error if done else False,
                    elapsed_s=r.elapsed_s if done else None,
                    step=step,
                )
            ]
        )

    def _stop_at_limit(
        self, calls: Sequence[ToolCall], results: Sequence[ToolResult], step: int
    ) -> None:
        limit = self.options.max_steps
        note = f"Not run: the step limit was reached (max_steps={limit} model steps)."
        turn = self.turn
        with turn._lock:
            for r in results:
                r.finish("skipped", note, now=0.0, error=note)
            turn.status = "incomplete"
            turn.extra["step_limit"] = limit
            n = len(calls)
            turn.warnings.append(
                f"Stopped after {step + 1} model steps (max_steps={limit}): the model "
                f"asked for {n} more tool call{'s' if n != 1 else ''}, not run. Ask it "
                "to go on, or allow more steps with max_steps=."
            )
        for r in results:
            self._event(r, r.status, step)


_STOPPED = "Stopped by the user before the call ended."


_settling: set[asyncio.Task[None]] = set()


async def _settle(work: asyncio.Future[Any], r: ToolResult) -> None:
    """A cancelled async tool that does not end within the grace period is running on
    in the background: its record says so."""
    done, _ = await asyncio.wait([work], timeout=STOP_GRACE_S)
    if not done:
        r.status = "background"
        r.result = r.error = (
            "Stopped by the user; the function ignored the cancellation and runs on "
            "in the background (its result is not used)."
        )
    elif not work.cancelled():
        work.exception()  # retrieved: a late error is not reported as unhandled


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
