"""How a job shows itself where it runs: a terminal bar or not, which kind of kernel
it is displayed in, and ``job.status`` (a string that can be called for details)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import Job

__all__ = ["JobStatus", "kernel_mode", "want_bar"]


class JobStatus(str):
    """The job's status, a string (``job.status == "finished"``) that can be called
    for the details (``job.status()``)."""

    _job: Job

    def __new__(cls, value: str, job: Job) -> JobStatus:
        self = super().__new__(cls, value)
        self._job = job
        return self

    def __call__(self) -> dict[str, Any]:
        return self._job._details()


def want_bar(progress: bool | None) -> bool:
    """A text progress bar on stderr: as asked, else in a terminal only."""
    if progress is not None:
        return progress
    ip = sys.modules.get("IPython")
    if ip is not None:
        shell = ip.get_ipython()
        if shell is not None and getattr(shell, "kernel", None) is not None:
            return False  # in a notebook: the view (display the job)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def kernel_mode() -> str | None:
    """None (no IPython), ``terminal``, ``interactive`` (a notebook in a browser) or
    ``batch`` (nbclient, nbval, papermill: no stdin)."""
    ip = sys.modules.get("IPython")
    shell = ip.get_ipython() if ip is not None else None
    if shell is None:
        return None
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        return "terminal"
    return "interactive" if getattr(kernel, "_allow_stdin", False) else "batch"
