"""The vocabulary shared by ``wasinn bench`` and its cases: plans, records and statistics.

:mod:`wasinn.bench` (the command) and :mod:`wasinn.bench.cases` (the cases) both import this
module and not each other's, so neither needs the other to be loaded first.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


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


__all__ = ["FULL", "QUICK", "Case", "CaseFunction", "Plan", "Record", "Stats", "alternate"]
