"""Smoke tests for ``wasinn bench``: the JSON schema and sane numbers, never timings."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, guest_wasm
from wasinn.bench.report import Case, Record, Stats, alternate, select

FIELDS = {"name", "native_ms", "wasinn_ms", "ratio", "runs", "unit", "skipped", "target", "target_met"}


def test_stats_median_and_quartiles() -> None:
    stats = Stats.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (stats.median, stats.low, stats.high, stats.count) == (3.0, 1.0, 5.0, 5)
    assert stats.p25 == 2.0 and stats.p75 == 4.0


def test_record_ratio_is_wasinn_over_native() -> None:
    record = Record.measured("x", [2.0, 2.0], [3.0, 3.0], "ms")
    assert record.ratio == 1.5 and record.delta_ms == 1.0 and record.runs == 2


def test_alternate_swaps_the_order_every_block() -> None:
    order: list[str] = []
    alternate(3, lambda: order.append("n") or [1.0], lambda: order.append("w") or [1.0])
    assert order == ["n", "w", "w", "n", "n", "w"]


def test_select_by_glob() -> None:
    cases = [
        Case(("startup/cold", "startup/warm"), lambda plan: []),
        Case(("call-overhead",), lambda plan: []),
    ]
    chosen = select(cases, ["startup/w*"])
    assert [(c.names, names) for c, names in chosen] == [(("startup/cold", "startup/warm"), ["startup/warm"])]


@pytest.mark.slow
def test_quick_bench_writes_valid_json(tmp_path: Path) -> None:
    for guest in ("nn-run", "wasi-probe"):
        guest_wasm(guest)
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    # The whole quick suite, as `wasinn bench --quick --json out.json` (a smoke test: no time
    # is asserted). Under CI every case must run; locally a case may skip with its reason.
    command = [sys.executable, "-m", "wasinn", "bench", "--quick", "--json", str(out), "--plot", str(png)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    names = [r["name"] for r in records]
    assert {"call-overhead", "startup/cold", "startup/warm", "road-segmentation/openvino/steady"} <= set(
        names
    )
    for record in records:
        assert record.keys() >= FIELDS
        if record["skipped"] is not None:
            assert not os.environ.get("CI"), f"{record['name']} skipped under CI: {record['skipped']}"
            assert isinstance(record["skipped"], str) and record["skipped"]
            continue
        for key in ("native_ms", "wasinn_ms", "ratio"):
            value = record[key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, record)
        assert record["runs"] >= 1
        assert record["native_p25_ms"] <= record["native_ms"] <= record["native_p75_ms"]
        assert record["wasinn_min_ms"] <= record["wasinn_ms"] <= record["wasinn_max_ms"]
    assert png.read_bytes().startswith(b"\x89PNG")
