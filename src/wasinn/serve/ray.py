"""Scale-out on Ray: the same routes as a Ray Serve deployment, and batch segmentation on Ray Data.

Each Serve replica (and each Ray Data worker) builds its own :class:`~wasinn.host.Runtime`
from the :class:`~wasinn.serve.server.ServeConfig`: compiled modules and loaded models do not
travel between processes, the config does. ``ray`` is imported only here (the ``ray`` extra).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from wasinn.core import ConfigError, WasinnError
from wasinn.serve.config import ServeConfig
from wasinn.serve.faults import keep_fault_handlers
from wasinn.serve.server import build_app

log = logging.getLogger("wasinn.serve")
APP_NAME = "wasinn"
# How long every replica may take to start (build its runtime, load its models) on a busy
# machine before `wasinn serve --ray` gives up.
READY_SECONDS = 300.0


class ServeNotReady(WasinnError):
    """Ray Serve did not get every replica of the app running in time (or the deploy failed)."""


def _ray() -> Any:
    try:
        with keep_fault_handlers():
            import ray
    except ImportError:
        raise ConfigError("ray is not installed; pip install 'wasinn[ray]'") from None
    return ray


# Ray turns a node address of 127.0.0.1 into the machine's network address (so that other
# nodes can reach it) unless multi-node clusters are off, as they are on macOS and Windows.
# Off, every server of a local cluster (GCS, raylet, workers, Serve) binds to 127.0.0.1.
# Read when ray is imported, and inherited by the processes the cluster starts.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray's own opt-out of its usage stats (sent hourly by the cluster's dashboard server to
# usage-stats.ray.io), for the clusters wasinn starts: their processes inherit it. A value
# the user set is kept (1 is Ray's explicit opt-in).
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"


# For a machine that is busy with other work (read, like the switch above, by the cluster's
# processes from the environment the local cluster starts with; a value already set wins):
# - Ray starts its workers at nice 15, so under other processes at nice 0 a Serve replica,
#   which is the server, or its HTTP proxy got a few % of a core: a proxy took 62 s to start
#   beside three busy loops. At nice 0 they get their share, as Ray's own job drivers do.
# - Serve's controller gives a new HTTP proxy 5 s to be ready, then kills and restarts it;
#   serve.start, waiting on the first one, then fails with ActorDiedError.
# - ray.init waits 30 s for its GCS server to write its port; a clean-clone test run here saw
#   that wait run out twice in one process (no GCS log written) and a fresh process start fine
#   right after: 120 s, Ray's own choice for a GCS that is slow to open its store.
# - Its raylet has 30 s (fixed in Ray's node.py) to register with the GCS; a clean-clone test
#   run here saw a raylet that never wrote a log, once in a process where local clusters had
#   started fine before and after: a local node that did not start is started once more.
LOCAL_START_ATTEMPTS = 2
NODE_START_TIMEOUT = "The current node timed out during startup"
BUSY_MACHINE_ENV = {
    "RAY_worker_niceness": "0",
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_gcs_server_port_wait_time_s": "120",
}


def _local_only() -> None:
    os.environ[LOCAL_ONLY_ENV] = "0"
    os.environ.setdefault(USAGE_STATS_ENV, "0")
    for name, value in BUSY_MACHINE_ENV.items():
        os.environ.setdefault(name, value)
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray was imported before: its switch is already read
        constants.ENABLE_RAY_CLUSTER = False


def connect(address: str | None, **init_options: Any) -> str:
    """Join the cluster at ``address``, or start a local one on 127.0.0.1 only; its GCS address.

    Every entry point (Serve, Data) comes through here, so none starts a cluster on the
    machine's network address. ``init_options`` go to ``ray.init`` (tests: ``num_cpus``).
    """
    local = address is None and not _ray_initialized()
    if local:
        _local_only()
        init_options.setdefault("include_dashboard", False)
    ray = _ray()
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            with keep_fault_handlers():  # Ray's crash handlers would turn every guest trap into a host crash
                ray.init(address=address, ignore_reinit_error=True, **init_options)
            break
        except Exception as err:  # Ray raises a bare Exception for a node that did not start
            if not local or attempt == LOCAL_START_ATTEMPTS or NODE_START_TIMEOUT not in str(err):
                raise
            log.warning("ray: the local node did not start (%s); starting it again", NODE_START_TIMEOUT)
            ray.shutdown()
    gcs: str = ray.get_runtime_context().gcs_address
    return gcs


def _ray_initialized() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def deployment(config: ServeConfig, *, replicas: int = 1) -> Any:
    """A bound Ray Serve application serving ``config``'s routes (and page, with ``demo``)."""
    _ray()
    from ray import serve

    # Ray Serve pickles each response body from the replica to its proxy: bytes, not a mapping.
    config = dataclasses.replace(config, mapped_responses=False)

    def app_builder() -> Any:
        return build_app(config)

    class WasinnServe:
        pass

    wrapped = serve.ingress(app_builder)(WasinnServe)
    options = {"name": APP_NAME, "num_replicas": replicas, "ray_actor_options": {"num_cpus": 0}}
    return serve.deployment(**options)(wrapped).bind()


def wait_for_replicas(
    serve: Any, replicas: int, *, timeout: float = READY_SECONDS, poll: float = 0.25
) -> dict[str, int]:
    """Poll Serve's status until every replica of the app is RUNNING (and every HTTP proxy
    HEALTHY); the replicas' states.

    ``serve.run`` returns once the app answers, which can be before every replica has
    started (a busy machine: ``{'RUNNING': 1, 'STARTING': 1}``). Raises
    :class:`ServeNotReady` when the deploy failed or ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    states: dict[str, int] = {}
    proxies: list[str] = []
    while True:
        status = serve.status()
        proxies = [str(getattr(proxy, "value", proxy)) for proxy in status.proxies.values()]
        application = status.applications.get(APP_NAME)
        if application is not None:
            if str(getattr(application.status, "value", application.status)) == "DEPLOY_FAILED":
                raise ServeNotReady(f"Ray Serve could not deploy the app: {application.message}")
            states = {}
            for overview in application.deployments.values():
                for state, count in overview.replica_states.items():
                    key = str(getattr(state, "value", state))
                    states[key] = states.get(key, 0) + count
            if states == {"RUNNING": replicas} and proxies and set(proxies) == {"HEALTHY"}:
                return states
        if time.monotonic() >= deadline:
            raise ServeNotReady(
                f"Ray Serve: {replicas} replica(s) asked for, not all running after {timeout:.0f} s "
                f"(replica states: {states or 'none yet'}; HTTP proxies: {proxies or 'none yet'})"
            )
        time.sleep(poll)


def serve_on_ray(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    replicas: int = 1,
    until: threading.Event | None = None,
    ready: threading.Event | None = None,
    ready_timeout: float = READY_SECONDS,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Run ``config`` on Ray Serve at http://host:port/ until SIGTERM/SIGINT (or ``until`` is set).

    ``replicas`` processes each build the whole app (``config.workers`` guest threads per
    route in each): Ray Serve spreads the requests over them. Ready (``ready`` set, and
    ``progress`` says so) only when every replica is RUNNING; :class:`ServeNotReady` when
    that does not happen within ``ready_timeout`` seconds.
    """
    if replicas < 1:
        raise ConfigError(f"Ray Serve needs at least one replica, got {replicas}")
    _ray()
    from ray import serve

    cluster = connect(address)
    if progress is not None:
        progress(f"Ray cluster at {cluster}, {replicas} replica(s)")
    serve.start(http_options={"host": host, "port": port})
    try:
        serve.run(deployment(config, replicas=replicas), name=APP_NAME, route_prefix="/")
        wait_for_replicas(serve, replicas, timeout=ready_timeout)
        stop = until or threading.Event()
        if until is None:  # from here on a signal stops the server (before: KeyboardInterrupt)
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
        if progress is not None:
            progress(f"serving http://{host}:{port}/ with {replicas} replica(s) running")
        if ready is not None:
            ready.set()
        stop.wait()
    finally:
        with keep_fault_handlers():
            serve.shutdown()
