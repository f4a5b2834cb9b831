"""llama.cpp through llama-cpp-python's low-level ctypes API, shaped as WasmEdge's GGML plugin.

The high-level ``llama_cpp.Llama`` has its own defaults, stop rules and sampler order; the
GGML contract (ggml-backend spec §5) needs exact positions (n_ctx − 4, pos + 1 > n_ctx),
pieces with special tokens rendered and the ``common_sampler`` chain, so this module drives
``llama_decode`` and ``llama_sampler_*`` itself. Only :mod:`wasinn.backends.ggml` imports it.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import llama_cpp

from wasinn.backends.ggml_metadata import FLASH_ATTN, SPLIT_MODES
from wasinn.core import BackendError, InvalidArgument

_init_lock = threading.Lock()
_initialised = False


def ensure_backend(verbose: bool) -> None:
    """Initialise llama.cpp once; its log lines go to stderr only with ``enable-log``."""
    global _initialised
    import llama_cpp._logger as llama_logger

    llama_logger.set_verbose(verbose)
    with _init_lock:
        if not _initialised:
            llama_cpp.llama_backend_init()
            _initialised = True


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def parallel_sequences(settings: Mapping[str, Any]) -> int:
    """``n-parallel``: the sequence slots of the graph's llama context (1 and below: one)."""
    wanted = max(int(settings.get("n-parallel", 1)), 1)
    most = int(llama_cpp.llama_max_parallel_sequences())
    if wanted > most:
        raise InvalidArgument(f"ggml: n-parallel {wanted} is more than llama.cpp's {most} sequences")
    return wanted


def default_threads() -> int:
    """llama-cpp-python's own default (``Llama``): half the CPUs, at least one."""
    return max((os.cpu_count() or 2) // 2, 1)


class LlamaModel:
    """A loaded ``llama_model`` and its vocabulary; pieces are cached per token."""

    def __init__(self, path: str, settings: Mapping[str, Any]) -> None:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = int(settings.get("n-gpu-layers", params.n_gpu_layers))
        params.split_mode = SPLIT_MODES.index(settings.get("split-mode", "layer"))
        params.main_gpu = int(settings.get("main-gpu", params.main_gpu))
        params.check_tensors = bool(settings.get("check-tensors", False))
        mmap, mlock = settings.get("use-mmap", True), settings.get("use-mlock", False)
        params.load_mode = {
            (True, True): llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK,
            (False, True): llama_cpp.LLAMA_LOAD_MODE_MLOCK,
            (True, False): llama_cpp.LLAMA_LOAD_MODE_MMAP,
            (False, False): llama_cpp.LLAMA_LOAD_MODE_NONE,
        }[(bool(mmap), bool(mlock))]
        split = settings.get("tensor-split")
        if split:
            devices = int(llama_cpp.llama_max_devices())
            if len(split) > devices:
                raise InvalidArgument(
                    f"ggml: tensor-split has {len(split)} entries, more than the {devices} device(s)"
                )
            self._split = (ctypes.c_float * devices)(*split)
            params.tensor_split = self._split
        self.model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
        if not self.model:
            raise InvalidArgument(f"ggml: llama.cpp cannot load the model {path} (not a GGUF it can read)")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd(self.model))
        self._pieces: dict[int, bytes] = {}
        self._piece_buffer = ctypes.create_string_buffer(64)
        # Batched sequences call piece() from their own threads, and ctypes lets go of the GIL
        # inside llama_token_to_piece: unguarded, one thread's piece overwrote another's in the
        # shared buffer, and the wrong bytes stayed in the cache.
        self._piece_lock = threading.Lock()

    def tokenize(self, text: bytes, add_special: bool = True) -> list[int]:
        """parse_special, and add_special unless told: as WasmEdge tokenizes every prompt."""
        capacity = len(text) + 8
        while True:
            tokens = (llama_cpp.llama_token * capacity)()
            count = int(
                llama_cpp.llama_tokenize(self.vocab, text, len(text), tokens, capacity, add_special, True)
            )
            if count >= 0:
                return list(tokens[:count])
            capacity = -count

    def piece(self, token: int) -> bytes:
        """The token's bytes with special tokens rendered (``common_token_to_piece``)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        with self._piece_lock:
            buffer = self._piece_buffer
            size = int(llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True))
            if size < 0:
                buffer = ctypes.create_string_buffer(-size)
                size = int(llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True))
            piece = buffer.raw[:size]
        self._pieces[token] = piece
        return piece

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None


class LlamaContext:
    """One ``llama_context`` plus a token batch of min(``batch-size``, n_ctx) slots."""

    def __init__(self, model: LlamaModel, settings: Mapping[str, Any]) -> None:
        self.model = model
        n_batch, n_ubatch = int(settings.get("batch-size", 2048)), int(settings.get("ubatch-size", 512))
        if n_batch < 1 or n_ubatch < 0:
            # llama.cpp asserts (aborting the process) on an empty batch; WasmEdge reports 1.
            # ubatch-size 0 is llama.cpp's "same as batch-size".
            raise InvalidArgument(
                f"ggml: batch-size must be >= 1 and ubatch-size >= 0, got {n_batch}, {n_ubatch}"
            )
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = int(settings.get("ctx-size", 0))
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch
        self.n_seq = parallel_sequences(settings)
        if n_batch < self.n_seq:
            # llama.cpp reserves an output row per sequence in n_batch rows, and asserts
            # (aborting the process) at context creation when they do not fit
            raise InvalidArgument(f"ggml: batch-size {n_batch} is less than n-parallel {self.n_seq}")
        params.n_seq_max = self.n_seq
        if self.n_seq > 1:
            # A KV area per sequence of ctx-size cells (llm-serving spec §2.2): each execution
            # context keeps its own n_ctx arithmetic, and no sequence can fill another's.
            per_sequence = params.n_ctx or int(llama_cpp.llama_model_n_ctx_train(model.model))
            params.n_ctx = per_sequence * self.n_seq
            params.kv_unified = False
        threads = int(settings.get("threads", default_threads()))
        params.n_threads = threads if threads > 0 else default_threads()
        threads_batch = int(settings.get("threads-batch", params.n_threads))
        params.n_threads_batch = threads_batch if threads_batch > 0 else params.n_threads
        self.embedding = bool(settings.get("embedding", False) or "reranking" in settings)
        params.embeddings = self.embedding
        if "reranking" in settings:
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_RANK
        for key, field in (
            ("pooling-type", "pooling_type"),
            ("attention-type", "attention_type"),
            ("rope-scaling-type", "rope_scaling_type"),
            ("cache-type-k", "type_k"),
            ("cache-type-v", "type_v"),
            ("yarn-orig-ctx", "yarn_orig_ctx"),
            ("rope-freq-base", "rope_freq_base"),
            ("rope-freq-scale", "rope_freq_scale"),
            ("yarn-ext-factor", "yarn_ext_factor"),
            ("yarn-attn-factor", "yarn_attn_factor"),
            ("yarn-beta-fast", "yarn_beta_fast"),
            ("yarn-beta-slow", "yarn_beta_slow"),
        ):
            if key in settings:
                setattr(params, field, settings[key])
        params.flash_attn_type = FLASH_ATTN[settings.get("flash-attn", "auto")]
        params.offload_kqv = not settings.get("no-kv-offload", False)
        params.no_perf = bool(settings.get("no-perf", False))
        self.ctx = llama_cpp.llama_init_from_model(model.model, params)
        if not self.ctx:
            raise InvalidArgument("ggml: llama.cpp cannot create a context with these settings")
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(self.ctx))
        self.n_batch = int(llama_cpp.llama_n_batch(self.ctx))
        self.n_ubatch = int(llama_cpp.llama_n_ubatch(self.ctx))
        # llama.cpp aborts the process when a non-causal batch (BERT-like models, or
        # attention-type 1) has more tokens than n_ubatch; callers refuse such prompts.
        self.causal = bool(llama_cpp.llama_get_causal_attn(self.ctx))
        self.pooling = int(llama_cpp.llama_pooling_type(self.ctx))
        self.batch_size = n_batch
        self._batch_capacity = 0
        self._batch: Any = None
        self.resize_batch(n_batch)

    def resize_batch(self, batch_size: int) -> None:
        """Keep ``batch_size`` (an embedding prompt longer than it is errno 102, spec §7), but
        allocate at most n_ctx slots: ``llama_batch_init`` allocates every slot up front (a
        batch-size of 4e9 crashes it), and no decode needs more, since prompts longer than
        n_ctx − 4 tokens are refused before any decode."""
        self.batch_size = batch_size
        slots = min(batch_size, self.n_ctx)
        if slots == self._batch_capacity:
            return
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
        self._batch = llama_cpp.llama_batch_init(slots, 0, 1)
        self._batch_capacity = slots

    @property
    def batch_capacity(self) -> int:
        return self._batch_capacity

    def clear(self) -> None:
        # metadata only: the next decode overwrites the cells it uses
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), False)

    def decode(self, tokens: Sequence[int], start: int, all_outputs: bool = False) -> None:
        """Decode ``tokens`` at positions ``start…`` in chunks; outputs on the last token only."""
        batch = self._batch
        chunk = min(self._batch_capacity, self.n_batch)
        for offset in range(0, len(tokens), chunk):
            part = tokens[offset : offset + chunk]
            last = offset + len(part) == len(tokens)
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = start + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = all_outputs or (last and i == len(part) - 1)
            batch.n_tokens = len(part)
            self._check(llama_cpp.llama_decode(self.ctx, batch))

    def decode_one(self, token: int, position: int) -> None:
        batch = self._batch
        batch.token[0] = token
        batch.pos[0] = position
        batch.n_seq_id[0] = 1
        batch.seq_id[0][0] = 0
        batch.logits[0] = True
        batch.n_tokens = 1
        self._check(llama_cpp.llama_decode(self.ctx, batch))

    @staticmethod
    def _check(status: int) -> None:
        if status != 0:
            raise BackendError(f"ggml: llama_decode failed with status {status}")

    def embedding_vector(self) -> list[float]:
        pointer = None
        if self.pooling != llama_cpp.LLAMA_POOLING_TYPE_NONE:
            pointer = llama_cpp.llama_get_embeddings_seq(self.ctx, 0)
        if not pointer:
            pointer = llama_cpp.llama_get_embeddings_ith(self.ctx, -1)
        if not pointer:
            raise BackendError("ggml: llama.cpp returned no embedding")
        width = 1 if self.pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK else self.model.n_embd
        return [float(value) for value in pointer[:width]]

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None


class Sampler:
    """The ``common_sampler`` chain (grammar first), as WasmEdge builds it from its settings."""

    def __init__(self, model: LlamaModel, settings: Mapping[str, Any], grammar: str | None) -> None:
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            self._build(model, settings, grammar)
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self.chain, sampler)

    def _build(self, model: LlamaModel, s: Mapping[str, Any], grammar: str | None) -> None:
        seed = int(s.get("seed", llama_cpp.LLAMA_DEFAULT_SEED))
        temp = float(s.get("temp", 0.8))
        if grammar:
            sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
            if not sampler:
                raise InvalidArgument("ggml: the grammar does not parse (llama.cpp rejected the GBNF)")
            self._add(sampler)
        if s.get("tts"):
            # WasmEdge's TTS mode replaces the sampler list with top-k 4, then the random draw
            self._add(llama_cpp.llama_sampler_init_top_k(4))
            self._add(llama_cpp.llama_sampler_init_dist(seed))
            return
        last_n = int(s.get("dry-last-n-penalty", s.get("last-n-penalty", 64)))
        self._add(
            llama_cpp.llama_sampler_init_penalties(
                model.n_vocab,
                last_n,
                float(s.get("repeat-penalty", 1.0)),
                float(s.get("frequency-penalty", 0.0)),
                float(s.get("presence-penalty", 0.0)),
            )
        )
        mirostat = int(s.get("mirostat", 0))
        if mirostat == 1:
            self._add(llama_cpp.llama_sampler_init_temp(temp))
            self._add(
                llama_cpp.llama_sampler_init_mirostat(
                    model.n_vocab, seed, 5.0, float(s.get("mirostat-eta", 0.1)), 100
                )
            )
            return
        if mirostat == 2:
            self._add(llama_cpp.llama_sampler_init_temp(temp))
            self._add(llama_cpp.llama_sampler_init_mirostat_v2(seed, 5.0, float(s.get("mirostat-eta", 0.1))))
            return
        min_keep = max(int(s.get("min-keep", 0)), 0)
        if temp <= 0 and float(s.get("xtc-probability", 0.0)) <= 0 and float(s.get("typ-p", 1.0)) >= 1:
            # top-k, top-p and min-p all keep the most probable token, and temperature 0 then
            # keeps only it: the chain's answer is the argmax, found without sorting the vocab.
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        self._add(llama_cpp.llama_sampler_init_top_k(int(s.get("top-k", 40))))
        self._add(llama_cpp.llama_sampler_init_typical(float(s.get("typ-p", 1.0)), min_keep))
        self._add(llama_cpp.llama_sampler_init_top_p(float(s.get("top-p", 0.95)), min_keep))
        self._add(llama_cpp.llama_sampler_init_min_p(float(s.get("min-p", 0.05)), min_keep))
        self._add(
            llama_cpp.llama_sampler_init_xtc(
                float(s.get("xtc-probability", 0.0)), float(s.get("xtc-threshold", 0.1)), min_keep, seed
            )
        )
        self._add(
            llama_cpp.llama_sampler_init_temp_ext(
                temp, float(s.get("dynatemp-range", 0.0)), float(s.get("dynatemp-exponent", 1.0))
            )
        )
        self._add(llama_cpp.llama_sampler_init_dist(seed))

    def sample(self, context: LlamaContext) -> int:
        """Sample from the last output and accept the token (llama_sampler_sample does both)."""
        return int(llama_cpp.llama_sampler_sample(self.chain, context.ctx, -1))

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self.chain)

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
