"""Running the app under uvicorn, and stopping it: the drain at SIGTERM (or Ctrl-C).

At the signal the server keeps its socket open but answers every new request 503 (``the
server is shutting down``; ``/healthz`` too, so a load balancer takes it out), and lets the
requests in flight, streams included, finish. When none is left, or ``drain_seconds`` less
its last 2 s have passed (the guests still running are then interrupted: 503), uvicorn's own
shutdown closes the connections (1 s at most), the server releases its models (not while a
guest still runs: a worker stuck in native code may hold them) and uvicorn raises the signal
again: the process ends as SIGTERM says, well within ``drain_seconds``, stuck worker or not.

Should anything still hold the process (a shutdown step stuck in native code, even one that
holds the GIL), the signal also armed faulthandler's watchdog, a C thread that needs no GIL:
at ``drain_seconds`` it writes every thread's stack to stderr and ends the process (status 1).
"""

from __future__ import annotations

import faulthandler
import logging
import time
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from wasinn.core import ConfigError
from wasinn.serve.app import SHUTTING_DOWN, ServerState

log = logging.getLogger("wasinn.serve")

# The end of the drain kept for uvicorn's shutdown: 1 s for the connections to close (uvicorn
# takes whole seconds), then the models' release, with room to spare before the watchdog.
SHUTDOWN_SECONDS = 2
CONNECTIONS_CLOSE_SECONDS = 1
MIN_DRAIN_SECONDS = 3.0  # so requests in flight get at least 1 s


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose stop at a signal is a drain (the module's docstring)."""

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_seconds: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_seconds = drain_seconds
        self.drain_started: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain_started is not None:  # a second signal: shut down now (twice Ctrl-C: force)
            super().handle_exit(sig, frame)
            return
        self.drain_started = time.monotonic()
        faulthandler.dump_traceback_later(self.drain_seconds, exit=True)
        self.state.draining = True
        # uvicorn records the signal and raises it again once it has stopped, so the process
        # ends as the signal says; its stop waits for on_tick below.
        super().handle_exit(sig, frame)
        self.should_exit = False

    async def on_tick(self, counter: int) -> bool:
        if self.drain_started is not None and not self.should_exit:
            # uvicorn's tasks are the requests being answered, a stream until its last event.
            busy = len(self.server_state.tasks)
            window = self.drain_seconds - SHUTDOWN_SECONDS
            if not busy:
                self.should_exit = True
            elif time.monotonic() - self.drain_started >= window:
                log.error(
                    "%d request(s) still running after %.3g s of draining; interrupting them", busy, window
                )
                for pool in self.state.pools:
                    pool.interrupt_all(SHUTTING_DOWN)
                self.should_exit = True
        return await super().on_tick(counter)


def serve(app: Starlette, *, host: str, port: int, drain_seconds: float, log_level: str) -> bool:
    """Serve ``app`` (made by ``build_app``) until a signal has drained it; False when the
    server could not start (uvicorn has logged why)."""
    if drain_seconds < MIN_DRAIN_SECONDS:
        raise ConfigError(f"a drain takes at least {MIN_DRAIN_SECONDS:g} s, got {drain_seconds:g}")
    state: ServerState = app.state.wasinn
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=CONNECTIONS_CLOSE_SECONDS,
    )
    server = DrainingServer(config, state, drain_seconds)
    try:
        server.run()
    finally:
        faulthandler.cancel_dump_traceback_later()
    return server.started
