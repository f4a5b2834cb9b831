"""Whisper backend, encoding 9: WasmEdge's whisper plugin on pywhispercpp (whisper.cpp).

builder[0] is the ggml whisper model (bytes, or ``preload:<path>``), builder[1] or the
``load_by_name_with_config`` config is JSON (ggml-backend spec §9). set_input index 1 resets
the context's config to the graph's and applies new JSON; any other index is a complete
16 kHz 16-bit WAV file with dims [1, len]. compute runs ``whisper_full_parallel`` (beam search
5 by default); get_output (any index) is the transcript, one
``[HH:MM:SS.mmm --> HH:MM:SS.mmm] text`` line per segment.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from wasinn.backends._common import refuse_auto_in_load
from wasinn.backends.whisper_audio import (
    WHISPER_DEFAULTS,
    check_whisper_model,
    parse_whisper_config,
    read_wav,
    transcript,
)
from wasinn.core import (
    PATH_BUILDER,
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

PRELOAD_PREFIX = PATH_BUILDER  # the core's one marker of a builder that names a file
WHISPER_LOG_ERROR = 4  # ggml_log_level


# whisper.cpp has one log callback per process. Each thread inside a whisper.cpp call has its
# own list of error lines; the callback is installed while any thread collects, and removed
# with the last one. Before, each call set and reset the callback itself: a compute ending on
# one thread removed it in the middle of a load on another, whose error lines then went to
# the terminal instead (seen on a cold server with 16 concurrent whisper requests).
_log_lock = threading.Lock()
_collectors: dict[int, list[str]] = {}


def _dispatch_log(level: int, text: str) -> None:
    if level == WHISPER_LOG_ERROR:
        errors = _collectors.get(threading.get_ident())
        if errors is not None:
            errors.append(text.strip())


@contextlib.contextmanager
def _captured_logs() -> Iterator[list[str]]:
    """Collect whisper.cpp's error lines of this thread during one call instead of printing them.

    The binding gives no way to see that ``whisper_init_*`` returned NULL, but whisper.cpp
    always logs an error line first; the default logger is restored afterwards because a
    Python callback left installed crashes the interpreter at exit.
    """
    import _pywhispercpp as pw

    errors: list[str] = []
    me = threading.get_ident()
    with _log_lock:
        if not _collectors:
            pw.whisper_log_set(_dispatch_log)
        _collectors[me] = errors
    try:
        yield errors
    finally:
        with _log_lock:
            _collectors.pop(me, None)
            if not _collectors:
                pw.whisper_log_set(None)


def _check_language(settings: Mapping[str, Any]) -> None:
    import _pywhispercpp as pw

    language = settings.get("language", "en")
    if language != "auto" and pw.whisper_lang_id(language) < 0:
        raise InvalidArgument(f"whisper: unknown language {language!r}")


class WhisperBackend(Backend):
    encoding = GraphEncoding.WHISPER
    name = "whisper"
    config_keys = frozenset({"device", "threads"})
    parses_config = True

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> WhisperGraph:
        refuse_auto_in_load("whisper", target, config)
        if not builders:
            raise InvalidArgument("whisper: load needs a builder (the ggml whisper model)")
        raw = builders[1] if len(builders) > 1 else getattr(config, "raw", None)
        settings = {**WHISPER_DEFAULTS, **(parse_whisper_config(raw) if raw else {})}
        _check_language(settings)
        model = bytes(builders[0])
        if model.startswith(PRELOAD_PREFIX):
            path = os.fsdecode(model[len(PRELOAD_PREFIX) :])
            try:
                with open(path, "rb") as file:
                    model = file.read()
            except OSError as err:
                raise InvalidArgument(f"whisper: cannot read the model {path!r}: {err.strerror}") from None
        check_whisper_model(model)
        handle, path = tempfile.mkstemp(prefix="wasinn-whisper-", suffix=".bin")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(model)
            return WhisperGraph(path, settings)
        finally:
            os.unlink(path)  # whisper.cpp reads the whole file at init


class WhisperGraph(BackendGraph):
    def __init__(self, path: str, settings: dict[str, Any]) -> None:
        import _pywhispercpp as pw

        self.settings = settings
        with _captured_logs() as errors:
            try:
                context = pw.whisper_init_from_file_with_params(path, pw.whisper_context_default_params())
            except (ValueError, RuntimeError, MemoryError) as err:  # C++ exceptions from the loader
                errors.append(str(err))
        if context is None or errors:
            reason = errors[0] if errors else "no context"
            raise InvalidArgument(f"whisper: whisper.cpp cannot load the model ({reason})")
        self.context: Any = context
        if not pw.whisper_is_multilingual(context):
            settings["language"], settings["translate"] = "en", False

    def init_execution_context(self) -> WhisperContext:
        return WhisperContext(self)

    def _release(self) -> None:
        import _pywhispercpp as pw

        if self.context is not None:
            pw.whisper_free(self.context)
            self.context = None


class WhisperContext(BackendContext):
    settings_inputs = frozenset({1})  # the metadata JSON (spec §3.4)

    def __init__(self, graph: WhisperGraph) -> None:
        self.graph = graph
        self.settings = dict(graph.settings)
        self.audio = np.zeros(0, dtype=np.float32)
        self.text = b""

    def _set_input(self, index: int, tensor: Tensor) -> None:
        data = bytes(tensor.data)
        if index == 1:
            self.settings = dict(self.graph.settings)  # reset first, as WasmEdge does
            self.settings.update(parse_whisper_config(data))
            if self.settings.get("detect-language"):
                self.settings["language"] = "auto"
            _check_language(self.settings)
            return
        self.audio = read_wav(data, tensor.dims)

    def _params(self) -> Any:
        import _pywhispercpp as pw

        s = self.settings
        beam = int(s["beam-size"]) > 1
        strategy = pw.whisper_sampling_strategy
        params = pw.whisper_full_default_params(
            strategy.WHISPER_SAMPLING_BEAM_SEARCH if beam else strategy.WHISPER_SAMPLING_GREEDY
        )
        params.beam_search = {"beam_size": int(s["beam-size"]), "patience": -1.0}
        params.greedy = {"best_of": int(s["best-of"])}
        params.language = s["language"]
        params.translate = bool(s.get("translate", False))
        params.detect_language = bool(s.get("detect-language", False))
        params.no_timestamps = bool(s.get("no-timestamps", False))
        params.n_threads = int(s.get("threads") or min(4, os.cpu_count() or 1))
        params.offset_ms = int(s.get("offset-t", 0))
        params.duration_ms = int(s.get("duration", 0))
        params.max_len = int(s.get("max-len", 0))
        params.token_timestamps = params.max_len > 0
        params.split_on_word = bool(s.get("split-on-word", False))
        if int(s["max-context"]) >= 0:
            params.n_max_text_ctx = int(s["max-context"])
        params.audio_ctx = int(s.get("audio-ctx", 0))
        params.temperature = float(s["temperature"])
        params.temperature_inc = 0.2
        params.entropy_thold = 2.4
        params.logprob_thold = -1.0
        params.thold_pt = 0.01
        if s["prompt"]:
            params.initial_prompt = s["prompt"]
        params.print_progress = False
        params.print_realtime = False
        params.print_timestamps = False
        return params

    def _compute(self) -> None:
        import _pywhispercpp as pw

        self.text = b""
        context = self.graph.context
        assert context is not None  # the core refuses a released graph (Lifecycle)
        processors = max(int(self.settings["processors"]), 1)
        with _captured_logs():
            status = pw.whisper_full_parallel(
                context, self._params(), self.audio, self.audio.size, processors
            )
        if status != 0:
            raise BackendError(f"whisper: whisper_full_parallel failed with status {status}")
        segments = [
            (
                int(pw.whisper_full_get_segment_t0(context, i)),
                int(pw.whisper_full_get_segment_t1(context, i)),
                bytes(pw.whisper_full_get_segment_text(context, i)),
            )
            for i in range(pw.whisper_full_n_segments(context))
        ]
        self.text = transcript(segments, timestamps=not self.settings.get("no-timestamps", False))

    def _output_before_compute(self, index: int) -> npt.NDArray[np.generic]:
        return self._get_output(index)  # empty text, as WasmEdge

    def output_count(self) -> int:
        return 1  # the transcript; every index reads it, there is no metadata (ggml spec §9)

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        return np.frombuffer(self.text, dtype=np.uint8) if self.text else np.zeros(0, dtype=np.uint8)
