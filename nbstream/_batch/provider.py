"""``engine="openai-batch"`` / ``"anthropic-batch"``: the batch runs on the provider's
own batch API (half the price, done within a day) instead of one request at a time.
What differs between the two APIs is in ``openai_batch.py`` / ``anthropic_batch.py``
(a ``BatchAPI``); this module is the engine both share:

1. **Submit** the requests still missing (one batch per model, within the
   provider's limits of requests and bytes), each with ``custom_id`` = its request key
   (``custom_id``: the key when it fits the providers' limits, 1-64 characters of
   ``[A-Za-z0-9_-]``, which a SHA-256 in hex does; else ``k`` + 63 hex digits of the
   key's hash), the body being what the streaming engine sends without ``stream`` /
   ``stream_options``. More requests than one batch takes make several batches.
2. **Keep each batch's id** in the store (``meta``: ``engine.<name>``, with the custom
   ids it holds) as soon as the provider gives it. A rerun of the same batch (after
   a kernel restart, say) polls those batches instead of submitting again.
3. **Poll** every ``poll_interval`` seconds; ``job.status()`` and the progress view show
   the provider's status and counts.
4. **Collect**: each result line, matched by ``custom_id``, becomes the request's turn
   (the provider's ``completion()`` reads the whole answer, as for a server that
   ignores ``stream``) or its failure (HTTP status and message). ``400``, ``404``,
   ``413`` and ``422`` are final, as for the local engine; other failures and expired
   requests are recorded and sent again by a rerun.
5. **Stop** cancels the batches at the provider, waits (at most ``CANCEL_WAIT_S``) for
   them to say so, keeps the replies they finished, and records the rest as
   ``cancelled``. If the provider is slower than that, the batch stays in the store:
   a rerun collects what it finished.

A rerun follows, for each request still missing, the latest stored batch that holds
it. Requests that batch did not answer (expired, cancelled, a transient failure) are
then submitted again in a new batch: what a rerun is for. Turns from a batch have no
timings (``latency_s`` is empty), ``streamed`` False, and ``extra["batch"]`` = the
engine and batch id. Their ``cost`` is at the standard prices: a batch is billed at
half that by both providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from .._core.errors import ConfigurationError, NbstreamError
from .._core.pipeline import Pipeline
from .._core.providers import provider_for
from .._core.transcript import ErrorInfo, Turn
from .batchapi import BatchAPI, Line, Poll, custom_id_for
from .engine import Outcome, Run, Work
from .policy import FINAL_STATUSES
from .rest import Rest

if TYPE_CHECKING:
    from .._http.client import Client

__all__ = ["ProviderBatchEngine", "custom_id_for"]

DEFAULT_POLL_S = 30.0
CANCEL_WAIT_S = 120.0  # after Stop, for the provider to finish cancelling
MAX_POLL_FAILURES = 8  # polls in a row that fail (network, 5xx) before the job fails
YIELD_EVERY = 200  # result lines handled between two passes through the event loop


class ProviderBatchEngine:
    def __init__(self, api: BatchAPI, poll_interval: float | None = None) -> None:
        if poll_interval is not None and not (
            isinstance(poll_interval, int | float) and 0 < poll_interval < 86400
        ):
            raise ConfigurationError(
                f"batch(poll_interval={poll_interval!r}): give seconds above 0, e.g. "
                "poll_interval=30."
            )
        self.api = api
        self.name = api.name
        self.poll_interval = float(poll_interval or DEFAULT_POLL_S)
        self.polls: dict[str, Poll] = {}  # batch id → its last poll
        self._wake = asyncio.Event()

    # -- what the job asks -------------------------------------------------------------
    def check(self, client: Client) -> None:
        if client.api != self.api.api:
            other = "anthropic-batch" if client.api == "anthropic" else "openai-batch"
            raise ConfigurationError(
                f"engine={self.name!r} sends {self.api.api} requests, and this client "
                f"speaks {client.api!r}: use engine={other!r}, or a client with "
                f"api={self.api.api!r}."
            )
        if client.middleware or client.fallbacks:
            raise ConfigurationError(
                f"engine={self.name!r}: the client's middleware and fallbacks do not "
                "apply to requests the provider runs itself. Use engine='local', or a "
                "client without them."
            )

    def status(self) -> dict[str, Any]:
        polls = list(self.polls.items())  # (read from any thread: a copy at once)
        batches = [
            {"id": bid, "status": p.status, "request_counts": dict(p.counts)}
            for bid, p in polls
        ]
        out: dict[str, Any] = {"batches": batches}
        if batches:
            out["provider_status"] = batches[-1]["status"]
            out["batch_id"] = batches[-1]["id"]
        return out

    def note(self) -> str | None:
        polls = list(self.polls.items())
        if not polls:
            return None
        bid, p = polls[-1]
        counts = ", ".join(f"{v:,} {k}" for k, v in p.counts.items() if v)
        return f"{self.api.label} {bid}: {p.status}" + (
            f" ({counts})" if counts else ""
        )

    # -- running -------------------------------------------------------------------------
    async def run(self, run: Run) -> None:
        if not run.work:
            return
        run.stop.on_set(self._wake.set)
        rest = Rest(run.client)
        meta = f"engine.{self.name}"
        state: dict[str, Any] = json.loads(run.store.get_meta(meta) or '{"batches":[]}')
        pending = {custom_id_for(w.key): w for w in run.work}
        owner: dict[str, str] = {}  # custom id → the latest stored batch holding it
        for b in state["batches"]:
            for cid in b["ids"]:
                if cid in pending:
                    owner[cid] = b["id"]
        state["batches"] = [b for b in state["batches"] if b["id"] in owner.values()]
        run.store.set_meta(meta, json.dumps(state))
        submitted = {b["id"]: b["submitted_at"] for b in state["batches"]}
        resumed: dict[str, list[Work]] = {b: [] for b in submitted}
        for cid, bid in owner.items():
            resumed[bid].append(pending[cid])
        for works in resumed.values():
            for w in works:
                run.report.started(w)
        again = await self._follow(run, rest, resumed, submitted, resumed=True)
        if run.stop.is_set():
            return
        todo = again + [w for cid, w in pending.items() if cid not in owner]
        if not todo:
            return
        fresh = await self._submit(run, rest, todo, state, meta, submitted)
        await self._follow(run, rest, fresh, submitted, resumed=False)

    async def _submit(
        self,
        run: Run,
        rest: Rest,
        todo: list[Work],
        state: dict[str, Any],
        meta: str,
        submitted: dict[str, float],
    ) -> dict[str, list[Work]]:
        api = self.api
        # one batch per model (OpenAI takes one model a file) and size limit
        chunks: list[list[tuple[Work, bytes]]] = []
        last: dict[str, tuple[list[tuple[Work, bytes]], int]] = {}
        for w in todo:
            plan, _turn = run.client._request(w.messages, w.system, w.model, w.params)
            body = plan.spec.body()
            body.pop("stream", None)
            body.pop("stream_options", None)
            entry = api.entry(custom_id_for(w.key), body)
            model = str(body.get("model"))
            chunk, size = last.get(model, ([], 0))
            if not chunk or (
                len(chunk) >= api.max_requests or size + len(entry) + 1 > api.max_bytes
            ):
                chunk, size = [], 0
                chunks.append(chunk)
            chunk.append((w, entry))
            last[model] = (chunk, size + len(entry) + 1)
        out: dict[str, list[Work]] = {}
        for chunk in chunks:
            if run.stop.is_set():
                break  # what was not submitted stays pending
            bid = await api.submit(rest, [e for _, e in chunk])
            works = [w for w, _ in chunk]
            submitted[bid] = time.time()
            state["batches"].append(
                {
                    "id": bid,
                    "ids": [custom_id_for(w.key) for w in works],
                    "submitted_at": submitted[bid],
                }
            )
            run.store.set_meta(meta, json.dumps(state))  # before anything else
            out[bid] = works
            for w in works:
                run.report.started(w)
        return out

    async def _follow(
        self,
        run: Run,
        rest: Rest,
        batches: dict[str, list[Work]],
        submitted: dict[str, float],
        *,
        resumed: bool,
    ) -> list[Work]:
        """Poll ``batches`` until each ends, then collect it. Returns the requests to
        submit again (only for ``resumed`` batches: see the module's docs)."""
        live = {bid: works for bid, works in batches.items() if works}
        loop = asyncio.get_running_loop()
        cancelled_at: float | None = None
        failures = 0
        again: list[Work] = []
        while live:
            if run.stop.is_set() and cancelled_at is None:
                cancelled_at = loop.time()
                for bid in live:
                    # it may have ended meanwhile: the poll says
                    with contextlib.suppress(NbstreamError):
                        await self.api.cancel(rest, bid)
            for bid in list(live):
                try:
                    poll = await self.api.retrieve(rest, bid)
                    failures = 0
                except NbstreamError:
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        raise  # the batch id is in the store: a rerun polls again
                    continue
                self.polls[bid] = poll
                if poll.terminal:
                    works = live.pop(bid)
                    again += await self._collect(
                        run, rest, bid, poll, works, submitted.get(bid), resumed
                    )
            if not live:
                break
            if cancelled_at is not None and loop.time() - cancelled_at > CANCEL_WAIT_S:
                for bid, works in live.items():
                    for w in works:
                        turn = self._blank(run, w, bid)
                        turn.status = "cancelled"
                        self._report(
                            run,
                            w,
                            turn,
                            submitted.get(bid),
                            status="cancelled",
                            error=f"stopped; {self.api.label} {bid} was still "
                            "cancelling: a rerun collects what it finished",
                        )
                return []
            await self._sleep(self.poll_interval if cancelled_at is None else 0.5)
        return again

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _collect(
        self,
        run: Run,
        rest: Rest,
        bid: str,
        poll: Poll,
        works: list[Work],
        started_at: float | None,
        resumed: bool,
    ) -> list[Work]:
        by_id = {custom_id_for(w.key): w for w in works}
        again: list[Work] = []
        lines = await self.api.results(rest, bid, poll, list(by_id))
        for n, line in enumerate(lines, 1):
            w = by_id.pop(line.custom_id, None)
            if w is None:
                continue  # not ours, answered already, or a second line for it
            if not self._settle(run, w, line, bid, started_at, resumed):
                again.append(w)
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # Stop and the progress view stay live
        for cid, w in by_id.items():
            if not self._settle(run, w, Line(cid, "missing"), bid, started_at, resumed):
                again.append(w)
        return again

    def _settle(
        self,
        run: Run,
        w: Work,
        line: Line,
        bid: str,
        started_at: float | None,
        resumed: bool,
    ) -> bool:
        """Record ``line`` for ``w``; False when it is to be submitted again."""
        stopping = run.stop.is_set()
        if line.kind == "done":
            turn = self._turn(run, w, line.body, bid)
            if turn.status == "complete":
                self._report(run, w, turn, started_at)
                return True
            line = Line(line.custom_id, "failed", message=_why(turn))
        kind = line.kind
        transient = kind != "failed" or line.status_code not in FINAL_STATUSES
        if resumed and transient and not stopping:
            return False
        if kind == "cancelled" or (stopping and kind != "failed"):
            turn = self._blank(run, w, bid)
            turn.status = "cancelled"
            self._report(run, w, turn, started_at, status="cancelled", error="stopped")
            return True
        scrub = run.client._scrubber.scrub
        message = scrub(line.message or "") or {
            "expired": "the provider did not run it within the batch's completion "
            "window; a rerun sends it again",
            "missing": f"{self.api.label} {bid} returned no result for it",
        }.get(kind, "failed")
        if line.code and line.code not in message:
            message = f"{message} ({line.code})"
        turn = self._error_turn(run, w, bid, message, line.status_code, line.code)
        self._report(
            run,
            w,
            turn,
            started_at,
            status="failed",
            final=line.status_code in FINAL_STATUSES,
            error=message,
        )
        return True

    def _report(
        self,
        run: Run,
        w: Work,
        turn: Turn,
        started_at: float | None,
        **how: Any,
    ) -> None:
        run.report.finished(
            w, Outcome.of(turn, attempts=1, started_at=started_at, **how)
        )

    def _blank(self, run: Run, w: Work, bid: str) -> Turn:
        _plan, turn = run.client._request(w.messages, w.system, w.model, w.params)
        turn.streamed = False
        turn.extra["batch"] = {"engine": self.name, "id": bid}
        return turn

    def _turn(self, run: Run, w: Work, body: Any, bid: str) -> Turn:
        """A whole answer from the batch's results, read as a non-streamed reply."""
        turn = self._blank(run, w, bid)
        client = run.client
        provider = provider_for(client.api)
        pipe = Pipeline(provider, turn, scrubber=client._scrubber)
        pipe.apply(provider.completion(body, client._scrubber), 0.0)
        pipe.close(0.0)
        turn.metrics.elapsed_s = turn.metrics.ttft_s = None  # no timings in a batch
        return turn

    def _error_turn(
        self,
        run: Run,
        w: Work,
        bid: str,
        message: str,
        status_code: int | None,
        code: str | None = None,
    ) -> Turn:
        turn = self._blank(run, w, bid)
        turn.status = "error"
        turn.done = True
        turn.error = ErrorInfo(
            "APIStatusError" if status_code else "BatchError",
            message,
            status_code=status_code,
            code=code,
        )
        return turn


def _why(turn: Turn) -> str:
    if turn.error is not None:
        return turn.error.message
    return f"the answer in the batch's results is {turn.status}"
