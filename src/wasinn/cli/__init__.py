"""The ``wasinn`` command. Options mirror WasmEdge's where WasmEdge has one."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from wasinn.cli._errors import (
    INTERNAL_ERROR,
    INTERRUPTED,
    LIMIT_EXIT,
    TRAP_EXIT,
    USAGE_ERROR,
    error_line,
    usage_line,
)
from wasinn.cli.options import limit_options, limits_from, world_options
from wasinn.cli.rpc import client_options as rpc_client_options

if TYPE_CHECKING:
    from wasinn.abi.nnrpc_client import ClientOptions

LOG_FORMAT = "wasinn: %(message)s"  # the host's log lines on stderr (the warm host's too)
DEBUG_ENV = "WASINN_DEBUG"  # set: an internal error shows its traceback instead of one line


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger("wasinn")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    click.echo(error_line(message), err=True)
    sys.exit(code)


class LazyGroup(click.Group):
    """Imports a subcommand's module only when that command runs (or help lists it)."""

    LAZY = {
        "im2tensor": "wasinn.cli.tools:im2tensor_command",
        "visualize": "wasinn.cli.tools:visualize_command",
        "demo": "wasinn.cli.tools:demo_command",
        "build": "wasinn.cli.tools:build_command",
        "models": "wasinn.cli.models:models_command",
        "bench": "wasinn.cli.bench:bench_command",
        "serve": "wasinn.cli.serve:serve_command",
        "batch": "wasinn.cli.serve:batch_command",
        "rpc-server": "wasinn.cli.rpc:rpc_server_command",
        "host": "wasinn.cli.host:host_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.LAZY.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's ``main``, with every failure one ``wasinn: error:`` line and a documented code."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as bare:  # ``wasinn`` alone: the help is the answer
            bare.show()
            sys.exit(bare.exit_code)
        except click.UsageError as usage:
            click.echo(usage_line(usage), err=True)
            sys.exit(USAGE_ERROR)
        except click.FileError as unreadable:
            fail(unreadable.format_message(), USAGE_ERROR)
        except click.ClickException as failure:
            fail(failure.format_message(), failure.exit_code)
        except click.Abort:
            fail("interrupted", INTERRUPTED)
        except Exception as err:  # a wasinn bug: one line, the traceback only on request
            if os.environ.get(DEBUG_ENV):
                raise
            fail(
                f"internal error: {type(err).__name__}: {err} (set {DEBUG_ENV}=1 for the traceback)",
                INTERNAL_ERROR,
            )
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wasinn", prog_name="wasinn")
def main() -> None:
    """Run WebAssembly programs that do neural-network inference through WASI-NN."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@world_options
@limit_options()
@click.option("-v", "--verbose", is_flag=True, help="Log every WASI-NN call's failures and timings.")
@rpc_client_options
@click.option(
    "--warm",
    is_flag=True,
    help="Run in the warm host, starting it if needed (as WASINN_WARM=1; see `wasinn host`).",
)
@click.argument("module", metavar="MODULE.wasm")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(
    dirs: tuple[str, ...],
    env: tuple[str, ...],
    preload: tuple[str, ...],
    no_cache: bool,
    verbose: bool,
    warm: bool,  # noqa: ARG001 (wasinn.warm.client acts on it before click runs)
    module: str,
    args: tuple[str, ...],
    nn_rpc: ClientOptions | None = None,
    **limit_values: int | None,
) -> None:
    """Run MODULE.wasm (a WASI command) with ARGS; exit with the guest's exit code."""
    from wasinn.core import GuestTrap, LimitExceeded, WasinnError
    from wasinn.host import Runtime

    configure_logging(verbose)
    if not Path(module).is_file():
        fail(f"{module}: no such file" if not Path(module).exists() else f"{module}: not a file")
    try:
        limits = limits_from(limit_values)
        runtime = Runtime(
            dirs=dirs, env=env, preload=preload, cache=not no_cache, limits=limits, nn_rpc=nn_rpc
        )
        code = runtime.run(module, args)
    except LimitExceeded as exceeded:
        fail(str(exceeded), LIMIT_EXIT)
    except GuestTrap as trap:
        fail(str(trap), TRAP_EXIT)
    except WasinnError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", INTERRUPTED)
    except Exception as err:  # a wasinn bug: say so in one line, the traceback only with -v
        if verbose:
            traceback.print_exc()
            sys.exit(INTERNAL_ERROR)
        fail(f"internal error: {type(err).__name__}: {err} (run with -v for the traceback)", INTERNAL_ERROR)
    sys.exit(code)


@main.command("backends")
def backends_command() -> None:
    """List the WASI-NN backends and whether their framework is installed here."""
    from wasinn.abi._wasmedge import CODE_OF_ENCODING
    from wasinn.backends import backends

    for info in backends():
        state = "installed" if info.installed else f"missing (pip install 'wasinn[{info.extra}]')"
        click.echo(f"{CODE_OF_ENCODING[info.encoding]:>2} {info.name:<16} {state}")
