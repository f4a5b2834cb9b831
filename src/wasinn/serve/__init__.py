"""``wasinn serve``: WASI command guests as HTTP functions, one instance per request.

The route layer (:mod:`wasinn.serve.app`) maps paths to handlers; the guest pool
(:mod:`wasinn.serve.pool`) runs a compiled module with per-request stdio under the server's
one :class:`~wasinn.host.Runtime`, so preloaded models are shared by every request.
Starlette and uvicorn are imported only here (the ``serve`` extra), never by ``import wasinn``.
"""
