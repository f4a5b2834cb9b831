"""``wasinn bench``: the same work natively and through wasinn, alternated in one process run.

Each case measures a native side and a wasinn side in alternating blocks (native first in
one block, wasinn first in the next), so that machine load that comes and goes hits both.
Inference cases time only the inference round (set_input + compute + get_output): the
``nn-run`` guest times it itself with WASI ``CLOCK_MONOTONIC`` (``--time``), the native loop
with ``time.perf_counter_ns`` around the same copy-in, infer, copy-out. Whole-process cases
(end-to-end, start-up) time subprocesses from the outside. The case definitions live in
:mod:`wasinn.bench.cases`, the records and statistics in :mod:`wasinn.bench.types`; this
module holds the command and its output.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from wasinn.bench.cases import CASES
from wasinn.bench.types import FULL, QUICK, Case, Plan, Record, Stats, alternate


def select(cases: Sequence[Case], patterns: Sequence[str]) -> list[tuple[Case, list[str]]]:
    chosen = []
    for case in cases:
        names = [n for n in case.names if not patterns or any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if names:
            chosen.append((case, names))
    return chosen


def run_cases(plan: Plan, patterns: Sequence[str], log: Callable[[str], None]) -> list[Record]:
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


__all__ = [
    "FULL",
    "QUICK",
    "Case",
    "Plan",
    "Record",
    "Stats",
    "alternate",
    "plot",
    "print_table",
    "run_cases",
    "select",
]
