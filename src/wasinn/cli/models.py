"""``wasinn models``: list, locate and download the known models (docs/models.md)."""

from __future__ import annotations

from pathlib import Path

import click

from wasinn.cli._errors import CommandError, CommandUsageError
from wasinn.core import ModelError
from wasinn.tools.models import (
    CATALOGUE,
    ModelNotFoundError,
    ModelSpec,
    _not_found_message,
    download,
    find_model,
)


def _megabytes(spec: ModelSpec) -> str:
    return f"{sum(model_file.size for model_file in spec.files) / 1e6:.1f} MB"


def _command_error(error: ModelError) -> CommandError:
    """An unknown model id is a usage error; a failed download or checksum, a failure."""
    return (
        CommandUsageError(str(error)) if isinstance(error, ModelNotFoundError) else CommandError(str(error))
    )


@click.group("models", help="List, locate and download the known models.")
def models_command() -> None:
    pass


@models_command.command("list")
def list_command() -> None:
    """Show the catalogue and where each model was found."""
    rows = [("MODEL", "SIZE", "LOCATION", "DESCRIPTION")]
    for spec in CATALOGUE.values():
        found = find_model(spec.id)
        rows.append((spec.id, _megabytes(spec), str(found) if found else "not downloaded", spec.description))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for model_id, size, location, description in rows:
        click.echo(f"{model_id:<{widths[0]}}  {size:>{widths[1]}}  {location:<{widths[2]}}  {description}")


@models_command.command("path")
@click.argument("model_id")
def path_command(model_id: str) -> None:
    """Print the directory holding MODEL_ID's files."""
    try:
        found = find_model(model_id)
    except ModelError as error:
        raise _command_error(error) from error
    if found is None:
        raise CommandError(_not_found_message(model_id))
    click.echo(str(found))


@models_command.command("download")
@click.argument("model_id")
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to download into (default: the user cache).",
)
def download_command(model_id: str, dest: Path | None) -> None:
    """Download MODEL_ID's files, verifying their sha256, and print their directory."""
    try:
        directory = download(model_id, dest=dest)
    except ModelError as error:
        raise _command_error(error) from error
    click.echo(str(directory))
