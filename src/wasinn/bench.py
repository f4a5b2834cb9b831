"""``wasinn bench``: the same work natively and through wasinn, alternated in one process run.

Each case measures a native side and a wasinn side in alternating blocks (native first in
one block, wasinn first in the next), so that machine load that comes and goes hits both.
Inference cases time only the inference round (set_input + compute + get_output): the
``nn-run`` guest times it itself with WASI ``CLOCK_MONOTONIC`` (``--time``), the native loop
with ``time.perf_counter_ns`` around the same copy-in, infer, copy-out. Whole-process cases
(end-to-end, start-up) time subprocesses from the outside. The case definitions live in
:mod:`wasinn.bench_cases`; this module holds the statistics, the records and the command.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click


@dataclass(frozen=True)
class Plan:
    """How much to repeat: ``--quick`` (under 40 s on 2 cores) or the full run."""

    quick: bool
    steady_blocks: int
    steady_reps: int
    overhead_blocks: int
    overhead_reps: int
    e2e_runs: int
    startup_runs: int
    backend_blocks: int
    backend_reps: int


QUICK = Plan(True, 2, 3, 3, 300, 2, 4, 2, 15)
FULL = Plan(False, 5, 8, 6, 1500, 6, 12, 5, 40)


@dataclass
class Stats:
    median: float
    p25: float
    p75: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), q1, q3, ordered[0], ordered[-1], len(ordered))


@dataclass
class Record:
    """One case's result; ``--json`` writes a list of these (``asdict``)."""

    name: str
    native_ms: float | None = None
    wasinn_ms: float | None = None
    ratio: float | None = None
    runs: int = 0
    native_p25_ms: float | None = None
    native_p75_ms: float | None = None
    native_min_ms: float | None = None
    native_max_ms: float | None = None
    wasinn_p25_ms: float | None = None
    wasinn_p75_ms: float | None = None
    wasinn_min_ms: float | None = None
    wasinn_max_ms: float | None = None
    # wasinn median minus native median, in ms (per inference, or per process).
    delta_ms: float | None = None
    unit: str = ""
    target: str | None = None
    target_met: bool | None = None
    skipped: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def measured(cls, name: str, native_ms: Sequence[float], wasinn_ms: Sequence[float], unit: str) -> Record:
        native, wasinn = Stats.of(native_ms), Stats.of(wasinn_ms)
        return cls(
            name=name,
            native_ms=round(native.median, 4),
            wasinn_ms=round(wasinn.median, 4),
            ratio=round(wasinn.median / native.median, 4),
            runs=min(native.count, wasinn.count),
            native_p25_ms=round(native.p25, 4),
            native_p75_ms=round(native.p75, 4),
            native_min_ms=round(native.low, 4),
            native_max_ms=round(native.high, 4),
            wasinn_p25_ms=round(wasinn.p25, 4),
            wasinn_p75_ms=round(wasinn.p75, 4),
            wasinn_min_ms=round(wasinn.low, 4),
            wasinn_max_ms=round(wasinn.high, 4),
            delta_ms=round(wasinn.median - native.median, 4),
            unit=unit,
        )

    @classmethod
    def skip(cls, name: str, reason: str) -> Record:
        return cls(name=name, skipped=reason)

    def judge(self, target: str, met: bool) -> Record:
        self.target, self.target_met = target, met
        return self


CaseFunction = Callable[[Plan], list[Record]]


@dataclass(frozen=True)
class Case:
    """Names the records it produces; one function may measure several (start-up)."""

    names: tuple[str, ...]
    run: CaseFunction


def alternate(
    blocks: int, native: Callable[[], list[float]], wasinn: Callable[[], list[float]]
) -> tuple[list[float], list[float]]:
    """Run ``blocks`` native and wasinn blocks, swapping their order every block."""
    native_samples: list[float] = []
    wasinn_samples: list[float] = []
    for block in range(blocks):
        if block % 2 == 0:
            native_samples += native()
            wasinn_samples += wasinn()
        else:
            wasinn_samples += wasinn()
            native_samples += native()
    return native_samples, wasinn_samples


def select(cases: Sequence[Case], patterns: Sequence[str]) -> list[tuple[Case, list[str]]]:
    chosen = []
    for case in cases:
        names = [n for n in case.names if not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if names:
            chosen.append((case, names))
    return chosen


def run_cases(plan: Plan, patterns: Sequence[str], log: Callable[[str], None]) -> list[Record]:
    from wasinn.bench_cases import CASES

    records: list[Record] = []
    for case, names in select(CASES, patterns):
        log(f"bench: {', '.join(names)} …")
        load = os.getloadavg()[0]
        try:
            produced = case.run(plan)
        except Exception as err:  # one broken case must not hide the others
            produced = [Record.skip(n, f"failed: {type(err).__name__}: {err}") for n in case.names]
        for record in produced:
            # Other work on the machine is the main source of spread: keep it with the numbers.
            record.notes["loadavg_1min"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        records += [r for r in produced if r.name in names]
    return records


# -- output


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} µs"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def spread(low: float | None, high: float | None) -> str:
    return f"[{fmt_ms(low)}–{fmt_ms(high)}]" if low is not None and high is not None else ""


def print_table(records: Sequence[Record]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="wasinn bench: medians, \\[p25–p75]")
    for column in ("case", "native", "wasinn", "ratio", "Δ", "runs", "target"):
        table.add_column(
            column, justify="left" if column in ("case", "target") else "right", no_wrap=column == "case"
        )
    for r in records:
        if r.skipped is not None:
            table.add_row(r.name, "-", "-", "skipped", "", "", r.skipped)
            continue
        target = "" if r.target is None else f"{r.target} {'✓' if r.target_met else '✗'}"
        table.add_row(
            r.name,
            f"{fmt_ms(r.native_ms)} {spread(r.native_p25_ms, r.native_p75_ms)}",
            f"{fmt_ms(r.wasinn_ms)} {spread(r.wasinn_p25_ms, r.wasinn_p75_ms)}",
            f"{r.ratio:.3f}" if r.ratio is not None else "-",
            fmt_ms(r.delta_ms)
            if r.delta_ms is not None and r.delta_ms >= 0
            else f"-{fmt_ms(-(r.delta_ms or 0))}",
            str(r.runs),
            target,
        )
    console = Console()
    if not console.is_terminal:
        console.width = 150
    console.print(table)


def plot(records: Sequence[Record], path: Path) -> None:
    """A horizontal bar chart of the ratios (wasinn / native), drawn with PIL."""
    from PIL import Image, ImageDraw, ImageFont

    shown = [r for r in records if r.ratio is not None and math.isfinite(r.ratio)]
    font = ImageFont.load_default()
    row, left, right, top = 26, 250, 70, 40
    width = 820
    height = top + row * max(1, len(shown)) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text(
        (10, 10), "wasinn / native time (median ratio; log scale, 1 = native speed)", fill="black", font=font
    )
    high = max([2.0, *(r.ratio or 1 for r in shown)])
    span = width - left - right

    def x_of(ratio: float) -> int:
        # log scale from 0.25 to high, so 1.02 and 20 are both readable
        low = 0.25
        return left + int(
            span * (math.log(max(ratio, low)) - math.log(low)) / (math.log(high) - math.log(low))
        )

    for tick in (0.25, 0.5, 1, 2, 5, 10, 20, 50, 100):
        if tick <= high:
            x = x_of(tick)
            draw.line([(x, top - 4), (x, height - 30)], fill="#dddddd")
            draw.text((x - 6, height - 26), f"{tick:g}", fill="#555555", font=font)
    for i, r in enumerate(shown):
        ratio = r.ratio or 1.0
        y = top + i * row
        colour = "#4c9f70" if r.target_met in (True, None) and ratio <= 1.2 else "#d9822b"
        if r.target_met is False:
            colour = "#c0392b"
        draw.text((10, y + 6), r.name, fill="black", font=font)
        draw.rectangle([(x_of(0.25), y + 4), (max(x_of(ratio), x_of(0.25) + 1), y + row - 4)], fill=colour)
        draw.text((x_of(ratio) + 4, y + 6), f"{ratio:.3f}", fill="black", font=font)
    one = x_of(1.0)
    draw.line([(one, top - 4), (one, height - 30)], fill="black", width=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)


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
    from wasinn.bench_cases import CASES

    if list_cases:
        for case in CASES:
            for name in case.names:
                click.echo(name)
        return
    if patterns and not select(CASES, patterns):
        raise click.UsageError(f"no case matches {', '.join(patterns)} (see --list)")
    records = run_cases(QUICK if quick else FULL, patterns, lambda m: click.echo(m, err=True))
    print_table(records)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")
    if plot_path is not None:
        plot(records, plot_path)
    sys.stdout.flush()


__all__ = ["FULL", "QUICK", "Case", "Plan", "Record", "Stats", "alternate", "bench_command"]


if __name__ == "__main__":  # ``python -m wasinn.bench`` until ``wasinn bench`` is registered
    bench_command()
