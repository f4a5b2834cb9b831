"""``wasinn serve`` and ``wasinn batch`` on the command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wasinn.cli import configure_logging, fail
from wasinn.cli.options import config_option, limit_options, limits_from, world_options
from wasinn.serve.config import ServeConfig, parse_routes

SERVE_DEFAULTS = ServeConfig()


def _missing_extra(err: ImportError) -> None:
    fail(f"{err.name or err} is not installed; pip install 'wasinn[serve]'")


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@config_option(ServeConfig, "workers", "--workers", type=click.IntRange(min=1))
@world_options
@limit_options(
    SERVE_DEFAULTS.limits,
    scope="Per request:",
    help={
        "memory_pages": "Per request: the guest's linear memory cap (64 KiB pages).",
        "time_limit_ms": "Per request: over it, 504; 0: none. A worker busy longer counts as stuck.",
        "gas": "Per request: out of fuel, 500.",
    },
)
@config_option(ServeConfig, "max_body_bytes", "--max-body-bytes", type=click.IntRange(min=0), metavar="BYTES")
@config_option(ServeConfig, "max_waiting", "--max-waiting", type=click.IntRange(min=0))
@config_option(
    ServeConfig, "drain_seconds", "--drain-seconds", type=click.FloatRange(min=3), metavar="SECONDS"
)
@click.option("--demo", is_flag=True, help="Add the road-segmentation page at / (and its route).")
@click.option(
    "--openai",
    "openai",
    multiple=True,
    metavar="MODEL",
    help="Serve the preloaded model MODEL at OpenAI's /v1 routes: a GGML one (chat, completions, "
    "embeddings) or a whisper one (audio transcriptions and translations).",
)
@click.option(
    "--openai-guest",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The guest for --openai (default: the built llm-serve.wasm).",
)
@config_option(ServeConfig, "parallel", "--parallel", type=click.IntRange(1, 256))
@config_option(ServeConfig, "ctx_size", "--ctx-size", type=click.IntRange(0, 2**31 - 1), metavar="TOKENS")
@click.option(
    "--chat-template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --openai: a Jinja chat template used instead of the model's tokenizer.chat_template.",
)
@click.option("--ray", "use_ray", is_flag=True, help="Deploy on Ray Serve instead.")
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    help="With --ray: server processes (Serve replicas), each with --workers per route.  [default: 1]",
)
@click.option("--address", default=None, help="With --ray: the cluster to join (default: start a local one).")
@click.option("-v", "--verbose", is_flag=True)
@click.argument("routes", nargs=-1, metavar="ROUTE=MODULE.wasm...")
def serve_command(
    host: str,
    port: int,
    workers: int,
    dirs: tuple[str, ...],
    env: tuple[str, ...],
    preload: tuple[str, ...],
    no_cache: bool,
    max_body_bytes: int,
    max_waiting: int,
    drain_seconds: float,
    demo: bool,
    openai: tuple[str, ...],
    openai_guest: Path | None,
    parallel: int,
    ctx_size: int,
    chat_template: Path | None,
    use_ray: bool,
    replicas: int | None,
    address: str | None,
    verbose: bool,
    routes: tuple[str, ...],
    **limit_values: int | None,
) -> None:
    """Serve each ROUTE=MODULE.wasm at POST /ROUTE: body → stdin, query → args, stdout → body."""
    from wasinn.core import WasinnError

    configure_logging(verbose)
    if not use_ray and (replicas is not None or address is not None):
        fail("--replicas and --address are options of --ray")
    try:
        from wasinn.serve.server import build_app, with_demo
    except ImportError as err:
        _missing_extra(err)
    try:
        config = ServeConfig(
            routes=parse_routes(routes),
            workers=workers,
            dirs=dirs,
            env=env,
            preload=preload,
            limits=limits_from(limit_values, SERVE_DEFAULTS.limits),
            cache=not no_cache,
            max_body_bytes=max_body_bytes,
            max_waiting=max_waiting,
            openai=openai,
            openai_guest=openai_guest,
            parallel=parallel,
            ctx_size=ctx_size,
            chat_template=chat_template,
            mapped_responses=not use_ray,  # uvicorn sends a memoryview; Ray Serve pickles bodies
            drain_seconds=drain_seconds,
        )
        if demo:
            config = with_demo(config)
        if use_ray:
            from wasinn.serve.ray import serve_on_ray

            serve_on_ray(
                config,
                host=host,
                port=port,
                address=address,
                replicas=replicas or 1,
                progress=lambda line: click.echo(f"wasinn serve: {line}", err=True),
            )
            return
        app = build_app(config)
    except WasinnError as err:
        fail(str(err))
    from wasinn.serve.lifecycle import serve

    openai_routes = ["v1/chat/completions", "v1/completions", "v1/embeddings", "v1/models"]
    served = [*config.routes, *(openai_routes if openai else [])]
    click.echo(f"wasinn serve: http://{host}:{port}/ routes: {', '.join(served)}", err=True)
    log_level = "info" if verbose else "warning"
    if not serve(app, host=host, port=port, drain_seconds=config.drain_seconds, log_level=log_level):
        sys.exit(3)  # uvicorn's status for a server that could not start (it said why)


@click.command("batch", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--ray", "use_ray", is_flag=True, required=True, help="Run on Ray Data (the only engine).")
@click.option("--address", default=None, help="Ray cluster address (default: start a local one).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build/batch"),
    show_default=True,
    help="Where the overlays and shares.jsonl go.",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Ray Data workers, each with its own copy of the model.",
)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def batch_command(use_ray: bool, address: str | None, out: Path, workers: int, directory: Path) -> None:
    """Road-segment every picture in DIRECTORY with Ray Data; write overlays and shares.jsonl."""
    from wasinn.core import WasinnError

    try:
        from wasinn.serve.ray_batch import batch_segment
    except ImportError as err:
        _missing_extra(err)
    try:
        count = batch_segment(
            directory,
            out,
            address=address,
            workers=workers,
            progress=lambda line: click.echo(f"wasinn batch: {line}", err=True),
        )
    except WasinnError as err:
        fail(str(err))
    click.echo(f"{count} pictures segmented into {out}", err=True)
    sys.exit(0)
