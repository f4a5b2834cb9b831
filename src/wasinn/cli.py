"""The ``wasinn`` command. Options mirror WasmEdge's where WasmEdge has one."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

import click

from wasinn import __version__

USAGE_ERROR = 2  # a bad option, a missing or invalid module: the person's mistake
INTERNAL_ERROR = 70  # EX_SOFTWARE
TRAP_EXIT = 134  # what wasmtime's CLI returns for a trapping guest (128 + SIGABRT)


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("wasinn: %(message)s"))
    root = logging.getLogger("wasinn")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.propagate = False


def fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    click.echo(f"wasinn: error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wasinn")
def main() -> None:
    """Run WebAssembly programs that do neural-network inference through WASI-NN."""


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option(
    "--dir",
    "dirs",
    multiple=True,
    metavar="GUEST:HOST",
    help="Make a host directory visible to the guest (WasmEdge order; a bare PATH maps to itself; "
    "append :readonly to forbid writes).",
)
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Set an environment variable.")
@click.option(
    "--nn-preload",
    "preload",
    multiple=True,
    metavar="NAME:ENCODING:TARGET:PATH[:PATH...]",
    help="Preload a model for load_by_name, e.g. default:openvino:cpu:model.xml:model.bin.",
)
@click.option("--no-cache", is_flag=True, help="Compile the module even when a compiled copy is cached.")
@click.option("-v", "--verbose", is_flag=True, help="Log every WASI-NN call's failures and timings.")
@click.argument("module", metavar="MODULE.wasm")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(
    dirs: tuple[str, ...],
    env: tuple[str, ...],
    preload: tuple[str, ...],
    no_cache: bool,
    verbose: bool,
    module: str,
    args: tuple[str, ...],
) -> None:
    """Run MODULE.wasm (a WASI command) with ARGS; exit with the guest's exit code."""
    from wasinn.core import GuestTrap, WasinnError
    from wasinn.runtime import Runtime

    configure_logging(verbose)
    if not Path(module).is_file():
        fail(f"{module}: no such file" if not Path(module).exists() else f"{module}: not a file")
    try:
        runtime = Runtime(dirs=dirs, env=env, preload=preload, cache=not no_cache)
        code = runtime.run(module, args)
    except GuestTrap as trap:
        fail(str(trap), TRAP_EXIT)
    except WasinnError as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as err:  # a wasinn bug: say so in one line, the traceback only with -v
        if verbose:
            raise
        fail(f"internal error: {type(err).__name__}: {err} (run with -v for the traceback)", INTERNAL_ERROR)
    sys.exit(code)
