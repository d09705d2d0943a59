"""``nbstream.batch()``: check everything that can be checked before sending anything,
plan the requests (one per distinct request key), open the store, and start the job."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import weakref
from typing import TYPE_CHECKING, Any

from .._core.errors import ConfigurationError
from .._core.response_format import normalise
from .._store.keys import canonical, keyed
from .._store.store import Store
from .engine import Options, Work, engine_for
from .inputs import build_rows
from .job import Job

if TYPE_CHECKING:
    from .._http.client import Client

__all__ = ["batch"]


def _positive(name: str, value: Any, *, integer: bool = False) -> None:
    ok = isinstance(value, int if integer else int | float) and not isinstance(
        value, bool
    )
    if not ok or not math.isfinite(value) or value <= 0:
        kind = "a whole number" if integer else "a number"
        raise ConfigurationError(
            f"batch({name}={value!r}): give {kind} above 0, e.g. {name}="
            f"{16 if name == 'concurrency' else 3000}."
        )


def batch(
    inputs: Any,
    client: Client | None = None,
    template: str | None = None,
    concurrency: int = 16,
    rpm: float | None = None,
    tpm: float | None = None,
    store: str | os.PathLike[str] | None = None,
    engine: str = "local",
    on_error: str = "continue",
    resume: bool = False,
    *,
    system: str | None = None,
    model: str | None = None,
    max_retries: int = 5,
    progress: bool | None = None,
    ray_address: str | None = None,
    ray_workers: int | None = None,
    poll_interval: float | None = None,
    **params: Any,
) -> Job:
    """Send many requests, keep every answer in a store, and return the running
    ``Job`` at once.

    ``inputs``: a list of prompts, of message lists or of dicts, or a pandas DataFrame
    (with ``template="... {column} ..."``); a row's ``system`` and ``params`` columns
    apply to that row. ``concurrency`` requests in flight at most; never more than
    ``rpm`` requests or ``tpm`` tokens a minute, spread evenly. ``store``: an SQLite
    file that survives the kernel: run the same batch again and only what is missing is
    sent (a temporary file if None). ``on_error="stop"`` stops at the first request that
    fails for good. ``**params`` go with every request (``temperature``,
    ``max_tokens`` …).

    ``engine``: ``"local"`` (asyncio in this process), ``"ray"`` (Ray actors send the
    requests; ``ray_address=`` a cluster to connect to, ``ray_workers=`` how many
    actors), ``"openai-batch"`` or ``"anthropic-batch"`` (the provider's batch API:
    submitted once, polled every ``poll_interval`` seconds, collected into the
    store; ``job.status()`` says where the provider is).

    >>> job = nbstream.batch(df, template="Sentiment of: {review}", model="m",
    ...                      concurrency=64, rpm=3000, store="runs/sentiment.sqlite")  # doctest: +SKIP
    >>> job.wait().to_pandas()  # doctest: +SKIP
    """
    _positive("concurrency", concurrency, integer=True)
    if rpm is not None:
        _positive("rpm", rpm)
    if tpm is not None:
        _positive("tpm", tpm)
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigurationError(
            f"batch(max_retries={max_retries!r}): give a whole number, 0 or more."
        )
    if on_error not in ("continue", "stop"):
        raise ConfigurationError(
            f"batch(on_error={on_error!r}): use 'continue' (record the failure and go "
            "on) or 'stop' (stop at the first request that fails for good)."
        )
    if template is not None and not isinstance(template, str):
        raise ConfigurationError("batch(template=...) takes a string like 'Q: {col}'.")
    the_engine = engine_for(
        engine,
        ray_address=ray_address,
        ray_workers=ray_workers,
        poll_interval=poll_interval,
    )
    if params.get("response_format") is not None:
        # a model class is kept as its JSON schema: data, like the rest of the request
        # (a row's reply is checked against the schema; parsed values are JSON data)
        params = {**params, "response_format": normalise(params["response_format"])[0]}
    try:
        canonical(params)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"batch(**params): the parameters must be JSON values ({exc})."
        ) from None
    if client is None:
        from .._http.client import Client

        client = Client()
    check = getattr(the_engine, "check", None)
    if check is not None:
        check(client)
    rows = build_rows(inputs, template=template, system=system)

    # -- plan: one Work per distinct request ---------------------------------------
    scrub = client._scrubber.scrub
    the_model = model or client.model
    keys: list[str | None] = []
    plan: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.error is not None:
            keys.append(None)
            continue
        merged = {**params, **row.params}
        if row.params.get("response_format") is not None:
            try:
                merged["response_format"] = normalise(merged["response_format"])[0]
            except ConfigurationError as exc:
                row.error = str(exc)
                keys.append(None)
                continue
        m = row.model or the_model
        try:
            key, text = keyed(
                client.api, client.base_url, m, row.messages, row.system, merged
            )
        except (TypeError, ValueError) as exc:
            row.error = f"the messages or parameters are not JSON values ({exc})"
            keys.append(None)
            continue
        keys.append(key)
        entry = plan.get(key)
        if entry is None:
            limit = merged.get("max_tokens", merged.get("max_completion_tokens"))
            plan[key] = {
                "request": scrub(text),
                "row": row,
                "params": merged,
                "model": None if m == client.model else m,
                "positions": [row.position],
                # as the accumulator estimates: the messages' JSON and the system
                "input_tokens": 1
                + (len(canonical(row.messages)) + len(row.system or "")) // 4,
                "max_tokens": limit if isinstance(limit, int) else None,
            }
        else:
            entry["positions"].append(row.position)

    # -- the store ------------------------------------------------------------------
    temp_dir = None
    if store is None:
        temp_dir = tempfile.mkdtemp(prefix="nbstream-batch-")
        store = os.path.join(temp_dir, "batch.sqlite")
    the_store = Store(store)
    digest = hashlib.sha256(
        "\n".join(k or f"-{r.error}" for k, r in zip(keys, rows, strict=True)).encode()
    ).hexdigest()
    definition = {
        "api": client.api,
        "base_url": client.base_url,
        "model": the_model,
        "system": system,
        "template": template,
        "params": json.loads(scrub(canonical(params))),
        "rows": len(rows),
        "digest": digest,
    }
    row_records = [
        (k, scrub(json.dumps(r.columns, ensure_ascii=False, default=str)), r.error)
        for k, r in zip(keys, rows, strict=True)
    ]
    try:
        the_store.adopt(definition, row_records, resume=resume)
    except BaseException:
        the_store.close()
        raise
    settled = the_store.finished(plan)
    work = [
        Work(
            key=key,
            request=e["request"],
            messages=e["row"].messages,
            system=e["row"].system,
            params=e["params"],
            model=e["model"],
            positions=tuple(e["positions"]),
            input_tokens=e["input_tokens"],
            max_tokens=e["max_tokens"],
        )
        for key, e in plan.items()
        if not (key in settled and (settled[key][0] == "done" or settled[key][1]))
    ]
    frame = inputs if type(inputs).__module__.startswith("pandas") else None
    job = Job(
        rows=rows,
        work=work,
        store=the_store,
        engine=the_engine,
        options=Options(concurrency, rpm, tpm, max_retries),
        client=client,
        on_error=on_error,
        keys=keys,
        settled=settled,
        frame=frame,
        progress=progress,
    )
    if temp_dir is not None:
        weakref.finalize(job, shutil.rmtree, temp_dir, ignore_errors=True)
    return job
