"""The warm host: a per-user daemon that keeps the engine, compiled modules and models
loaded, and the thin client that hands ``wasinn run`` to it (like Mercurial's chg).

Nothing here may be imported eagerly by :mod:`wasinn.warm.client`'s callers but the
client and :mod:`wasinn.warm.protocol`: the client's whole point is to start in a few
milliseconds, before numpy, wasmtime or click are imported.
"""
