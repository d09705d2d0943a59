"""The one writer of a run: a thread that commits the results it is handed, whatever has
queued up since its last commit, in one transaction (at most ``MAX_TRANSACTION``).
``put`` never blocks the event loop; ``flush`` and ``close`` return futures."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

from .store import UPSERT, Result, connect

__all__ = ["MAX_TRANSACTION", "Writer"]

_FLUSH = object()
_CLOSE = object()
MAX_TRANSACTION = 256  # results per commit at most, should the writer fall behind


class Writer:
    """The one writer of a run: a thread that commits what it is handed, whatever has
    queued up since its last commit in one transaction. ``put`` never blocks."""

    def __init__(self, path: str, on_error: Callable[[BaseException], None]) -> None:
        self._path = path
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._on_error = on_error
        self.error: BaseException | None = None
        self.written = 0
        self.commits = 0
        self._thread = threading.Thread(
            target=self._main, name="nbstream-batch-store", daemon=True
        )
        self._thread.start()

    def put(self, result: Result) -> None:
        self._queue.put(result)

    def flush(self) -> Future[None]:
        """Done when everything put before is committed (or failed: ``error``)."""
        fut: Future[None] = Future()
        self._queue.put((_FLUSH, fut))
        return fut

    def close(self) -> Future[None]:
        fut: Future[None] = Future()
        self._queue.put((_CLOSE, fut))
        return fut

    def _main(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = connect(self._path)
        except sqlite3.Error as exc:
            self._fail(exc)
        while True:
            items = [self._queue.get()]
            while len(items) < MAX_TRANSACTION and not self._queue.empty():
                items.append(self._queue.get_nowait())
            results = [i for i in items if isinstance(i, Result)]
            if results and conn is not None and self.error is None:
                try:
                    values = [r.values() for r in results]
                    with conn:
                        conn.executemany(UPSERT, values)
                    self.written += len(values)
                    self.commits += 1
                except Exception as exc:  # disk full, a locked file, a bug: say so
                    self._fail(exc)
            closing = False
            for item in items:
                if isinstance(item, tuple):
                    kind, fut = item
                    fut.set_result(None)
                    closing = closing or kind is _CLOSE
            if closing:
                if conn is not None:
                    conn.close()
                return

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self._on_error(exc)
