"""The ASGI application: a table of route handlers, health, metrics and errors as JSON.

A route handler is anything with a ``path``, its ``methods`` and an async ``handle``. The
guest routes below are one kind; the demo page is another; the OpenAI-compatible routes
(``/v1/chat/completions`` with SSE, ``/v1/embeddings``, :mod:`wasinn.serve.openai`) over a
GGML guest are a third: they plug into the same table and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from wasinn.core import GuestCancelled, GuestTrap, Interruption, TimeLimitExceeded, WasinnError
from wasinn.serve.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_WAITING
from wasinn.serve.metrics import Metrics
from wasinn.serve.pool import GuestPool, GuestResult

log = logging.getLogger("wasinn.serve")

# A guest's exit code says whose fault a failure was (sysexits): usage, data, input.
CLIENT_ERROR_EXITS = frozenset({64, 65, 66})
CLIENT_GONE = 499  # nginx's code for a client that closed the connection first
CLIENT_LEFT = "the client left"  # why its guest was interrupted
SHUTTING_DOWN = "the server is shutting down"  # new requests' 503 while it drains


class HTTPFailure(Exception):
    """A request that ends in an error status with a one-line JSON reason."""

    def __init__(self, status: int, message: str, **details: object) -> None:
        super().__init__(message)
        self.status = status
        self.details = details


class RouteHandler(Protocol):
    @property
    def path(self) -> str: ...
    @property
    def methods(self) -> Sequence[str]: ...
    @property
    def metric_name(self) -> str: ...

    async def handle(self, request: Request) -> Response: ...


@dataclass
class ServerState:
    """What every handler shares: the metrics, the limits on bodies and on waiting."""

    metrics: Metrics = field(default_factory=Metrics)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_waiting: int = DEFAULT_MAX_WAITING  # per pool (route): requests waiting for a worker slot
    mapped_responses: bool = False  # ServeConfig.mapped_responses
    draining: bool = False  # set at SIGTERM (wasinn.serve.lifecycle): new requests get 503
    pools: list[GuestPool] = field(default_factory=list)
    limiters: dict[GuestPool, anyio.CapacityLimiter] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)  # after the pools: the runtime

    def limiter(self, pool: GuestPool) -> anyio.CapacityLimiter:
        """The pool's slots as seen by the event loop (made in it: anyio binds it there)."""
        limiter = self.limiters.get(pool)
        if limiter is None:
            limiter = self.limiters[pool] = anyio.CapacityLimiter(pool.slots)
        return limiter

    def waiting(self, pool: GuestPool) -> int:
        limiter = self.limiters.get(pool)
        return limiter.statistics().tasks_waiting if limiter is not None else 0

    def stuck_pool(self) -> GuestPool | None:
        """A pool whose every worker has been busy past the time limit, if there is one."""
        return next((pool for pool in self.pools if pool.stuck >= pool.slots), None)


def error_response(status: int, message: str, **details: object) -> JSONResponse:
    return JSONResponse({"error": message, **details}, status_code=status)


async def read_body(request: Request, state: ServerState) -> bytes:
    """The whole body, refused with 413 as soon as it passes the server's limit."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > state.max_body_bytes:
        raise HTTPFailure(413, f"the body of {declared} bytes is over the limit of {state.max_body_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > state.max_body_bytes:
            raise HTTPFailure(413, f"the body is over the limit of {state.max_body_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def query_args(request: Request) -> list[str]:
    """``?name=road&dims=1x2`` → ``--name road --dims 1x2``; ``?flag`` → ``--flag``; ``?arg=X`` → ``X``."""
    args: list[str] = []
    for key, value in request.query_params.multi_items():
        if "\x00" in key or "\x00" in value:  # a guest's argv is C strings: it would see less
            raise HTTPFailure(400, f"the query parameter {key!r} holds a NUL byte, which no argument can")
        if key == "arg":
            args.append(value)
        else:
            args.append(f"--{key}")
            if value:
                args.append(value)
    return args


@asynccontextmanager
async def interrupt_when_gone(
    request: Request, interruption: Interruption, scope: anyio.CancelScope | None = None
) -> AsyncIterator[None]:
    """While inside, a client that disconnects interrupts the guest and cancels ``scope``.

    Use it only once the body has been read, and leave it before a response that listens
    itself (Starlette's StreamingResponse): ASGI promises nothing about two receivers.
    """

    async def watch() -> None:
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # noqa: BLE001 - a receive that fails is no disconnect to act on
            return
        interruption.interrupt(CLIENT_LEFT)
        if scope is not None:
            scope.cancel()  # a request still waiting for a worker leaves the queue

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def run_guest(
    state: ServerState,
    pool: GuestPool,
    body: bytes,
    args: list[str],
    on_stdout: Callable[[bytes], object] | None = None,
    *,
    mapped: bool = False,
    request: Request | None = None,
    interruption: Interruption | None = None,
) -> GuestResult:
    """Run in a worker thread; its route's queue full → 503, a guest stopped → 500 (504: time).

    With ``request`` (its body read), a client that disconnects stops its guest, or takes
    it out of the queue, and the answer is 499. ``interruption`` stops it from elsewhere.
    """
    interruption = interruption or Interruption()
    limiter = state.limiter(pool)
    waiting = limiter.statistics().tasks_waiting
    # Only a request that would wait counts against --max-waiting: those running hold a slot.
    # No await between this check and the limiter's acquire, so no other request slips in.
    if limiter.available_tokens < 1 and waiting >= state.max_waiting:
        raise HTTPFailure(
            503, f"{waiting} requests are already waiting for a worker of this route; retry later"
        )
    run = partial(pool.run, body, args, on_stdout, mapped=mapped, interruption=interruption)
    try:
        with anyio.CancelScope() as scope:
            watching = interrupt_when_gone(request, interruption, scope) if request else nullcontext()
            async with watching:
                # Waiting happens here, not in a thread: only the pool's workers ever hold a thread.
                return await anyio.to_thread.run_sync(run, limiter=limiter)
        # Only a cancel while it waited for a worker ends up here; a running guest is interrupted.
        raise HTTPFailure(CLIENT_GONE, f"{CLIENT_LEFT} before a worker was free")
    except GuestCancelled as cancelled:
        raise HTTPFailure(CLIENT_GONE if str(cancelled) == CLIENT_LEFT else 503, str(cancelled)) from None
    except TimeLimitExceeded as exceeded:
        raise HTTPFailure(504, str(exceeded)) from None
    except GuestTrap as trap:  # a trap, or the gas or memory limit: the guest's own fault
        raise HTTPFailure(500, str(trap)) from None
    except WasinnError as err:
        raise HTTPFailure(500, str(err)) from None


def guest_status(result: GuestResult) -> None:
    """Raise the HTTP failure a non-zero exit stands for."""
    if result.exit_code == 0:
        return
    status = 400 if result.exit_code in CLIENT_ERROR_EXITS else 500
    reason = result.last_error_line or f"the guest exited with code {result.exit_code}"
    raise HTTPFailure(status, reason, exit_code=result.exit_code)


@dataclass
class GuestRoute:
    """``POST /NAME``: body → stdin, query → arguments, stdout → body, exit code → status."""

    name: str
    pool: GuestPool
    state: ServerState
    methods: Sequence[str] = ("GET", "POST")

    @property
    def path(self) -> str:
        return f"/{self.name}"

    @property
    def metric_name(self) -> str:
        return self.name

    async def handle(self, request: Request) -> Response:
        body = await read_body(request, self.state)
        mapped = self.state.mapped_responses
        args = query_args(request)
        result = await run_guest(self.state, self.pool, body, args, mapped=mapped, request=request)
        guest_status(result)
        return Response(
            result.stdout,
            media_type="application/octet-stream",
            headers={"x-wasinn-exit-code": "0", "x-wasinn-guest-ms": f"{result.seconds * 1000:.2f}"},
        )


def _endpoint(handler: RouteHandler, state: ServerState) -> Callable[[Request], Awaitable[Response]]:
    metrics = state.metrics

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        metrics.started()
        status = CLIENT_GONE
        try:
            try:
                if state.draining:
                    raise HTTPFailure(503, SHUTTING_DOWN)
                response = await handler.handle(request)
            except HTTPFailure as failure:
                response = error_response(failure.status, str(failure), **failure.details)
            except ClientDisconnect:  # it left before its whole body came: no one to answer
                response = Response(status_code=CLIENT_GONE)
            except asyncio.CancelledError:
                if not state.draining:
                    raise
                # The drain is over and uvicorn gave up on this request (its guest is stuck in
                # a host call): answer it, rather than end in uvicorn's traceback and no answer.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                response = error_response(503, SHUTTING_DOWN)
            except Exception as err:  # a wasinn bug must not take the server down; one line
                log.exception("internal error on %s", request.url.path)
                response = error_response(500, f"internal error: {type(err).__name__}: {err}")
            status = response.status_code
            return response
        finally:
            metrics.finished(handler.metric_name, status, time.perf_counter() - started)

    return endpoint


def create_app(handlers: Sequence[RouteHandler], state: ServerState) -> Starlette:
    async def healthz(request: Request) -> Response:
        if state.draining:
            return JSONResponse({"status": "draining", "error": SHUTTING_DOWN}, status_code=503)
        stuck = state.stuck_pool()
        if stuck is not None:
            limit = stuck.runtime.limits.time_limit_ms
            reason = f"all {stuck.slots} workers of {stuck.name} are busy past the {limit} ms time limit"
            return JSONResponse({"status": "stuck", "route": stuck.name, "error": reason}, status_code=503)
        return JSONResponse({"status": "ok", "routes": [h.path for h in handlers]})

    async def metrics(request: Request) -> Response:
        pools = [(pool.name, pool.running, state.waiting(pool), pool.stuck) for pool in state.pools]
        return PlainTextResponse(state.metrics.render(pools), media_type="text/plain; version=0.0.4")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # uvicorn has stopped accepting and let the requests in flight finish (graceful stop).
        for pool in state.pools:
            pool.close()
        running = sum(pool.running for pool in state.pools)
        if running:  # stuck in native code: freeing the models under it could crash the host
            log.error("%d guest(s) still running at shutdown; the models are not released", running)
            return
        for close in state.closers:
            close()

    async def not_routed(request: Request, exc: Exception) -> Response:
        """Starlette's own 404 and 405 (plain text by default) as the server's one-line JSON."""
        status = getattr(exc, "status_code", 500)
        message = f"{getattr(exc, 'detail', exc)}: {request.method} {request.url.path}"
        if request.url.path.startswith("/v1/"):  # OpenAI's error shape, as its routes answer
            error: object = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        else:
            error = message
        return JSONResponse({"error": error}, status_code=status, headers=getattr(exc, "headers", None))

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *(
            Route(handler.path, _endpoint(handler, state), methods=list(handler.methods))
            for handler in handlers
        ),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: not_routed})
    app.state.wasinn = state  # for the server that runs it (wasinn.serve.lifecycle: the drain)
    return app
