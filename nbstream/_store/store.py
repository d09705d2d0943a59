"""The store: one SQLite file (the standard library's ``sqlite3``) that outlives the
kernel. Results are keyed by the request key (``keys.request_key``), so the same file
serves a batch (which requests are still missing) and the reply cache of a client.

Schema (format ``nbstream.store`` version 1)::

    meta(name TEXT PRIMARY KEY, value TEXT)     format, version, definition (JSON)
    results(key TEXT PRIMARY KEY,               one row per request ever finished
            request TEXT,                       JSON: api, base_url, model, messages,
                                                system, params (never a key or header)
            status TEXT,                        done | failed | cancelled
            final INTEGER,                      1: never sent again (done, or refused
                                                by the server as a bad request)
            text, finish_reason, input_tokens, output_tokens, latency_s, ttft_s,
            attempts, error, status_code, started_at, finished_at,
            turn TEXT)                          Turn.to_dict() as JSON (partial reply
                                                kept for failed and cancelled ones)
    rows(position INTEGER PRIMARY KEY,          the current batch, one row per input
         key TEXT, input TEXT, error TEXT)      (key NULL and error set: not sent)

A ``done`` result is never overwritten. Writes go through one ``Writer`` thread
(``writer.py``) in small transactions (whatever finished since its last commit, at most
``MAX_TRANSACTION`` results): WAL mode, ``synchronous=NORMAL``, so a killed process loses
only the results it had not yet handed over, a few milliseconds' worth, never a committed
one, and never leaves half a row.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .._core.errors import ConfigurationError
from .._core.transcript import Turn

__all__ = ["FORMAT", "UPSERT", "Result", "Store", "connect"]

FORMAT = "nbstream.store"
VERSION = "1"
Status = Literal["done", "failed", "cancelled"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    final INTEGER NOT NULL,
    text TEXT,
    finish_reason TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    latency_s REAL,
    ttft_s REAL,
    attempts INTEGER NOT NULL,
    error TEXT,
    status_code INTEGER,
    started_at REAL,
    finished_at REAL,
    turn TEXT
);
CREATE TABLE IF NOT EXISTS rows (
    position INTEGER PRIMARY KEY,
    key TEXT,
    input TEXT NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS rows_key ON rows(key);
"""

UPSERT = """
INSERT INTO results (key, request, status, final, text, finish_reason, input_tokens,
    output_tokens, latency_s, ttft_s, attempts, error, status_code, started_at,
    finished_at, turn)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    request = excluded.request, status = excluded.status, final = excluded.final,
    text = excluded.text, finish_reason = excluded.finish_reason,
    input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
    latency_s = excluded.latency_s, ttft_s = excluded.ttft_s,
    attempts = excluded.attempts, error = excluded.error,
    status_code = excluded.status_code, started_at = excluded.started_at,
    finished_at = excluded.finished_at, turn = excluded.turn
WHERE results.status != 'done'
"""


def connect(path: str) -> sqlite3.Connection:
    """A connection with the store's settings (autocommit off; ``with conn:`` commits)."""
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@dataclass(slots=True)
class Result:
    """One finished request, as the store keeps it."""

    key: str
    request: str  # canonical JSON, no key
    status: Status
    final: bool
    turn: Turn | None
    attempts: int
    error: str | None = None
    status_code: int | None = None
    started_at: float | None = None  # Unix seconds
    finished_at: float | None = None

    def values(self) -> tuple[Any, ...]:
        turn = self.turn
        text = finish = turn_json = None
        tin = tout = latency = ttft = None
        if turn is not None:
            d = turn.to_dict()
            m = d["metrics"]  # float32 arrival times: 6 decimals keep all they hold
            m["arrivals"] = [round(a, 6) for a in m["arrivals"]]
            turn_json = _dumps(d)
            choice = d["choices"][0] if d["choices"] else {}
            text, finish = choice.get("text"), choice.get("finish_reason")
            usage = d["usage"] or {}
            tin, tout = usage.get("input_tokens"), usage.get("output_tokens")
            latency, ttft = d["metrics"]["elapsed_s"], d["metrics"]["ttft_s"]
        return (
            self.key,
            _json_text(self.request),
            self.status,
            int(self.final),
            _text(text),
            finish,
            tin,
            tout,
            latency,
            ttft,
            self.attempts,
            _text(self.error),
            self.status_code,
            self.started_at,
            self.finished_at,
            turn_json,
        )


def _text(s: str | None) -> str | None:
    """Text SQLite can hold (UTF-8): a lone surrogate (half an emoji's escape pair, as
    a server or a prompt may carry one) becomes U+FFFD; everything else is kept."""
    if s is None or s.isascii():
        return s
    try:
        s.encode()
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return s


def _json_text(s: str) -> str:
    """JSON text SQLite can hold, losing nothing: a lone surrogate is written as its
    ``\\u`` escape (the same JSON value)."""
    if s.isascii():
        return s
    try:
        s.encode()
    except UnicodeEncodeError:
        return json.dumps(json.loads(s), separators=(",", ":"))
    return s


def _dumps(obj: Any) -> str:
    """Compact JSON of a turn: orjson (3 µs for a 50-event turn; ``json`` takes 45, most
    of it writing the arrival times' floats), ``json`` with ``\\u`` escapes for what
    orjson refuses (a lone surrogate, an integer beyond 64 bits)."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(obj, separators=(",", ":"))


class Store:
    """An open store file. Setup and reads happen on the caller's thread; results are
    written by a ``Writer`` (one per run)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise ConfigurationError(
                f"store={self.path!r}: the folder {folder!r} does not exist. Create it, "
                "or give another path."
            )
        try:
            conn = connect(self.path)
            with conn:
                conn.executescript(_SCHEMA)
                meta = dict(conn.execute("SELECT name, value FROM meta"))
                if not meta:
                    conn.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [
                            ("format", FORMAT),
                            ("version", VERSION),
                            ("created_at", repr(time.time())),
                        ],
                    )
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"store={self.path!r} is not an nbstream store ({exc}). Give another "
                "path."
            ) from None
        if meta and (meta.get("format") != FORMAT or meta.get("version") != VERSION):
            conn.close()
            raise ConfigurationError(
                f"store={self.path!r} holds format {meta.get('format')!r} version "
                f"{meta.get('version')!r}; this nbstream reads {FORMAT!r} version "
                f"{VERSION}. Give another path."
            )
        self._conn = conn
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Store {self.path!r}>"

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._conn:
            yield self._conn

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, name: str) -> str | None:
        """Engine state kept with the batch (e.g. a provider batch id)."""
        with self._cursor() as c:
            row = c.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        with self._cursor() as c:
            c.execute(
                "INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                "value = excluded.value",
                (name, value),
            )

    # -- the batch's definition ---------------------------------------------------------
    def row_keys(self) -> list[str | None]:
        with self._cursor() as c:
            return [k for (k,) in c.execute("SELECT key FROM rows ORDER BY position")]

    def adopt(
        self,
        definition: dict[str, Any],
        rows: Sequence[tuple[str | None, str, str | None]],
        *,
        resume: bool,
    ) -> None:
        """Make this store the store of the batch ``definition`` with ``rows``
        (``(key, input JSON, error)`` per position). A store that holds another batch is
        refused, saying what differs, unless ``resume``: then its results whose
        requests match are reused and the rows are replaced."""
        new = json.dumps(definition, sort_keys=True)
        old = self.get_meta("definition")
        if old == new:
            return  # the same batch again: resume where it stopped
        if old is not None and not resume:
            raise ConfigurationError(self._differs(json.loads(old), definition, rows))
        with self._cursor() as c:
            c.execute("DELETE FROM rows")
            c.executemany(
                "INSERT INTO rows (position, key, input, error) VALUES (?, ?, ?, ?)",
                (
                    (i, key, _json_text(given), _text(error))
                    for i, (key, given, error) in enumerate(rows)
                ),
            )
            c.execute(
                "INSERT INTO meta VALUES ('definition', ?) ON CONFLICT(name) DO "
                "UPDATE SET value = excluded.value",
                (new,),
            )

    def _differs(
        self,
        old: dict[str, Any],
        new: dict[str, Any],
        rows: Sequence[tuple[str | None, str, str | None]],
    ) -> str:
        parts: list[str] = []
        for name in ("api", "base_url", "model", "system", "template", "params"):
            if old.get(name) != new.get(name):
                parts.append(f"{name} {old.get(name)!r} there, {new.get(name)!r} here")
        old_keys = self.row_keys()
        new_keys = [k for k, _, _ in rows]
        if len(old_keys) != len(new_keys):
            parts.append(f"{len(old_keys)} rows there, {len(new_keys)} here")
        differ = [
            i
            for i in range(min(len(old_keys), len(new_keys)))
            if old_keys[i] != new_keys[i]
        ]
        if differ:
            shown = ", ".join(map(str, differ[:5])) + (", …" if len(differ) > 5 else "")
            parts.append(f"{len(differ)} of the rows ask something else (rows {shown})")
        reusable = len(set(old_keys) & set(new_keys) - {None})
        what = "; ".join(parts) or "the batch definition differs"
        return (
            f"store={self.path!r} holds another batch: {what}. Give this batch its "
            f"own store=, or pass resume=True to reuse the answers whose requests "
            f"match ({reusable} of them) and send the rest."
        )

    # -- reading results ----------------------------------------------------------------
    def finished(self, keys: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """``{key: (status, final)}`` for the keys that have a result."""
        want = list(dict.fromkeys(keys))
        out: dict[str, tuple[str, bool]] = {}
        with self._cursor() as c:
            for i in range(0, len(want), 500):
                part = want[i : i + 500]
                marks = ",".join("?" * len(part))
                q = f"SELECT key, status, final FROM results WHERE key IN ({marks})"
                for k, status, final in c.execute(q, part):
                    out[k] = (status, bool(final))
        return out

    def lookup_turn(self, key: str) -> dict[str, Any] | None:
        """The stored turn of a ``done`` request, as a dict."""
        with self._cursor() as c:
            row = c.execute(
                "SELECT turn FROM results WHERE key = ? AND status = 'done'", (key,)
            ).fetchone()
        if row is None or row[0] is None:
            return None
        turn: dict[str, Any] = json.loads(row[0])
        return turn

    def rows_with_results(self, columns: str) -> list[tuple[Any, ...]]:
        """``(position, row error, <columns of results>)`` for every row, in order."""
        with self._cursor() as c:
            return c.execute(
                f"SELECT r.position, r.error, {columns} FROM rows r "
                "LEFT JOIN results s ON s.key = r.key ORDER BY r.position"
            ).fetchall()

    def save(self, result: Result) -> None:
        """Write one result now (the reply cache: one request at a time)."""
        values = result.values()
        with self._cursor() as c:
            c.execute(UPSERT, values)
