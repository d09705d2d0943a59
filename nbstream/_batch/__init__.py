"""Batch runs: many requests, a store that survives the kernel, rate limits, progress.

``nbstream.batch(inputs, ...)`` (``api.py``) checks and plans the requests and returns a
``Job`` (``job.py``) that runs them on an engine (``engine.py`` says what an engine is;
``local.py`` is asyncio on ``Client`` in this process, ``rayengine.py`` Ray actors,
``provider.py`` a provider's batch API). Results go to a store (``nbstream._store``:
SQLite, keyed by the request key) that also serves as the reply cache of
``Client(cache=...)``. ``inputs.py``, ``policy.py`` and ``progress.py`` are pure; the
rate-limit policy is ``nbstream._core.ratelimit``.

Layers: this package uses ``_http`` (the client), ``_store`` and ``_core``; nothing
below imports it.
"""
