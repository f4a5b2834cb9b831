"""``wasinn rpc-server`` and the ``--nn-rpc-uri`` options of ``wasinn run``, in one place."""

from __future__ import annotations

import functools
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from wasinn.cli._errors import FAILED, USAGE_ERROR
from wasinn.cli.options import preload_option

F = TypeVar("F", bound=Callable[..., Any])


def client_options(command: F) -> F:
    """``--nn-rpc-uri`` and ``--nn-rpc-timeout`` for a command that runs guests; the command
    receives ``nn_rpc`` (a :class:`~wasinn.abi.nnrpc_client.ClientOptions` or None) instead."""

    @click.option(
        "--nn-rpc-uri",
        "nn_rpc_uri",
        metavar="URI",
        help="Forward the guest's wasi_ephemeral_nn calls to an nn-rpc server (unix:PATH, "
        "unix:///ABS, tcp:HOST:PORT); its models replace --nn-preload.",
    )
    @click.option(
        "--nn-rpc-timeout",
        "nn_rpc_timeout",
        type=click.FloatRange(min=0, min_open=True),
        metavar="SECONDS",
        help="With --nn-rpc-uri: a call that takes longer returns errno 5 (default: wait).",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, nn_rpc_uri: str | None, nn_rpc_timeout: float | None, **kwargs: Any) -> Any:
        from wasinn.abi.nnrpc_client import ClientOptions
        from wasinn.core import ConfigError

        if nn_rpc_uri is None:
            if nn_rpc_timeout is not None:
                raise click.UsageError("--nn-rpc-timeout needs --nn-rpc-uri")
            return command(*args, nn_rpc=None, **kwargs)
        try:
            options = ClientOptions(nn_rpc_uri, nn_rpc_timeout)
        except ConfigError as err:
            raise click.BadParameter(str(err), param_hint="--nn-rpc-uri") from None
        return command(*args, nn_rpc=options, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.command("rpc-server", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--listen",
    "--nn-rpc-uri",
    "listen",
    required=True,
    metavar="URI",
    help="Where to serve: unix:PATH, unix:///ABS_PATH or tcp:127.0.0.1:PORT (PORT 0: any free one).",
)
@preload_option
@click.option(
    "--workers",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Calls served at once (a compute occupies one until it ends).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a TCP address other than loopback: the service has no authentication.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every failed call.")
def rpc_server_command(
    listen: str, preload: tuple[str, ...], workers: int, allow_remote: bool, verbose: bool
) -> None:
    """Serve the preloaded models over gRPC in WasmEdge's nn-rpc protocol until stopped.

    WasmEdge's `wasmedge --nn-rpc-uri` and `wasinn run --nn-rpc-uri` clients may connect;
    all of them share the models, graphs and contexts (trusted local clients only).
    """
    from wasinn.cli import configure_logging, fail
    from wasinn.core import WasinnError

    configure_logging(verbose)
    try:
        import grpc  # noqa: F401  (the extra's presence, checked before reading models)

        from wasinn.rpc.server import ServerOptions, model_server
    except ImportError as err:
        fail(f"{err.name or err} is not installed; pip install 'wasinn[rpc]'", FAILED)
    try:
        server = model_server(preload, ServerOptions(listen, workers, allow_remote))
        address = server.start()
    except WasinnError as err:
        fail(str(err), USAGE_ERROR)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"wasinn: rpc-server listening on {address}", err=True)
    sys.stderr.flush()
    try:
        stop.wait()
    finally:
        server.stop(grace=2.0)
