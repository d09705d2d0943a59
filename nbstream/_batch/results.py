"""A batch's results, read back from its store: a DataFrame, a transcript."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .._core.transcript import Transcript, Turn
from .._store.store import Store

if TYPE_CHECKING:
    import pandas

__all__ = ["RESULT_COLUMNS", "to_pandas", "transcript"]

RESULT_COLUMNS = (
    "text",
    "finish_reason",
    "status",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_s",
    "ttft_s",
    "attempts",
    "error",
)


def to_pandas(store: Store, frame: Any = None) -> pandas.DataFrame:
    """The input (``frame``, else each row's input as stored) and the result columns
    (see ``Job.to_pandas``)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("Job.to_pandas() needs pandas: pip install pandas") from None
    data = store.rows_with_results(
        "s.status, s.text, s.finish_reason, s.input_tokens, s.output_tokens, "
        "s.turn, s.latency_s, s.ttft_s, s.attempts, s.error, r.input"
    )
    columns: dict[str, list[Any]] = {c: [] for c in (*RESULT_COLUMNS, *_STRUCTURED)}
    inputs: list[dict[str, Any]] = []
    structured = False
    for _pos, row_error, status, *values, err, given in data:
        if frame is None:
            inputs.append(json.loads(given))
        if row_error is not None:
            status, err = "invalid", row_error
        elif status is None:
            status = "pending"
        text, finish, tin, tout, turn_json, latency, ttft, attempts = values
        turn = Turn.from_dict(json.loads(turn_json)) if turn_json is not None else None
        cost = turn.cost if turn is not None and (tin, tout) != (None, None) else None
        row = (text, finish, status, tin, tout, cost, latency, ttft, attempts, err)
        for name, value in zip(RESULT_COLUMNS, row, strict=True):
            columns[name].append(value)
        # response_format=: the value as JSON data (pd.json_normalize), as in
        # Transcript.to_pandas
        parsed = parse_error = None
        if turn is not None and turn.structured is not None:
            structured = True
            parsed = turn.structured.parsed_data(turn)
            parse_error = turn.parse_error
        columns["parsed"].append(parsed)
        columns["parse_error"].append(parse_error)
    df = frame.copy() if frame is not None else pd.DataFrame(inputs)
    for name in (*RESULT_COLUMNS, *(_STRUCTURED if structured else ())):
        df[f"{name}_reply" if name in df.columns else name] = columns[name]
    out: pandas.DataFrame = df
    return out


_STRUCTURED = ("parsed", "parse_error")  # columns only when a row asked for a format


def transcript(store: Store) -> Transcript:
    """Every row's stored turn, in input order (rows with no result left out)."""
    data = store.rows_with_results("s.turn")
    return Transcript(
        [Turn.from_dict(json.loads(t)) for _, _, t in data if t is not None]
    )
