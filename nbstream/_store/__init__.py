"""The store: one SQLite file of request keys and their results (``store.py``), the
request key (``keys.py``), and the reply cache that answers a request from a store
(``cache.py``).

Below ``_http`` and ``_batch``, above ``_core``: a ``Client(cache=)`` reads it and a
batch writes it, and neither imports the other for it.
"""
