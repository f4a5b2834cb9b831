"""The warm host's wire format and rendezvous: stdlib only (the client imports it).

A message is a 4-byte magic, a 4-byte big-endian length and that many bytes of a :mod:`marshal`-encoded
dict of plain values; the client's first message carries its stdin, stdout and stderr as
SCM_RIGHTS file descriptors. The socket lives in a directory only its user can enter
(0700), is itself 0600, and the daemon also checks each peer's uid with SO_PEERCRED: both
ends are the same user, the trust marshal needs. marshal, ``_socket`` and ``_signal`` are
built into the interpreter; json, socket and signal would cost the client ~4 ms of imports
(re, enum, selectors) on every run.
"""

from __future__ import annotations

import _socket
import marshal
import os
import stat
import struct

TYPE_CHECKING = False  # typing itself costs the client ~10 ms of imports
if TYPE_CHECKING:
    from _socket import socket
    from typing import Any
MARSHAL_VERSION = 4
# Every frame starts with this: a client and a host of other wasinn versions (another wire
# format) see a mismatch at once, and the client runs the command cold.
MAGIC = b"WNN1"
HEADER = len(MAGIC) + 4
FD_SIZE = struct.calcsize("i")  # the array module would import collections.abc

DIR_ENV = "WASINN_HOST_DIR"  # overrides where the socket lives (tests, several hosts)
WARM_ENV = "WASINN_WARM"  # "1": start the host on first use; "0": never use it
SOCKET_NAME = "host.sock"
LOCK_NAME = "host.lock"
LOG_NAME = "host.log"
MAX_MESSAGE = 16 << 20
# The variables that change what a run does on the host side: a daemon started under other
# values answers "cold" and the client runs the command itself.
HOST_ENV_PREFIXES = ("WASINN_", "XDG_CACHE_HOME", "OV_", "OPENVINO_", "GGML_", "LLAMA_", "CUDA_")
CLIENT_ONLY_ENV = frozenset({WARM_ENV, DIR_ENV, "WASINN_DEBUG"})


class ProtocolError(Exception):
    """The peer broke the protocol or went away."""


class UnsafeDirectory(Exception):
    """The runtime directory exists but another user owns it, or others may enter it."""


# Paths are plain strings: pathlib (with re and fnmatch) costs the client milliseconds.
def runtime_dir() -> str:
    """``$WASINN_HOST_DIR``, else ``$XDG_RUNTIME_DIR/wasinn``, else ``/tmp/wasinn-$UID``."""
    override = os.environ.get(DIR_ENV)
    if override:
        return override
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "wasinn")
    return f"/tmp/wasinn-{os.getuid()}"


def socket_path(directory: str | None = None) -> str:
    return os.path.join(directory or runtime_dir(), SOCKET_NAME)


def ensure_runtime_dir(directory: str) -> str:
    """Create ``directory`` 0700, or check that an existing one is ours and private.

    /tmp is shared: another user could create /tmp/wasinn-$UID first and wait for our
    socket, so an existing directory must be a real directory, owned by us, mode 0700.
    """
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(directory, 0o700, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UnsafeDirectory(f"{directory} is not a directory owned by uid {os.getuid()}")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise UnsafeDirectory(f"{directory} is open to other users (mode {stat.S_IMODE(info.st_mode):o})")
    return directory


def peer_uid(sock: socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def peer_allowed(sock: socket, uid: int | None = None) -> bool:
    """Only the daemon's own user may hand it commands (root is not let in either)."""
    return peer_uid(sock) == (os.getuid() if uid is None else uid)


def host_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The variables a run's host side depends on (see HOST_ENV_PREFIXES)."""
    return {
        name: value
        for name, value in environ.items()
        if name.startswith(HOST_ENV_PREFIXES) and name not in CLIENT_ONLY_ENV
    }


def build_id() -> str:
    """Which wasinn this is: a client of one checkout must not run another's daemon."""
    here = os.path.realpath(__file__)
    return f"{os.path.dirname(os.path.dirname(here))}:{os.stat(here).st_mtime_ns}"


def send(sock: socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = marshal.dumps(message, MARSHAL_VERSION)
    frame = MAGIC + struct.pack(">I", len(data)) + data
    if fds:
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
        sent = sock.sendmsg([frame], rights)
        if sent < len(frame):
            sock.sendall(frame[sent:])
    else:
        sock.sendall(frame)


def receive(sock: socket, *, max_fds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """The next message (None at a clean end of stream) and any descriptors that came with it."""
    fds: list[int] = []
    header = b""
    while len(header) < HEADER:
        if max_fds and not fds:
            chunk, ancillary, _flags, _addr = sock.recvmsg(
                HEADER - len(header), _socket.CMSG_SPACE(max_fds * FD_SIZE)
            )
            for level, kind, payload in ancillary:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                    count = len(payload) // FD_SIZE
                    fds.extend(struct.unpack(f"{count}i", payload[: count * FD_SIZE]))
        else:
            chunk = sock.recv(HEADER - len(header))
        if not chunk:
            for fd in fds:
                os.close(fd)
            if header:
                raise ProtocolError("the connection closed inside a message")
            return None, []
        header += chunk
    if header[: len(MAGIC)] != MAGIC:
        for fd in fds:
            os.close(fd)
        raise ProtocolError("not a warm host message (another wasinn version?)")
    (length,) = struct.unpack(">I", header[len(MAGIC) :])
    if length > MAX_MESSAGE:
        raise ProtocolError(f"a {length}-byte message is too large")
    body = bytearray()
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ProtocolError("the connection closed inside a message")
        body += chunk
    try:
        message = marshal.loads(bytes(body))
    except (ValueError, EOFError, TypeError) as err:
        raise ProtocolError(f"not a message: {err}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message, fds


def connect(path: str, timeout: float | None = None) -> socket:
    """A connection to the daemon at ``path``; OSError when there is none (or a stale socket)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.settimeout(None)
    except OSError:
        sock.close()
        raise
    return sock


def request(message: dict[str, Any], path: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """One control message (ping, stop, status) and its answer."""
    sock = connect(path or socket_path(), timeout)
    try:
        sock.settimeout(timeout)
        try:  # noqa: SIM105 (contextlib is one more import for the client)
            send(sock, message)
        except BrokenPipeError:
            pass  # a refusal may close the connection before reading: its answer is still there
        answer, _ = receive(sock)
    finally:
        sock.close()
    if answer is None:
        raise ProtocolError("the warm host closed the connection without an answer")
    return answer
