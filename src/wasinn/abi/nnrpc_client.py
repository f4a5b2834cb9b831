"""The client end of nn-rpc: unary calls to a WasmEdge-protocol server, failures as errno.

No wasm here: :mod:`wasinn.abi.ephemeral_rpc` decodes guest memory and calls this. Every
failure, whatever its cause (a status with an ``errno`` trailer, a dead or absent server, an
expired deadline, a bug), leaves as :class:`RemoteError` carrying the i32 the guest sees
(spec nn-rpc §4, §5.4–§5.6), never as a hang or an exception that would trap the guest.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wasinn.abi import _nnrpc_wire as _wire
from wasinn.core import ConfigError, Errno, NNError

if TYPE_CHECKING:
    import grpc

log = logging.getLogger("wasinn.nn")

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
_LEADING_INT = re.compile(r"^-?\d+")
# Large tensors and outputs both ways (spec §5.7); no keepalive pings: a gRPC-core server
# (WasmEdge's) answers frequent pings with GOAWAY, which kills the call in flight (§5.6).
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.enable_retries", 0),
    # After a failed connect gRPC waits up to 120 s before trying again, failing every call
    # meanwhile: a long-lived client (a server process of guests) would not see its model
    # server come back for minutes. Reconnect within a second or two instead.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class RemoteError(NNError):
    """A forwarded call failed; ``code`` is the i32 the guest gets, verbatim.

    The server's errno may lie outside :class:`Errno` (any int32 passes through, as in
    WasmEdge's client), so ``errno`` is only the nearest member and ``code`` is what counts.
    """

    def __init__(self, message: str, code: int, status: str = "") -> None:
        known = code in Errno._value2member_map_
        super().__init__(message, Errno(code) if known else Errno.RUNTIME_ERROR)
        self.code = code
        self.status = status  # the gRPC status code's name ("" when no status came back)


def errno_from_trailer(value: str | bytes | None) -> int:
    """The guest's errno for a failed call whose ``errno`` trailer is ``value`` (spec §4, §5.5).

    The leading decimal integer, if it fits an int32; a missing, unparsable or out-of-range
    trailer, or 0 on a failed call (which WasmEdge turns into a success without output), is 5.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    match = _LEADING_INT.match(value or "")
    if match is None:
        return Errno.RUNTIME_ERROR
    code = int(match.group())
    if code == 0 or not INT32_MIN <= code <= INT32_MAX:
        return Errno.RUNTIME_ERROR
    return code


def grpc_target(uri: str) -> str:
    """The gRPC target of a ``--nn-rpc-uri``/``--listen`` value.

    ``unix:PATH`` and ``unix:///abs`` are gRPC's own; ``tcp:HOST:PORT`` is ours, for
    ``HOST:PORT`` (also taken bare, as WasmEdge does). ``unix://rel`` is refused: gRPC reads
    the part after ``//`` as an authority and binds ``/rel`` in the filesystem root (§5.10).
    """
    if uri.startswith("unix://") and not uri.startswith("unix:///"):
        raise ConfigError(
            f"{uri!r}: unix:// must be followed by an absolute path (unix:///abs/path); "
            f"for a relative path write unix:{uri[len('unix://') :]}"
        )
    if uri.startswith("unix:"):
        if not uri[len("unix:") :].lstrip("/"):
            raise ConfigError(f"{uri!r}: no socket path")
        return uri
    if uri.startswith("unix-abstract:"):
        return uri
    target = uri[len("tcp:") :] if uri.startswith("tcp:") else uri
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdecimal():
        raise ConfigError(f"{uri!r}: expected unix:PATH, unix:///ABS_PATH or tcp:HOST:PORT")
    return target


@dataclass(frozen=True)
class ClientOptions:
    """``wasinn run --nn-rpc-uri URI [--nn-rpc-timeout SECONDS]``."""

    uri: str
    # Per-call deadline; None waits as long as the server works (loads and long generations
    # are legitimate). A dead server fails fast either way: the channel does not wait for it.
    timeout: float | None = None

    def __post_init__(self) -> None:
        grpc_target(self.uri)  # refuse a bad URI at start, with its reason
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--nn-rpc-timeout must be positive, not {self.timeout}")


class RpcClient:
    """One gRPC channel to one server, shared by every instance of a host process.

    The channel connects lazily at the first call, so a missing server is only an errno
    when the guest first reaches it (as in WasmEdge, §4).
    """

    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self._target = grpc_target(options.uri)
        self._channel: grpc.Channel | None = None
        self._calls: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Whether the server has wasinn's lifecycle extension; None until a call tells.
        self.lifecycle: bool | None = None

    def _callable(self, method: str) -> Any:
        with self._lock:
            call = self._calls.get(method)
            if call is None:
                import grpc  # only the rpc code paths need grpcio

                if self._channel is None:
                    self._channel = grpc.insecure_channel(self._target, options=CHANNEL_OPTIONS)
                call = self._calls[method] = self._channel.unary_unary(
                    _wire.method_path(method),
                    request_serializer=_wire.identity,
                    response_deserializer=_wire.identity,
                )
            return call

    def call(self, method: str, request: bytes, *, timeout: float | None = None) -> bytes:
        """The response bytes of one unary call; raises :class:`RemoteError` on any failure.

        ``timeout`` (seconds) tightens the client's own deadline for this call (a guest's
        time limit); the sooner of the two applies.
        """
        import grpc

        deadline = self.options.timeout
        if timeout is not None:
            deadline = timeout if deadline is None else min(deadline, timeout)
        function = _wire.HOST_FUNCTION[method]
        try:
            response: bytes = self._callable(method)(request, timeout=deadline)
        except grpc.RpcError as failure:
            raise self._remote_error(function, failure) from None
        except Exception as err:  # a grpcio surprise must still reach the guest as an errno
            raise RemoteError(f"{function}: nn-rpc call failed: {type(err).__name__}: {err}", 5) from None
        return response

    def _remote_error(self, function: str, failure: Any) -> RemoteError:
        code = failure.code() if hasattr(failure, "code") else None
        details = failure.details() if hasattr(failure, "details") else str(failure)
        trailer = None
        metadata = failure.trailing_metadata() if hasattr(failure, "trailing_metadata") else None
        for key, value in metadata or ():
            if key == "errno":
                trailer = value
        errno = errno_from_trailer(trailer)
        name = code.name if code is not None else "unknown"
        reason = "" if trailer is not None else " (no errno from the server)"
        message = f"{function} via nn-rpc {self.options.uri}: {name}: {details}{reason}"
        kind = DeadlineExpired if name == "DEADLINE_EXCEEDED" else RemoteError
        return kind(message, errno, name)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None
            self._calls.clear()


class DeadlineExpired(RemoteError):
    """The call ran past its deadline (``--nn-rpc-timeout`` or the guest's time limit)."""


_clients: dict[ClientOptions, RpcClient] = {}
_clients_lock = threading.Lock()


def client_for(options: ClientOptions) -> RpcClient:
    """The process's client for ``options``: one channel however many instances run."""
    with _clients_lock:
        client = _clients.get(options)
        if client is None:
            client = _clients[options] = RpcClient(options)
        return client


def nn_rpc_client(options: ClientOptions | None, preload: Sequence[object] = ()) -> RpcClient | None:
    """The client a runtime forwards through (None: models run locally); with one,
    ``--nn-preload`` entries are ignored with a warning, as WasmEdge does (§4)."""
    if options is None:
        return None
    if preload:
        log.warning("--nn-preload is ignored with --nn-rpc-uri: the server holds the models")
    return client_for(options)
