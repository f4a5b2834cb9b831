"""Piper text-to-speech backend (encoding 11), WasmEdge's ``wasmedge-piper`` on piper-tts.

``load`` takes one builder, the run-config JSON: ``model`` (host path of the voice ONNX),
``config`` (voice JSON, default ``model`` + ``.json``), ``espeak_data``, ``json_input``,
``output_type`` (``wav`` or ``raw``), ``speaker_id``, ``noise_scale``, ``length_scale``,
``noise_w``. Input 0 is the text (or, with ``json_input``, a JSON object with ``text`` and
per-input overrides); output 0 is a 16-bit mono WAV (or the raw samples). genai-tts spec §4.

Where WasmEdge aborts the whole runtime (a voice JSON or ONNX it cannot read, an ONNX run
that throws), wasinn answers errno 1 at load and 5 at compute.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime
import piper

from wasinn.backends._common import check_builder_count
from wasinn.backends.piper_config import (
    OUTPUT_TYPES,
    RunConfig,
    parse_run_config,
    synthesis_options,
    wav_bytes,
)
from wasinn.core import (
    Backend,
    BackendContext,
    BackendError,
    BackendGraph,
    Errno,
    ExecutionTarget,
    GraphEncoding,
    InvalidArgument,
    ModelConfig,
    Tensor,
)

VOICE_INPUTS = {"input", "input_lengths", "scales"}


def _regular_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise InvalidArgument(f"piper: {what} {path!r} is not a readable file")


class PiperBackend(Backend):
    encoding = GraphEncoding.PIPER
    name = "piper"
    # WasmEdge appends a load_by_name_with_config config as one more builder; so does wasinn.
    parses_config = True

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> PiperGraph:
        if config is not None and config.raw:
            builders = [*builders, config.raw]
        check_builder_count("piper", builders, 1, "the run-config JSON")
        run = parse_run_config(bytes(builders[0]))  # the target is ignored, as in WasmEdge
        _regular_file(run.model, "model")
        voice_json = run.config if run.config is not None else run.model + ".json"
        _regular_file(voice_json, "voice config")
        if run.espeak_data is not None and not os.path.isdir(run.espeak_data):
            raise InvalidArgument(f"piper: espeak_data {run.espeak_data!r} is not a directory")
        return PiperGraph(run, _load_voice(run, voice_json))


def _load_voice(run: RunConfig, voice_json: str) -> piper.PiperVoice:
    try:
        with open(voice_json, encoding="utf-8") as file:
            fields = json.load(file)
        voice_config = piper.PiperConfig.from_dict(fields)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InvalidArgument(f"piper: cannot read the voice config {voice_json!r}: {err!r}") from None
    try:
        session = onnxruntime.InferenceSession(run.model, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime's own exception types
        raise InvalidArgument(f"piper: onnxruntime cannot load {run.model!r}: {err}") from None
    names = {node.name for node in session.get_inputs()}
    wanted = VOICE_INPUTS | ({"sid"} if voice_config.num_speakers > 1 else set())
    if names != wanted:
        raise InvalidArgument(
            f"piper: the voice model's inputs are {sorted(names)}, Piper feeds {sorted(wanted)}"
        )
    voice = piper.PiperVoice(config=voice_config, session=session)
    if run.espeak_data is not None:
        # Only the first espeak-ng voice of the process sets the data: piper's phonemizer is one.
        voice.espeak_data_dir = Path(run.espeak_data)
    return voice


class PiperGraph(BackendGraph):
    def __init__(self, run: RunConfig, voice: piper.PiperVoice) -> None:
        self.run = run
        # No lock: onnxruntime sessions take concurrent runs, and piper-tts guards its
        # process-wide espeak-ng phonemizer (voice switched per call) with its own lock.
        self.voice: piper.PiperVoice | None = voice

    @property
    def input_names(self) -> list[str]:
        return ["text"]

    @property
    def output_names(self) -> list[str]:
        return ["audio"]

    def init_execution_context(self) -> PiperContext:
        return PiperContext(self)

    def _release(self) -> None:
        self.voice = None


@dataclass
class _Line:
    raw: bytes
    overrides: dict[str, object]


class PiperContext(BackendContext):
    # WasmEdge: get_output before any compute is invalid_argument.
    output_before_compute_errno = Errno.INVALID_ARGUMENT

    def __init__(self, graph: PiperGraph) -> None:
        self._graph = graph
        self._line: _Line | None = None
        self._output = np.zeros(0, np.uint8)

    def _set_input(self, index: int, tensor: Tensor) -> None:
        if index != 0:
            raise InvalidArgument(f"piper: input index {index} out of range; input 0 is the text")
        if len(tensor.dims) != 1:
            raise InvalidArgument(f"piper: the text tensor must have 1 dim, got {len(tensor.dims)}")
        raw = tensor.data.tobytes()
        overrides: dict[str, object] = {}
        if self._graph.run.json_input:
            overrides = _parse_json_line(raw)
        self._line = _Line(raw, overrides)

    def _compute(self) -> None:
        if self._line is None:
            raise InvalidArgument("piper: compute before set_input")
        run, line = self._graph.run, self._line
        if run.json_input:
            text = line.overrides.get("text")
            if not isinstance(text, str):
                raise InvalidArgument("piper: the JSON input needs a string 'text'")
        else:
            text = line.raw.decode("utf-8", errors="replace")
        text = text.split("\0", 1)[0]  # libpiper takes a C string
        options, output_type = synthesis_options(run, line.overrides)
        voice = self._graph.voice
        if voice is None:
            raise BackendError("piper: the graph was released")
        try:
            chunks = list(voice.synthesize(text, options))
        except MemoryError:
            raise BackendError("piper: out of memory during synthesis") from None
        except Exception as err:  # onnxruntime errors, espeak voice missing ...
            raise BackendError(f"piper: synthesis failed: {err}") from None
        samples = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        rate = chunks[0].sample_rate if chunks else None
        data = wav_bytes(samples, rate) if output_type == "wav" else samples
        self._output = np.frombuffer(data, np.uint8)

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        if index != 0:
            raise InvalidArgument(f"piper: output index {index} out of range; output 0 is the audio")
        return self._output

    def _output_before_compute(self, index: int) -> npt.NDArray[np.generic]:
        if index != 0:
            raise InvalidArgument(f"piper: output index {index} out of range; output 0 is the audio")
        return super()._output_before_compute(index)


def _parse_json_line(raw: bytes) -> dict[str, object]:
    """A ``json_input`` line: an object whose synthesis keys have the run config's types."""
    from wasinn.backends.piper_config import check_synthesis_keys

    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidArgument("piper: the JSON input is not valid JSON") from None
    if not isinstance(fields, dict):
        raise InvalidArgument("piper: the JSON input must be an object")
    check_synthesis_keys(fields, "JSON input")
    return fields


__all__ = ["OUTPUT_TYPES", "PiperBackend"]
