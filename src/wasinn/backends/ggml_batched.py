"""``compute`` / ``compute_single`` of a GGML context whose graph batches (n-parallel > 1).

llm-serving spec §2.4: each execution context is a sequence of the graph's one llama
context. It holds a slot from its prompt until its generation ends (``compute`` returns, a
stream ends or is finished with ``fini_single``, a new prompt, cancel, close); meanwhile its
tokens go through the graph's :class:`~wasinn.backends._llama_batch.BatchEngine`, decoded in
one batch with the other sequences' tokens. The token arithmetic is the single-context one
of ggml-backend spec §5 (errno 100, 101 after exactly n_ctx − P + 1 tokens, 102, n-predict,
reverse prompt), with n_ctx the sequence's own KV area.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING

from wasinn.backends._llama_batch import BatchEngine, Request, Slot
from wasinn.core import BackendError, Errno, InvalidArgument, NNError

if TYPE_CHECKING:
    from wasinn.backends._llama import LlamaContext, LlamaModel, Sampler
    from wasinn.backends.ggml import GgmlContext


def end_of_sequence() -> NNError:
    return NNError("ggml: end of sequence", Errno.END_OF_SEQUENCE)


def context_full(n_ctx: int) -> NNError:
    return NNError(f"ggml: the context is full ({n_ctx} tokens)", Errno.CONTEXT_FULL)


class BatchedSequence:
    """One execution context's sequence slot in its graph's batch engine (none until used)."""

    def __init__(self, owner: GgmlContext) -> None:
        self.owner = owner
        self.engine: BatchEngine | None = None
        self.slot: Slot | None = None
        self.request: Request | None = None
        # The decode of the token the guest is reading, queued by the engine as it sampled the
        # token (or by this side, if it asked too late), so the engine's next step need not wait
        # for the guest (llm-serving spec §2.3): one step ahead.
        self.ahead: Request | None = None
        self._lock = threading.Lock()  # release and cancel come from other threads too

    def release(self) -> None:
        """Give the slot back (its cells are removed before anyone else's prompt uses it)."""
        with self._lock:
            engine, slot = self.engine, self.slot
            self.engine = self.slot = None
            self.ahead = None  # the engine drops it with the slot
        if engine is not None and slot is not None:
            engine.release(slot)

    def cancel(self) -> None:
        with self._lock:
            engine, requests = self.engine, (self.request, self.ahead)
        for request in requests:
            if engine is not None and request is not None:
                engine.cancel(request)

    def settle(self) -> None:
        """Cancel the step run ahead before its sampler changes or goes: once cancelled the
        engine never samples with it. Its token stays pending; the next step decodes it again
        over whatever cells the cancelled one wrote."""
        with self._lock:
            engine, ahead = self.engine, self.ahead
        if engine is not None and ahead is not None:
            engine.cancel(ahead)

    # -- compute (spec §5.1)

    def compute(self) -> None:
        owner = self.owner
        self.release()  # a stream's step run ahead uses the sampler reset below
        with owner.graph.lock:
            model, context, engine = self._ready()
            owner._cancelled = False
            owner._reset_generation()
            owner.streaming = False
            prompt = self._prompt(context)
            sampler = owner._current_sampler()
            settings = owner.settings
            limit = int(settings.get("n-predict", -1))
            stream = bool(settings.get("stream-stdout", False))
            reverse = str(settings.get("reverse-prompt", "")).encode()
            ignore_eos = bool(owner.graph.settings.get("ignore-eos", False))
        slot = self._acquire(engine, prompt)
        try:
            token = self._wait(engine, engine.prefill(slot, prompt, sampler))
            position, produced = len(prompt), 0
            while limit < 0 or produced < limit:
                if owner._cancelled:
                    raise BackendError("ggml: generation cancelled")
                piece = owner._append(model, token)
                produced += 1
                if stream:
                    sys.stdout.flush()
                    os.write(1, piece)
                if reverse and reverse in owner.output:
                    return
                if not ignore_eos and model.is_eog(token):
                    return
                if position + 1 > engine.n_ctx_seq:
                    raise context_full(engine.n_ctx_seq)
                if produced == limit:
                    return  # a single context decodes this last token too; nothing reads it
                token = self._wait(engine, engine.step(slot, token, position, sampler))
                position += 1
        finally:
            self.release()

    # -- streaming (spec §5.2)

    def compute_single(self) -> None:
        owner = self.owner
        with owner.graph.lock:
            model, context, engine = self._ready()
            sampler = owner._current_sampler()
            ignore_eos = bool(owner.graph.settings.get("ignore-eos", False))
            pending, slot = owner._pending, self.slot
            held = slot is not None and self.engine is engine
            continuing = owner.streaming and pending is not None and held
            if not continuing:
                self.release()
                owner._cancelled = False
                owner._reset_generation()  # resets the sampler too
                prompt = self._prompt(context)
        n_ctx_seq = engine.n_ctx_seq

        def stream_end(token: int, position: int) -> NNError | None:
            """Why the stream ends after ``token`` (to be decoded at ``position``), if it does."""
            if not ignore_eos and model.is_eog(token):
                return end_of_sequence()
            return context_full(n_ctx_seq) if position + 1 > n_ctx_seq else None

        def goes_on(token: int, position: int) -> bool:
            """Asked by the engine as it samples, to queue the next step at once."""
            return stream_end(token, position) is None

        try:
            if continuing:
                assert pending is not None and slot is not None
                owner._pending = None
                request = self._next_step(engine, slot, pending, owner.position, sampler)
                engine.follow(request, goes_on)
                token = self._wait(engine, request)
                owner.position += 1
            else:
                slot = self._acquire(engine, prompt)
                request = engine.prefill(slot, prompt, sampler, goes_on)
                token = self._wait(engine, request)
                owner.position = len(prompt)
                owner.streaming = True
            owner._append(model, token)
            if (end := stream_end(token, owner.position)) is not None:
                raise end
        except NNError:
            owner.streaming = False
            self.release()
            raise
        owner._pending = token
        assert slot is not None
        # the engine queued it when it sampled the token, unless this thread was too late to ask
        ahead = request.next or engine.step(slot, token, owner.position, sampler)
        with self._lock:
            self.ahead = ahead

    # -- helpers

    def _ready(self) -> tuple[LlamaModel, LlamaContext, BatchEngine]:
        model, context = self.owner.graph.ready()
        engine = self.owner.graph.engine
        if engine is None:
            raise InvalidArgument("ggml: the graph has no batch engine")
        return model, context, engine

    def _prompt(self, context: LlamaContext) -> list[int]:
        if self.owner.image is not None:
            raise InvalidArgument(
                "ggml: image prompts need n-parallel 1; this graph batches sequences (docs/backends/ggml.md)"
            )
        self.owner._check_prompt(context)  # 1 without a prompt, 102 over n_ctx_seq − 4
        return list(self.owner.prompt)

    def _next_step(
        self, engine: BatchEngine, slot: Slot, token: int, position: int, sampler: Sampler
    ) -> Request:
        """The step run ahead for this token, or a new one: after a sampler change (a cancelled
        step run ahead) it decodes again from ``position``, the old cells removed first."""
        with self._lock:
            ahead, self.ahead = self.ahead, None
        if ahead is None:
            return engine.step(slot, token, position, sampler)
        same = ahead.sampler is sampler and ahead.start == position and ahead.tokens == [token]
        if same and not ahead.cancelled:
            return ahead
        engine.cancel(ahead)
        return engine.step(slot, token, position, sampler, rewind=True)

    def _acquire(self, engine: BatchEngine, prompt: list[int]) -> Slot:
        self.release()
        slot = engine.acquire(lambda: self.owner._cancelled, prompt)
        with self._lock:
            self.engine, self.slot = engine, slot
        return slot

    def _wait(self, engine: BatchEngine, request: Request) -> int:
        with self._lock:
            self.request = request
        try:
            if self.owner._cancelled:
                engine.cancel(request)
            return engine.wait(request)
        finally:
            with self._lock:
                self.request = None
