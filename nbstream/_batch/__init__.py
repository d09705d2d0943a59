"""Batch runs: many requests, a store that survives the kernel, rate limits, progress.

``nbstream.batch(inputs, ...)`` (``api.py``) checks and plans the requests and returns a
``Job`` (``job.py``) that runs them on an engine (``engine.py`` says what an engine is;
``local.py`` is asyncio on ``Client`` in this process). Results go to a store
(``store.py``: SQLite, keyed by ``keys.request_key``) that also serves as the reply
cache of ``Client(cache=...)`` (``cache.py``). ``inputs.py``, ``keys.py``, ``policy.py``
and ``progress.py`` are pure; the rate-limit policy is ``nbstream._core.ratelimit``.

Layers: this package uses ``_http`` (the client) and ``_core``. ``store``, ``keys`` and
``cache`` use only ``_core`` and ``sqlite3``, so ``_http.client`` may import ``cache``
(lazily, when a client has a cache) without a cycle.
"""
