"""The live progress view of a job in a notebook (ipywidgets): a progress bar, Stop,
the counts, throughput, tokens, ETA and the last errors. The job refreshes it at most
4 times a second, from its loop thread; a Stop click (handled on the kernel's thread)
cancels the job.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import ipywidgets as w  # type: ignore[import-untyped]

from .progress import Snapshot, line

if TYPE_CHECKING:
    from .job import Job

__all__ = ["BatchView"]


class BatchView:
    """``display(job)`` shows one; several views of one job stay alike."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self.bar = w.IntProgress(
            min=0, max=max(1, job.total), layout=w.Layout(width="320px")
        )
        self.stop = w.Button(
            description="Stop",
            icon="stop",
            tooltip="Stop the batch: requests in "
            "flight are closed, their partial replies kept in the store",
        )
        self.stop.on_click(self._on_stop)
        self.numbers = w.HTML()
        self.errors = w.HTML()
        self.widget = w.VBox([w.HBox([self.bar, self.stop]), self.numbers, self.errors])
        self.update(job.snapshot())

    def _on_stop(self, _button: Any) -> None:
        self.stop.disabled = True
        self.stop.description = "Stopping"
        self._job.cancel()

    def update(self, s: Snapshot) -> None:
        self.bar.value = s.done + s.failed + s.cancelled
        self.bar.bar_style = (
            "danger"
            if s.status in ("failed", "stopped")
            else "warning"
            if s.failed or s.status == "cancelled"
            else "success"
            if s.status == "finished"
            else ""
        )
        self.numbers.value = f"<code>{html.escape(line(s))}</code>"
        # Server-sent text: escaped, so an error body's HTML stays text.
        self.errors.value = "".join(
            f"<div style='color:var(--jp-error-color1,#c00)'><code>"
            f"{html.escape(e)}</code></div>"
            for e in s.errors
        )
        if s.status != "running":
            self.stop.disabled = True
            self.stop.description = s.status.capitalize()

    def _repr_mimebundle_(self, **kw: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kw)
        if isinstance(bundle, dict):  # a stable text/plain, for nbval and logs
            bundle["text/plain"] = f"BatchView({self._job.total} rows)"
        return bundle

    def __repr__(self) -> str:
        return f"BatchView({self._job.total} rows)"
