"""OpenVINO GenAI backend (encoding 13): WasmEdge's ``LLMPipeline`` text generation.

``load`` takes exactly three builders, as WasmEdge's plugin does: the pipeline type (the
bytes ``LLMPipeline``), the host path of the model directory (``openvino_model.xml``,
tokenizer and detokenizer IR), and a reserved one that is ignored. Input 0 is the prompt's
bytes (any dims and type, a WasmEdge quirk kept), ``compute`` generates with a default
``GenerationConfig`` capped at 100 new tokens (greedy, the tokenizer's chat template applied
when it has one; nothing from the guest changes it), and output 0 is the generated text
(genai-tts spec §3).

Deliberate differences from WasmEdge: a generation that fails is errno 5 (WasmEdge swallows
the exception and answers 0), and ``cancel`` stops a generation between tokens.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from wasinn.backends._common import check_builder_count, error_lines
from wasinn.backends._offline import openvino_telemetry_off
from wasinn.core import (
    Backend,
    BackendContext,
    BackendError,
    BackendGraph,
    ExecutionTarget,
    GraphEncoding,
    InvalidArgument,
    ModelConfig,
    Tensor,
)

with openvino_telemetry_off():  # openvino_genai imports openvino, whose first import phones home
    import openvino_genai as og

PIPELINE_TYPE = b"LLMPipeline"
MAX_NEW_TOKENS = 100  # WasmEdge's fixed limit: the guest cannot change it
DEVICES = {ExecutionTarget.CPU: "CPU", ExecutionTarget.GPU: "GPU"}
_EMPTY = np.zeros(0, np.uint8)


def generation_config() -> og.GenerationConfig:
    """The configuration of every compute: GenAI's defaults, 100 new tokens."""
    config = og.GenerationConfig()
    config.max_new_tokens = MAX_NEW_TOKENS
    return config


def _message(err: BaseException) -> str:
    lines = [line for line in error_lines(err) if not line.startswith(("Exception from src/", "Check '"))]
    return (lines or [type(err).__name__])[0]


class OpenVINOGenAIBackend(Backend):
    encoding = GraphEncoding.OPENVINOGENAI
    name = "openvinogenai"
    framework = "openvino"  # one native library with the OpenVINO backend: one first-use gate
    # WasmEdge appends a load_by_name_with_config config as one more builder; so does wasinn.
    parses_config = True

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> OpenVINOGenAIGraph:
        if config is not None and config.raw:
            builders = [*builders, config.raw]
        check_builder_count("openvinogenai", builders, 3, "pipeline type, model directory, reserved")
        device = DEVICES.get(target)
        if device is None:
            raise InvalidArgument(f"openvinogenai: target {target.name} is not supported (only CPU and GPU)")
        kind = bytes(builders[0])
        if kind != PIPELINE_TYPE:
            wanted = PIPELINE_TYPE.decode()
            raise InvalidArgument(
                f"openvinogenai: builder 0 must be the pipeline type {wanted!r}, got {kind[:40]!r}"
            )
        # A host path, resolved against the host's working directory, as WasmEdge does.
        directory = os.fsdecode(bytes(builders[1]))
        try:
            pipeline = og.LLMPipeline(directory, device)
        except Exception as err:  # RuntimeError from C++: missing files, bad IR, no such device
            reason = _message(err)
            raise BackendError(
                f"openvinogenai: cannot build the pipeline from {directory!r} on {device}: {reason}"
            ) from None
        return OpenVINOGenAIGraph(pipeline)


class OpenVINOGenAIGraph(BackendGraph):
    def __init__(self, pipeline: og.LLMPipeline) -> None:
        self.pipeline: og.LLMPipeline | None = pipeline
        # One generation at a time per pipeline (its KV cache is one state): contexts queue.
        self.lock = threading.Lock()

    @property
    def input_names(self) -> list[str]:
        return ["prompt"]

    @property
    def output_names(self) -> list[str]:
        return ["text"]

    def init_execution_context(self) -> OpenVINOGenAIContext:
        return OpenVINOGenAIContext(self)

    def generate(self, prompt: str, cancelled: threading.Event) -> str:
        def streamer(_text: str) -> og.StreamingStatus:
            return og.StreamingStatus.CANCEL if cancelled.is_set() else og.StreamingStatus.RUNNING

        with self.lock:
            if self.pipeline is None:
                raise BackendError("openvinogenai: the graph was released")
            result = self.pipeline.generate(prompt, generation_config(), streamer)
        return str(result)

    def _release(self) -> None:
        with self.lock:
            self.pipeline = None


class OpenVINOGenAIContext(BackendContext):
    def __init__(self, graph: OpenVINOGenAIGraph) -> None:
        self._graph = graph
        self._prompt = b""
        self._output = _EMPTY
        self._cancelled = threading.Event()

    def _set_input(self, index: int, tensor: Tensor) -> None:
        if index != 0:
            raise InvalidArgument(f"openvinogenai: input index {index} out of range; input 0 is the prompt")
        # WasmEdge checks neither the type nor the dims (its dims check is dead code).
        self._prompt = tensor.data.tobytes()

    def _compute(self) -> None:
        self._cancelled.clear()
        # The binding takes a str: invalid UTF-8 becomes U+FFFD (WasmEdge passes raw bytes).
        prompt = self._prompt.decode("utf-8", errors="replace")
        try:
            text = self._graph.generate(prompt, self._cancelled)
        except BackendError:
            raise
        except Exception as err:  # WasmEdge swallows this and answers 0; a failure is errno 5 here
            raise BackendError(f"openvinogenai: generation failed: {_message(err)}") from None
        if self._cancelled.is_set():
            raise BackendError("openvinogenai: generation cancelled")
        self._output = np.frombuffer(text.encode("utf-8", errors="replace"), np.uint8)

    def cancel(self) -> None:
        self._cancelled.set()

    def _output_before_compute(self, index: int) -> npt.NDArray[np.generic]:
        self._check_output(index)
        return self._output  # WasmEdge: 0 bytes before any compute; the last text after a failure

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        self._check_output(index)
        return self._output

    @staticmethod
    def _check_output(index: int) -> None:
        if index != 0:
            raise InvalidArgument(f"openvinogenai: output index {index} out of range; output 0 is the text")
