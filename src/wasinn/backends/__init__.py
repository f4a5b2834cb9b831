"""Framework backends, imported only when a guest (or a person) asks for one.

Each backend lives in its own module and is named here by a string, so importing
:mod:`wasinn` never imports a framework.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from wasinn.backends._guest_paths import genai_model_directory, piper_run_config
from wasinn.core import READS_BYTES, Backend, GraphEncoding, InvalidArgument, ModelFiles

# encoding → (module:Class, the import that must exist for the backend to work, extra to install)
_REGISTRY: dict[GraphEncoding, tuple[str, str, str]] = {
    GraphEncoding.OPENVINO: ("wasinn.backends.openvino:OpenVINOBackend", "openvino", "openvino"),
    GraphEncoding.ONNX: ("wasinn.backends.onnx:ONNXBackend", "onnxruntime", "onnx"),
    GraphEncoding.PYTORCH: ("wasinn.backends.pytorch:PyTorchBackend", "torch", "pytorch"),
    GraphEncoding.TENSORFLOW: ("wasinn.backends.tensorflow:TensorFlowBackend", "tensorflow", "tensorflow"),
    GraphEncoding.TENSORFLOWLITE: ("wasinn.backends.tflite:TFLiteBackend", "ai_edge_litert", "tflite"),
    GraphEncoding.AUTODETECT: ("wasinn.backends.autodetect:AutodetectBackend", "numpy", ""),
    GraphEncoding.GGML: ("wasinn.backends.ggml:GgmlBackend", "llama_cpp", "ggml"),
    GraphEncoding.WHISPER: ("wasinn.backends.whisper:WhisperBackend", "_pywhispercpp", "whisper"),
    GraphEncoding.PIPER: ("wasinn.backends.piper:PiperBackend", "piper", "piper"),
    GraphEncoding.OPENVINOGENAI: (
        "wasinn.backends.openvino_genai:OpenVINOGenAIBackend",
        "openvino_genai",
        "openvinogenai",
    ),
}
# Backends wasinn leaves out on purpose, with the reason a guest's errno 1 comes with.
_NOT_SHIPPED: dict[GraphEncoding, str] = {
    GraphEncoding.CHATTTS: (
        "wasinn has no chattts backend: ChatTTS fetches about 1 GB of weights from the network "
        "at load, so it is not available offline (WasmEdge answers 1 likewise when built without it)"
    ),
}

# How a backend takes its model files, where not as bytes (known without importing it).
_MODEL_FILES: dict[GraphEncoding, ModelFiles] = {
    GraphEncoding.GGML: ModelFiles(opened_at_load=True),
    GraphEncoding.BITNET: ModelFiles(opened_at_load=True),  # WasmEdge reads it as GGML does
    GraphEncoding.TENSORFLOW: ModelFiles(directories=True),  # a SavedModel directory
    GraphEncoding.OPENVINOGENAI: ModelFiles(guest_paths=genai_model_directory),
    GraphEncoding.PIPER: ModelFiles(guest_paths=piper_run_config),
}

_instances: dict[GraphEncoding, Backend] = {}
_lock = threading.Lock()
# Backends standing in for an encoding's own while a test runs (serving_as below).
_stand_ins: dict[GraphEncoding, Backend] = {}


@dataclass(frozen=True)
class BackendInfo:
    encoding: GraphEncoding
    name: str
    module: str
    installed: bool
    extra: str


def backends() -> list[BackendInfo]:
    """Every backend wasinn knows, and whether its framework is installed here."""
    infos = []
    for encoding, (target, requirement, extra) in _REGISTRY.items():
        installed = encoding in _stand_ins or importlib.util.find_spec(requirement) is not None
        infos.append(BackendInfo(encoding, encoding.name.lower(), target, installed, extra))
    return infos


def model_files(encoding: GraphEncoding) -> ModelFiles:
    """How the ``encoding``'s backend takes its model files (the core's one question about it)."""
    return _MODEL_FILES.get(encoding, READS_BYTES)


def get_backend(encoding: GraphEncoding) -> Backend:
    """The process-wide backend for ``encoding``, created on first use.

    A backend wasinn does not ship, or whose framework is not installed, is errno 1
    (invalid_argument), as WasmEdge answers for a backend compiled out of its build.
    """
    backend = _stand_ins.get(encoding) or _instances.get(encoding)
    if backend is not None:
        return backend
    with _lock:
        backend = _instances.get(encoding)
        if backend is None:
            backend = _instances[encoding] = _create(encoding)
        return backend


def _create(encoding: GraphEncoding) -> Backend:
    entry = _REGISTRY.get(encoding)
    if entry is None:
        raise InvalidArgument(_NOT_SHIPPED.get(encoding, f"wasinn has no {encoding.name.lower()} backend"))
    target, requirement, extra = entry
    if importlib.util.find_spec(requirement) is None:
        raise InvalidArgument(
            f"the {encoding.name.lower()} backend needs the '{requirement}' package: "
            f"pip install 'wasinn[{extra}]'"
        )
    module_name, class_name = target.split(":")
    backend_class: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return backend_class()


@contextmanager
def serving_as(backend: Backend) -> Iterator[Backend]:
    """While inside, ``backend`` is the process's backend for ``backend.encoding`` (and counts
    as installed), in place of wasinn's own: how tests run the host and the front-ends on
    :mod:`wasinn.testing.fake_backend` without a framework. Not for nesting on one encoding."""
    encoding = backend.encoding
    with _lock:
        if encoding in _stand_ins:
            raise RuntimeError(f"a backend already stands in for {encoding.name.lower()}")
        _stand_ins[encoding] = backend
    try:
        yield backend
    finally:
        with _lock:
            del _stand_ins[encoding]


__all__ = ["BackendInfo", "backends", "get_backend", "serving_as"]
