"""The stub backend (wasinn.testing.nnrpc_stub) behind an nn-rpc server; importable and runnable.

``python tests/nnrpc_stub_server.py URI NAME=MODEL.json ...`` prints the address once it
serves and runs until SIGTERM or SIGKILL: for the tests that kill the server process.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Sequence

from wasinn.core import ExecutionTarget, GraphEncoding, ModelRegistry, NNSession, Preload
from wasinn.rpc._host import RemoteHost
from wasinn.rpc.server import RpcServer, ServerOptions
from wasinn.testing.nnrpc_stub import StubBackend


def stub_host(models: dict[str, str], backend: StubBackend | None = None) -> RemoteHost:
    """A server's state for ``models`` (name → stub JSON file), all on one stub backend."""
    stub = backend or StubBackend()
    preloads = [
        Preload(name, GraphEncoding.ONNX, ExecutionTarget.CPU, (path,)) for name, path in models.items()
    ]
    registry = ModelRegistry(preloads, lambda _: stub)
    return RemoteHost(registry, NNSession(lambda _: stub, registry))


def main(argv: Sequence[str]) -> None:
    uri, *entries = argv
    models = dict(entry.split("=", 1) for entry in entries)
    server = RpcServer(stub_host(models), ServerOptions(uri))
    print(server.start(), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    server.stop(0)


if __name__ == "__main__":
    main(sys.argv[1:])
