"""``wasinn bench``: the cases of :mod:`wasinn.bench`, their table, JSON and chart."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from wasinn.bench.cases import CASES
from wasinn.bench.report import plot, print_table, run_cases, select
from wasinn.bench.types import FULL, QUICK
from wasinn.cli._errors import CommandUsageError


@click.command("bench")
@click.option("--quick", is_flag=True, help="Fewer repetitions: under 40 s on 2 cores.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write records.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="Bar chart PNG.")
@click.option("--case", "patterns", multiple=True, metavar="GLOB", help="Only cases matching (repeatable).")
@click.option("--list", "list_cases", is_flag=True, help="List the case names and exit.")
def bench_command(
    quick: bool, json_path: Path | None, plot_path: Path | None, patterns: tuple[str, ...], list_cases: bool
) -> None:
    """Time cases natively and through wasinn, alternating the two in one run."""
    if list_cases:
        for case in CASES:
            for name in case.names:
                click.echo(name)
        return
    if patterns and not select(CASES, patterns):
        raise CommandUsageError(f"no case matches {', '.join(patterns)} (see --list)")
    records = run_cases(QUICK if quick else FULL, patterns, lambda m: click.echo(m, err=True))
    print_table(records)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")
    if plot_path is not None:
        plot(records, plot_path)
    sys.stdout.flush()
