"""GGML (llama.cpp) backend, encoding 6: WasmEdge's ggml plugin on llama-cpp-python.

The contract is ``shared/spec/ggml-backend.md``: builder[0] is ``preload:<path>`` or the
GGUF bytes, builder[1] the metadata JSON (§3); set_input index 1 is metadata and any other
index the prompt (§4); compute generates with errno 101/102 at the spec's token arithmetic
(§5.1); compute_single/get_output_single/fini_single stream (§5.2); get_output index 1 is
the metadata JSON (§5.3); ``embedding: true`` switches to embeddings (§7); an image (an
inline base64 ``<img>`` tag or the ``image`` setting) goes through llama.cpp's libmtmd and
the ``mmproj`` projector (§6).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from wasinn.backends import ggml_tts
from wasinn.backends._common import refuse_auto_in_load
from wasinn.backends._llama import (
    LlamaContext,
    LlamaModel,
    Sampler,
    default_threads,
    ensure_backend,
    gpu_offload_supported,
)
from wasinn.backends._llama_batch import BatchEngine
from wasinn.backends._mtmd import VisionContext
from wasinn.backends.ggml_batched import BatchedSequence, context_full, end_of_sequence
from wasinn.backends.ggml_image import IMAGE_TAG, ImagePrompt, decode_image, inline_image
from wasinn.backends.ggml_metadata import (
    FLASH_ATTN,
    PER_CONTEXT_KEYS,
    SAMPLER_KEYS,
    json_schema_grammar,
    parse_metadata,
)
from wasinn.core import (
    PATH_BUILDER,
    Backend,
    BackendContext,
    BackendError,
    BackendGraph,
    Errno,
    ExecutionTarget,
    GraphEncoding,
    InvalidArgument,
    ModelConfig,
    NNError,
    Tensor,
    TensorType,
)

log = logging.getLogger("wasinn")
PRELOAD_PREFIX = PATH_BUILDER  # the core's one marker of a builder that names a file
# The llama.cpp build WasmEdge HEAD pins (spec §5.3); the metadata reports it, not ours.
BUILD_NUMBER = int(os.environ.get("WASINN_LLAMA_BUILD_NUMBER", "8757"))
COMMIT = os.environ.get("WASINN_LLAMA_COMMIT", "a29e4c0b")
PROMPT_MARGIN = 4  # WasmEdge refuses prompts longer than n_ctx − 4 tokens
_EMPTY = np.zeros(0, dtype=np.uint8)
REFUSED_TYPES = frozenset({TensorType.F64, TensorType.I64, TensorType.BF16})


def _bytes(data: bytes | bytearray) -> npt.NDArray[np.uint8]:
    return np.frombuffer(bytes(data), dtype=np.uint8) if data else _EMPTY


def prompt_too_long(tokens: int, limit: int, what: str) -> NNError:
    return NNError(
        f"ggml: the prompt has {tokens} tokens, more than the {limit} {what}", Errno.PROMPT_TOO_LONG
    )


def embedding_json(vector: Sequence[float]) -> bytes:
    """``{"n_embedding": N, "embedding": [v0,v1,…]}``, each value ``%.10g``, L2-normalised (§7)."""
    norm = math.sqrt(sum(value * value for value in vector))
    scale = 1.0 / norm if norm > 0 else 0.0
    values = ",".join(format(float(np.float32(value * scale)), ".10g") for value in vector)
    return f'{{"n_embedding": {len(vector)}, "embedding": [{values}]}}'.encode()


def _check_gpu_layers(settings: Mapping[str, Any]) -> None:
    layers = settings.get("n-gpu-layers")
    if layers is not None and layers > 0 and not gpu_offload_supported():
        # WasmEdge's CPU build runs such guests (its gemma and tts examples set 100) on the CPU
        log.warning(
            "ggml: n-gpu-layers %d asks for GPU offload, but this llama-cpp-python build is CPU-only: "
            "running on the CPU",
            layers,
        )


def checked_metadata(raw: bytes, where: str) -> dict[str, Any]:
    """Parsed metadata with WasmEdge's parse-time effects: a json-schema becomes the grammar."""
    settings = parse_metadata(raw, where)
    _check_gpu_layers(settings)
    if "json-schema" in settings:
        settings["grammar"] = json_schema_grammar(settings.pop("json-schema"))
    return settings


class GgmlBackend(Backend):
    encoding = GraphEncoding.GGML
    name = "ggml"
    config_keys = frozenset({"device", "threads"})
    parses_config = True

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> GgmlGraph:
        refuse_auto_in_load("ggml", target, config)
        if not builders:
            raise InvalidArgument("ggml: load needs a builder (the model or preload:<path>)")
        raw_config = builders[1] if len(builders) > 1 else _config_bytes(config)
        settings = checked_metadata(raw_config, "load metadata") if raw_config is not None else {}
        model = bytes(builders[0])
        if model.startswith(PRELOAD_PREFIX):
            path = os.fsdecode(model[len(PRELOAD_PREFIX) :])
            if not path or not os.path.isfile(path):
                raise NNError(f"ggml: model file not found: {path!r}", Errno.MODEL_NOT_FOUND)
            return GgmlGraph(path, settings, owned=False)
        handle, path = tempfile.mkstemp(prefix="wasinn-ggml-", suffix=".gguf")
        with os.fdopen(handle, "wb") as file:
            file.write(model)
        try:
            return GgmlGraph(path, settings, owned=True)
        except BaseException:
            os.unlink(path)
            raise


def _config_bytes(config: ModelConfig | None) -> bytes | None:
    raw = getattr(config, "raw", None)
    return bytes(raw) if raw else None


class GgmlGraph(BackendGraph):
    """One llama model and one llama context, shared by the graph's execution contexts."""

    def __init__(self, path: str, settings: dict[str, Any], owned: bool) -> None:
        self.path = path
        self._owned = owned
        self.settings = settings
        self.invalid = False
        # One llama context serves every execution context of the graph, and a preloaded graph
        # is shared by all instances of a runtime: every llama call goes through this lock.
        self.lock = threading.RLock()
        self.model: LlamaModel | None = None
        self.context: LlamaContext | None = None
        # With n-parallel > 1 (and no embedding): the scheduler that batches the contexts'
        # sequences (llm-serving spec §2); they then wait on it, not on the lock above.
        self.engine: BatchEngine | None = None
        # The mmproj bound to the model (spec §6): loaded by the first image prompt, freed with
        # the model and loaded again by the next image prompt after a reload.
        self.vision: VisionContext | None = None
        self._vision_path = ""
        self.vocoder: ggml_tts.Vocoder | None = None  # the TTS vocoder (spec §8), loaded on first use
        # The graph's live execution contexts: their samplers (a grammar sampler keeps the
        # model's vocabulary) must go before the model is freed.
        self._contexts: weakref.WeakSet[GgmlContext] = weakref.WeakSet()
        ensure_backend(bool(settings.get("enable-log") or settings.get("enable-debug-log")))
        self.model = LlamaModel(path, settings)
        try:
            self.rebuild_context()
        except BaseException:
            self.model.close()
            raise

    def init_execution_context(self) -> GgmlContext:
        if self.invalid:
            raise InvalidArgument("ggml: the graph is invalid after a failed metadata reload")
        with self.lock:
            context = GgmlContext(self)
            self._contexts.add(context)
        return context

    # -- rebuilding after set_input(1) (spec §3.4)

    def reload_model(self) -> None:
        self.free_model()
        self.model = LlamaModel(self.path, self.settings)

    def free_model(self) -> None:
        """Free the llama and vision contexts, then every context's sampler (each rebuilds its
        own at its next compute), then the model they all point into."""
        self.drop_context()
        self.drop_vision()
        self.drop_vocoder()
        for context in list(self._contexts):
            context.drop_sampler()
        if self.model is not None:
            self.model.close()
            self.model = None

    def rebuild_context(self) -> None:
        self.drop_context()
        if self.model is None:
            raise InvalidArgument("ggml: the graph has no model")
        self.context = LlamaContext(self.model, self.settings)
        if self.context.n_seq > 1 and not self.context.embedding and not self.settings.get("tts"):
            self.engine = BatchEngine(self.context)  # embedding and TTS graphs stay single

    def vision_for(self, mmproj: str) -> VisionContext:
        """The vision context of the projector at host path ``mmproj``, loaded on first use."""
        model, _ = self.ready()
        if self.vision is not None and self._vision_path == mmproj:
            return self.vision
        self.drop_vision()
        settings = self.settings
        threads = int(settings.get("threads", default_threads()))
        flash_attn = FLASH_ATTN[settings.get("flash-attn", "auto")]
        self.vision = VisionContext(model, mmproj, threads if threads > 0 else default_threads(), flash_attn)
        self._vision_path = mmproj
        return self.vision

    def drop_vision(self) -> None:
        if self.vision is not None:
            self.vision.close()
            self.vision = None

    def drop_vocoder(self) -> None:
        if self.vocoder is not None:
            self.vocoder.close()
            self.vocoder = None

    def drop_context(self) -> None:
        if self.engine is not None:
            self.engine.close()  # in-flight requests fail; their contexts release their slots
            self.engine = None
        if self.context is not None:
            self.context.close()
            self.context = None

    def ready(self) -> tuple[LlamaModel, LlamaContext]:
        if self.invalid or self.model is None or self.context is None:
            raise InvalidArgument("ggml: the graph is invalid after a failed metadata reload")
        return self.model, self.context

    def _release(self) -> None:
        self.free_model()
        if self._owned:
            self._owned = False
            with contextlib.suppress(OSError):
                os.unlink(self.path)


Hook = TypeVar("Hook", bound=Callable[..., Any])


def _serialised(hook: Hook) -> Hook:
    """Run a context hook under its graph's lock (one llama context serves them all)."""

    @functools.wraps(hook)
    def locked(self: GgmlContext, *args: Any) -> Any:
        with self.graph.lock:
            return hook(self, *args)

    return cast(Hook, locked)


class GgmlContext(BackendContext):
    settings_inputs = frozenset({1})  # the metadata JSON (spec §3.4)

    def __init__(self, graph: GgmlGraph) -> None:
        self.graph = graph
        self.settings = {key: value for key, value in graph.settings.items() if key in PER_CONTEXT_KEYS}
        self.sampler: Sampler | None = None
        self.prompt: list[int] = []
        self.image: ImagePrompt | None = None  # the prompt, when it has an image (spec §6)
        self.output = bytearray()
        self.output_tokens = 0
        self.last_piece = b""
        self.position = 0
        self.streaming = False
        self._pending: int | None = None  # a streamed token not yet decoded
        self._cancelled = False
        self.sequence = BatchedSequence(self)  # its slot in the graph's batch engine, if any
        self._rebuild_sampler()

    # -- helpers

    def _rebuild_sampler(self) -> Sampler:
        model, _ = self.graph.ready()
        settings = self.graph.settings
        new = Sampler(model, settings, settings.get("grammar"))
        if self.sampler is not None:
            self.sequence.settle()
            self.sampler.close()
        self.sampler = new
        return new

    def _current_sampler(self) -> Sampler:
        """This context's sampler, rebuilt if a model reload by another context dropped it."""
        return self.sampler if self.sampler is not None else self._rebuild_sampler()

    def _reset_generation(self) -> None:
        self._pending = None
        self.output = bytearray()
        self.output_tokens = 0
        self.last_piece = b""
        self.position = 0
        if self.sampler is not None:
            self.sampler.reset()

    def _metadata(self) -> npt.NDArray[np.uint8]:
        # an image prompt reports its text tokens only (spec §5.3)
        inputs = self.image.text_tokens if self.image is not None else len(self.prompt)
        text = (
            f'{{"input_tokens": {inputs}, "output_tokens": {self.output_tokens}, '
            f'"llama_build_number": {BUILD_NUMBER}, "llama_commit": "{COMMIT}"}}'
        )
        return _bytes(text.encode())

    # -- set_input

    @_serialised
    def _set_input(self, index: int, tensor: Tensor) -> None:
        if tensor.type in REFUSED_TYPES:
            # WasmEdge's generic set_input check refuses these before GGML ignores the type
            raise InvalidArgument(f"ggml: tensor type {tensor.type.label} is refused (use u8 for text)")
        data = bytes(tensor.data)
        if index == 1:
            self._set_metadata(data)
            return
        model, context = self.graph.ready()
        image = self._image_prompt(data)
        if self.graph.engine is None:
            context.clear()  # WasmEdge clears the graph's KV cache on every prompt
        self.sequence.release()  # with batching, only this context's sequence
        self._drop_image()
        self.image = image
        if image is None and self.graph.settings.get("tts"):
            self.prompt = ggml_tts.tts_prompt(self, model, data)
        else:
            self.prompt = [] if image is not None else model.tokenize(data)
        self.streaming = False

    # -- images (spec §6)

    def _image_prompt(self, data: bytes) -> ImagePrompt | None:
        """The prompt's image, inline or the ``image`` file, tokenized with it; None for text."""
        inline = inline_image(data) if IMAGE_TAG in data else None
        image_path = str(self.settings.get("image", ""))
        if inline is None and not image_path:
            return None
        mmproj = str(self.graph.settings.get("mmproj", ""))
        if not mmproj:
            raise InvalidArgument("ggml: an image prompt needs the mmproj setting (the vision projector)")
        if inline is not None:
            text, pixels = inline[0], decode_image(inline[1], "the inline image")
        else:
            host = self._host_path("image", image_path)
            if not os.path.isfile(host):  # nor a FIFO or a device that would block or never end
                raise InvalidArgument(f"ggml: the image {image_path!r} is not a file")
            try:
                with open(host, "rb") as file:
                    raw = file.read()
            except OSError as err:
                raise InvalidArgument(f"ggml: cannot read the image {image_path!r}: {err.strerror}") from None
            text, pixels = data, decode_image(raw, f"the image {image_path!r}")
        return self._tokenize_image(text, pixels, self._host_path("mmproj", mmproj))

    def _host_path(self, key: str, path: str) -> str:
        """A path a guest set: a guest path, resolved through its --dir mappings."""
        if self.guest_path is None:
            return path
        try:
            return str(self.guest_path(path))
        except InvalidArgument as err:
            raise InvalidArgument(f"ggml: {key}: {err}") from None

    def _tokenize_image(self, text: bytes, pixels: npt.NDArray[np.uint8], mmproj: str) -> ImagePrompt:
        vision = self.graph.vision_for(mmproj)
        chunks = vision.tokenize(text, pixels)
        return ImagePrompt(text, pixels, mmproj, chunks, vision, chunks.text_tokens)

    def _current_image(self, image: ImagePrompt) -> ImagePrompt:
        """The image prompt, tokenized again if its vision context went with a model reload."""
        if image.vision is self.graph.vision and image.vision.ctx is not None:
            return image
        self.image = self._tokenize_image(image.text, image.pixels, image.mmproj)
        image.close()
        return self.image

    def _drop_image(self) -> None:
        if self.image is not None:
            self.image.close()
            self.image = None

    def _set_metadata(self, raw: bytes) -> None:
        graph = self.graph
        parsed = checked_metadata(raw, "set_input metadata")
        previous = dict(graph.settings)
        for key, value in parsed.items():
            if key in PER_CONTEXT_KEYS:
                self.settings[key] = value
            else:
                graph.settings[key] = value

        def changed(key: str) -> bool:
            return key in parsed and parsed[key] != previous.get(key)

        try:
            if changed("n-gpu-layers") or graph.model is None:
                graph.reload_model()
            if changed("embedding") or graph.context is None:
                graph.rebuild_context()
        except NNError:
            graph.invalid = True
            graph.drop_context()
            raise
        graph.invalid = False
        if self.sampler is None or any(changed(key) for key in SAMPLER_KEYS):
            self._rebuild_sampler()
        if changed("batch-size") and graph.context is not None:
            graph.context.resize_batch(int(graph.settings["batch-size"]))

    def drop_sampler(self) -> None:
        if self.sampler is not None:
            self.sequence.settle()
            self.sampler.close()
            self.sampler = None

    # -- compute

    def _compute(self) -> None:
        if self.graph.engine is not None and not self.graph.invalid:
            self.sequence.compute()
        else:
            self._compute_alone()

    @_serialised
    def _compute_alone(self) -> None:
        model, context = self.graph.ready()
        self._cancelled = False
        context.clear()
        self._reset_generation()
        self.streaming = False
        if context.embedding:
            self._embed(context)
            return
        if self.graph.settings.get("tts"):
            ggml_tts.compute_tts(self, model, context)
            return
        self._evaluate_prompt(context)
        sampler = self._current_sampler()
        limit = int(self.settings.get("n-predict", -1))
        stream = bool(self.settings.get("stream-stdout", False))
        reverse = str(self.settings.get("reverse-prompt", "")).encode()
        ignore_eos = bool(self.graph.settings.get("ignore-eos", False))
        produced = 0
        while limit < 0 or produced < limit:
            if self._cancelled:
                raise BackendError("ggml: generation cancelled")
            token = sampler.sample(context)
            piece = self._append(model, token)
            produced += 1
            if stream:
                sys.stdout.flush()
                os.write(1, piece)
            if reverse and reverse in self.output:
                return
            if not ignore_eos and model.is_eog(token):
                return
            self._advance(context, token)

    def _check_prompt(self, context: LlamaContext) -> None:
        if not self.prompt:
            raise InvalidArgument("ggml: compute needs a prompt: call set_input(ctx, 0, text) first")
        limit = context.n_ctx_seq - PROMPT_MARGIN
        if len(self.prompt) > limit:
            raise prompt_too_long(
                len(self.prompt), limit, f"that fit the context (ctx-size {context.n_ctx_seq} − 4)"
            )
        if not context.causal and len(self.prompt) > context.n_ubatch:
            # llama.cpp asserts (aborting the host) on a non-causal batch over n_ubatch tokens
            raise prompt_too_long(
                len(self.prompt), context.n_ubatch, "of ubatch-size that non-causal attention allows"
            )

    def _evaluate_prompt(self, context: LlamaContext) -> None:
        if self.image is not None:
            # mtmd's evaluator has no n_ctx − 4 check (no 102); its failures are 1 (spec §5.1)
            image = self._current_image(self.image)
            self.position = image.vision.evaluate(image.chunks, context)
            return
        self._check_prompt(context)
        context.decode(self.prompt, 0)
        self.position = len(self.prompt)

    def _append(self, model: LlamaModel, token: int) -> bytes:
        piece = model.piece(token)
        self.output += piece
        self.output_tokens += 1
        self.last_piece = piece
        return piece

    def _advance(self, context: LlamaContext, token: int) -> None:
        if self.position + 1 > context.n_ctx_seq:
            raise context_full(context.n_ctx_seq)
        context.decode_one(token, self.position)
        self.position += 1

    def _embed(self, context: LlamaContext) -> None:
        if self.image is not None:
            raise InvalidArgument("ggml: embedding mode takes text prompts only, not images")
        if len(self.prompt) > context.batch_size:
            raise prompt_too_long(len(self.prompt), context.batch_size, "of batch-size in embedding mode")
        self._check_prompt(context)
        context.decode(self.prompt, 0, all_outputs=True)
        self.output = bytearray(embedding_json(context.embedding_vector()))

    def cancel(self) -> None:
        self._cancelled = True
        self.sequence.cancel()

    def output_count(self) -> int:
        return 2  # the text, then the metadata JSON (index 1); other indices read the text

    def _get_output(self, index: int) -> npt.NDArray[np.generic]:
        if index == 1:
            return self._metadata()
        return _bytes(self.output)

    # -- streaming (spec §5.2)

    def _compute_single(self) -> None:
        if self.graph.engine is not None and not self.graph.invalid:
            self.sequence.compute_single()
        else:
            self._compute_single_alone()

    @_serialised
    def _compute_single_alone(self) -> None:
        model, context = self.graph.ready()
        try:
            if not self.streaming:
                context.clear()
                self._reset_generation()
                self._evaluate_prompt(context)  # on failure the stream stays unstarted and restarts
                self.streaming = True
            elif self._pending is not None:
                token, self._pending = self._pending, None
                context.decode_one(token, self.position)
                self.position += 1
            token = self._current_sampler().sample(context)
            self._append(model, token)
            if not self.graph.settings.get("ignore-eos", False) and model.is_eog(token):
                raise end_of_sequence()
            if self.position + 1 > context.n_ctx_seq:
                raise context_full(context.n_ctx_seq)
        except NNError:
            self.streaming = False
            raise
        # WasmEdge decodes the token before returning; deferring that decode to the next call
        # (same positions, same 101) hands the guest each token one decode sooner.
        self._pending = token

    @_serialised
    def _get_output_single(self, index: int) -> npt.NDArray[np.generic]:
        self.graph.ready()
        if index == 1:
            return self._metadata()
        return _bytes(self.last_piece)

    @_serialised
    def _fini_single(self) -> None:
        self.sequence.release()
        self._reset_generation()
        self.streaming = False

    def _output_before_compute(self, index: int) -> npt.NDArray[np.generic]:
        # GGML answers before any compute (empty text, or the metadata), and after a compute
        # that ended in 101/102 (the partial text).
        return self._get_output(index)

    def _release(self) -> None:
        self.sequence.release()
        self.drop_sampler()
        self._drop_image()
