"""``wasinn bench --case component/round-trip``: a WIT component round vs a core-module round.

Both guests load one preloaded model by name and time their own rounds with the WASI
monotonic clock: the C guest nn-run through ``wasi_ephemeral_nn`` (set_input + compute +
get_output), the Python guest examples/python/time_rounds.py through ``wasi:nn`` 10-28
(tensor constructor + compute + output data + drops). In the record, ``native`` is the core
module and ``wasinn`` the component, so ``ratio`` is what the component costs per round.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from wasinn.bench._harness import REPO, GuestLoop, Unavailable, require, tiny_openvino_model
from wasinn.bench.types import Plan, Record, alternate
from wasinn.core import ConfigError

TIME_ROUNDS = REPO / "examples" / "python" / "time_rounds.py"
UNIT = "ms per inference round, timed inside each guest with the WASI monotonic clock"


def component_round_trip(plan: Plan) -> list[Record]:
    require("openvino")
    require("componentize_py")
    from wasinn.tools.build import build

    with tempfile.TemporaryDirectory(prefix="wasinn-bench-") as tmp:
        directory = Path(tmp)
        xml, weights = tiny_openvino_model(directory)
        np.array([[-3, -0.5, 0.25, 2]], dtype=np.float32).tofile(directory / "in.bin")
        try:
            component = directory / "time_rounds.wasm"
            build(TIME_ROUNDS, component)
        except ConfigError as err:
            raise Unavailable(str(err)) from None
        preload = [f"tiny:openvino:cpu:{xml}:{weights}"]
        args = ["--name", "tiny", "--input", f"0:f32:1x4:{tmp}/in.bin"]
        module_loop = GuestLoop([f"{tmp}:{tmp}"], args, preload=preload)
        component_loop = GuestLoop([f"{tmp}:{tmp}"], args, module=component, preload=preload)
        reps = max(plan.overhead_reps // 3, 50)
        module_ms, component_ms = alternate(
            plan.overhead_blocks, lambda: module_loop.times_ms(reps), lambda: component_loop.times_ms(reps)
        )
    record = Record.measured("component/round-trip", module_ms, component_ms, UNIT)
    record.notes = {
        "native": "core module: nn-run (C) through wasi_ephemeral_nn",
        "wasinn": "component: time_rounds.py (componentize-py) through wasi:nn 0.2.0-rc-2024-10-28",
        "model": "OpenVINO add on f32[1,4], preloaded, load-by-name",
        "extra_us_per_round": round((record.delta_ms or 0) * 1000, 1),
    }
    return [record]
