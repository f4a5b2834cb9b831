"""WasmEdge's plug-in import modules beyond WASI-NN, defined only for guests that import them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import wasmtime

from wasinn.abi._plugin import PluginModule
from wasinn.abi.wasmedge_image import IMAGE_MODULE, WasmEdgeImage
from wasinn.abi.wasmedge_tensorflow import (
    TF_MODULE,
    TFLITE_MODULE,
    WasmEdgeTensorflow,
    WasmEdgeTensorflowLite,
)


def plugin_modules(
    module: wasmtime.Module, park: Callable[[BaseException], None], dirs: Sequence[tuple[str, Path]]
) -> list[PluginModule]:
    """The plug-in modules ``module`` imports; none of them imports a framework until called."""
    imported = {entry.module for entry in module.imports}
    plugins: list[PluginModule] = []
    if TF_MODULE in imported:
        plugins.append(WasmEdgeTensorflow(park, dirs))
    if TFLITE_MODULE in imported:
        plugins.append(WasmEdgeTensorflowLite(park))
    if IMAGE_MODULE in imported:
        plugins.append(WasmEdgeImage(park))
    return plugins
