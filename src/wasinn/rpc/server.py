"""The server end of nn-rpc: preloaded models served over gRPC in WasmEdge's protocol.

Every RPC runs the same :mod:`wasinn.core` operations as a local guest's call (through
:class:`~wasinn.rpc._host.RemoteHost`), so checks, errno, per-graph locks and the
frameworks' first-use gates are the local ones. Unlike the released WasmEdge servers
(spec nn-rpc §5), every non-OK status carries a numeric ``errno`` trailer, requests and
outputs of any size pass, outputs come back whole, the server listens on unix sockets and
loopback only unless told otherwise, and it will not take a socket path from a live server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from wasinn.abi import _nnrpc_wire as _wire
from wasinn.abi._errors import answer
from wasinn.abi.nnrpc_client import grpc_target
from wasinn.core import (
    ConfigError,
    Errno,
    GuestTrap,
    Interruption,
    ModelRegistry,
    NNError,
    NNSession,
    Preload,
)
from wasinn.rpc._host import RemoteHost

log = logging.getLogger("wasinn.rpc")

UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass(frozen=True)
class ServerOptions:
    """``wasinn rpc-server --listen URI [--workers N] [--allow-remote]``."""

    listen: str
    # Calls in flight at once; each waits in its own thread (a compute holds one for its length).
    workers: int = 16
    # TCP on an address other than loopback: plaintext and unauthenticated, as WasmEdge's.
    allow_remote: bool = False


def listen_target(options: ServerOptions) -> tuple[str, str | None]:
    """gRPC's address for ``options.listen`` and the socket path it binds (None for TCP).

    Refuses a non-loopback TCP address without ``allow_remote`` (§5.11) and a unix path that
    a live server answers on (gRPC would silently take it over, §5.10).
    """
    target = grpc_target(options.listen)
    if target.startswith("unix-abstract:"):
        return target, None
    if target.startswith("unix:"):
        path = target[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]  # unix:///abs
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise ConfigError(f"socket path {path!r} is longer than {UNIX_PATH_MAX} bytes")
        _refuse_live_socket(path)
        return target, path
    host = target.rpartition(":")[0].strip("[]")
    if not options.allow_remote and not _is_loopback(host):
        raise ConfigError(
            f"{options.listen}: not a loopback address; the service has no authentication "
            "(pass --allow-remote to listen there anyway)"
        )
    if options.allow_remote and not _is_loopback(host):
        log.warning("listening on %s: anyone who reaches it can run the preloaded models", target)
    return target, None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_live_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        return  # a stale file left by a killed server: gRPC replaces it
    finally:
        probe.close()
    raise ConfigError(f"{path}: another server is listening on this socket")


# (the server's state, the request's bytes, grpc's context of the call) → the reply's bytes
Operation = Callable[[RemoteHost, bytes, Any], bytes]


def _load_by_name(host: RemoteHost, request: bytes, call: Any) -> bytes:
    name, config = _wire.decode_load_by_name(request)
    return _wire.encode_handle(host.load_by_name(name, config.encode("utf-8")))


def _init(host: RemoteHost, request: bytes, call: Any) -> bytes:
    return _wire.encode_handle(host.init_execution_context(_wire.decode_handle(request)))


def _set_input(host: RemoteHost, request: bytes, call: Any) -> bytes:
    host.set_input(*_wire.decode_set_input(request))
    return b""


def _compute(host: RemoteHost, request: bytes, call: Any) -> bytes:
    stop = Interruption()
    # Runs when the call ends for any reason: after a normal return it changes nothing.
    call.add_callback(lambda: stop.interrupt("the nn-rpc client left"))
    host.compute(_wire.decode_handle(request), stop)
    return b""


def _compute_single(host: RemoteHost, request: bytes, call: Any) -> bytes:
    host.compute_single(_wire.decode_handle(request))
    return b""


def _fini_single(host: RemoteHost, request: bytes, call: Any) -> bytes:
    host.fini_single(_wire.decode_handle(request))
    return b""


def _get_output(host: RemoteHost, request: bytes, call: Any) -> bytes:
    return _wire.encode_output(host.get_output(*_wire.decode_get_output(request)))


def _get_output_single(host: RemoteHost, request: bytes, call: Any) -> bytes:
    return _wire.encode_output(host.get_output(*_wire.decode_get_output(request), single=True))


def _unload(host: RemoteHost, request: bytes, call: Any) -> bytes:
    host.unload(_wire.decode_handle(request))
    return b""


def _finalize(host: RemoteHost, request: bytes, call: Any) -> bytes:
    host.finalize_execution_context(_wire.decode_handle(request))
    return b""


OPERATIONS: dict[str, Operation] = {
    "Unload": _unload,
    "FinalizeExecutionContext": _finalize,
    "LoadByName": _load_by_name,
    "LoadByNameWithConfig": _load_by_name,
    "InitExecutionContext": _init,
    "SetInput": _set_input,
    "Compute": _compute,
    "ComputeSingle": _compute_single,
    "GetOutput": _get_output,
    "GetOutputSingle": _get_output_single,
    "FiniSingle": _fini_single,
}


def failure_details(function: str, errno: int, message: str) -> str:
    # WasmEdge's text first, so anything matching it still does; then the reason.
    return f'failed to call host function "{function}", errno={errno}: {message}'


def model_server(preloads: Sequence[str | Preload], options: ServerOptions) -> RpcServer:
    """A server for ``--nn-preload`` entries (read now: a missing file fails here, naming it)."""
    from wasinn.backends import get_backend, model_files
    from wasinn.host.options import parse_preload

    parsed = [p if isinstance(p, Preload) else parse_preload(p) for p in preloads]
    registry = ModelRegistry(parsed, get_backend, model_files)
    return RpcServer(RemoteHost(registry, NNSession(get_backend, registry)), options)


class RpcServer:
    """A gRPC server for one :class:`RemoteHost`: ``start``, then ``wait`` or ``stop``."""

    def __init__(self, host: RemoteHost, options: ServerOptions) -> None:
        self.host = host
        self.options = options
        self._server: Any = None
        self._socket_path: str | None = None
        self.address = ""

    def _handler(self, method: str, operation: Operation) -> Callable[[bytes, Any], bytes]:
        import grpc

        function = _wire.HOST_FUNCTION[method]

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return operation(self.host, request, context)
            except NNError as err:
                errno, message = int(err.errno), str(err)
                log.info("%s: errno %d: %s", function, errno, message)
            except GuestTrap as err:  # the caller left (§5.12), or a limit: no guest here to stop
                errno, message = Errno.RUNTIME_ERROR, str(err)
                log.info("%s: %s", function, message)
            except _wire.WireError as err:
                errno, message = Errno.RUNTIME_ERROR, f"malformed request: {err}"
                log.warning("%s: %s", function, message)
            except Exception as err:  # errno 5 (§5.4), traceback logged, counted (abi/_errors.py)
                unexpected = answer(err, "nn-rpc", function, Errno.RUNTIME_ERROR)
                errno, message = int(unexpected.errno), str(unexpected)
            context.set_trailing_metadata((("errno", str(errno)),))
            context.abort(grpc.StatusCode.UNKNOWN, failure_details(function, errno, message))
            raise AssertionError("unreachable: abort raises")

        return handle

    def start(self) -> str:
        """Bind and serve in background threads; the address bound (the real port for ``:0``)."""
        import grpc

        target, socket_path = listen_target(self.options)
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="wasinn-rpc"),
            options=[
                ("grpc.max_receive_message_length", -1),  # §5.7: no 4 MiB cap on set_input
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a second server on a busy port fails, not shares it
            ],
            maximum_concurrent_rpcs=None,
        )
        services = [(f"{_wire.PACKAGE}.{name}", methods) for name, methods in _wire.SERVICES.items()]
        services += [(f"{_wire.EXT_PACKAGE}.{name}", methods) for name, methods in _wire.EXT_SERVICES.items()]
        for service, methods in services:
            handlers = {
                method: grpc.unary_unary_rpc_method_handler(
                    self._handler(method, OPERATIONS[method]),
                    request_deserializer=_wire.identity,
                    response_serializer=_wire.identity,
                )
                for method in methods
            }
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        try:
            port = server.add_insecure_port(target)
        except RuntimeError as err:
            raise ConfigError(f"cannot listen on {self.options.listen}: {err}") from None
        if not port:
            raise ConfigError(f"cannot listen on {self.options.listen}")
        server.start()
        self._server, self._socket_path = server, socket_path
        if socket_path is None and not target.startswith("unix-abstract:"):
            host = target.rpartition(":")[0]
            self.address = f"tcp:{host}:{port}"
        else:
            self.address = self.options.listen
        return self.address

    def wait(self) -> None:
        if self._server is not None:
            self._server.wait_for_termination()

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (calls in flight get ``grace`` seconds), remove the socket file, release
        the models."""
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None
        if self._socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._socket_path)
            self._socket_path = None
        self.host.close()

    def __enter__(self) -> RpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
