"""Continuous batching: one llama context with S sequence slots, decoded by one thread.

llm-serving spec §2. ``Llama`` cannot make a multi-sequence context, so this drives the
low-level API: the engine thread owns the ``llama_context`` (contexts are not thread-safe)
and, each step, puts every waiting sequence's next token, then chunks of newcomers' prompts,
into one ``llama_decode`` batch, and samples each output row at once with that sequence's own
sampler (the next decode overwrites the logits). Callers (execution contexts, one thread
each) hold a slot and submit one request at a time: a prompt to prefill, or the token to
decode; each request resolves with the token sampled after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import llama_cpp

from wasinn.backends._llama import LlamaContext, Sampler
from wasinn.core import BackendError

# How long a step may wait for sequences whose guests hold their last token (they are about
# to submit the next): raises occupancy at a bounded cost in latency (spec §2.3).
GATHER_SECONDS = 0.002
# A step takes newcomers' prompts in arrival order until it holds this many of their tokens.
PROMPT_STEP_TOKENS = 16


# (sampled token, its position) -> whether the sequence decodes it (see Request.follow)
GoesOn = Callable[[int, int], bool]


def common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many tokens the two start with in common."""
    count = min(len(cached), len(prompt))
    for index in range(count):
        if cached[index] != prompt[index]:
            return index
    return count


class Cancelled(BackendError):
    """The request's context was cancelled (its guest stopped, its client left)."""


@dataclass(eq=False)
class Slot:
    seq: int
    # Its holder has the last sampled token and will submit the next request soon.
    in_guest: bool = False
    # The tokens whose cells the sequence holds, by position: kept after a release, so the
    # next prompt with the same beginning decodes only the rest (llama-server's cache_prompt).
    cached: list[int] = field(default_factory=list)


@dataclass(eq=False)
class Request:
    slot: Slot
    tokens: list[int]  # the prompt, or the one token to decode
    start: int  # the position of tokens[0]
    sampler: Sampler
    prompt: bool
    offset: int = 0  # tokens already decoded (a prompt goes in chunks)
    rewind: bool = False  # remove the sequence's cells from ``start`` on before decoding
    # Asked, with the sampled token and its position, whether the sequence goes on: then the
    # engine queues that token's step at once (``next``), without a round trip to the caller.
    follow: GoesOn | None = None
    next: Request | None = None
    token: int = -1  # the token sampled after the last one
    error: BackendError | None = None
    cancelled: bool = False
    done: threading.Event = field(default_factory=threading.Event)


@dataclass
class EngineStats:
    """What the engine did; tests and metrics read it."""

    steps: int = 0
    tokens: int = 0
    most_sequences: int = 0  # the most sequences one decode held
    sequences_seen: set[int] = field(default_factory=set)


class BatchEngine:
    """The scheduler loop of one graph (llama-server's ``update_slots``)."""

    def __init__(self, context: LlamaContext, gather_seconds: float = GATHER_SECONDS) -> None:
        self.context = context
        self.n_ctx_seq = context.n_ctx_seq
        self.gather_seconds = gather_seconds
        self.slots = [Slot(seq) for seq in range(context.n_seq)]
        self._free = list(self.slots)
        self._tickets: list[object] = []  # callers waiting for a slot, first come first served
        self._queue: list[Request] = []  # in arrival order
        self._clear: list[int] = []  # sequences whose cells go at the next step (a failed decode)
        self._decoding: list[Request] = []  # this step's requests, outside the lock
        self._releasing: list[Slot] = []  # released while this step decodes their tokens
        self._cond = threading.Condition()
        self._closed = False
        # never more than n_batch tokens a decode (llama.cpp asserts beyond), nor n_ctx
        self.capacity = max(min(context.n_batch, context.n_ctx), 1)
        self._batch = llama_cpp.llama_batch_init(self.capacity, 0, 1)
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._run, name="wasinn-llama-batch", daemon=True)
        self._thread.start()

    # -- called by execution contexts, each from its own thread

    def acquire(self, cancelled: Callable[[], bool], prompt: Sequence[int] = ()) -> Slot:
        """A free slot for ``prompt``, waiting first come first served while all are held."""
        ticket = object()
        with self._cond:
            self._tickets.append(ticket)
            try:
                while (slot := self._choose(prompt)) is None or self._tickets[0] is not ticket:
                    if self._closed:
                        raise BackendError("ggml: the model's batch engine was closed")
                    if cancelled():
                        raise Cancelled("ggml: generation cancelled while waiting for a sequence slot")
                    self._cond.wait(0.05)
                self._free.remove(slot)
                slot.in_guest = False
                return slot
            finally:
                self._tickets.remove(ticket)
                self._cond.notify_all()

    def _choose(self, prompt: Sequence[int]) -> Slot | None:
        """The free slot whose cells hold at least half of ``prompt`` (a conversation going on),
        else the one with the lowest id; None while there is none, or a lower one is being
        released. With a KV area per sequence llama.cpp decodes only runs of consecutive ids
        together (split_equal, sequential), so a gap splits every step in two; a released slot
        is free when the running step ends, before a newcomer's prompt could be decoded anyway."""
        if not self._free:
            return None
        held = {slot.seq: common_prefix(slot.cached, prompt) for slot in self._free}
        reused = max(self._free, key=lambda slot: (held[slot.seq], -slot.seq))
        if prompt and 2 * held[reused.seq] >= len(prompt):
            return reused
        lowest = min([*self._free, *self._releasing], key=lambda slot: slot.seq)
        return lowest if lowest in self._free else None

    def release(self, slot: Slot) -> None:
        """Give the slot back without waiting for a decode that uses it (a step run ahead):
        its requests are cancelled, so the engine, which samples under the condition, never
        touches their samplers again and frees the slot once the decode is over."""
        with self._cond:
            for request in (*self._queue, *self._decoding):
                if request.slot is slot:
                    request.cancelled = True
            slot.in_guest = False
            if any(request.slot is slot for request in self._decoding):
                self._releasing.append(slot)
            else:
                self._free_slot(slot)

    def _free_slot(self, slot: Slot) -> None:
        self._free.append(slot)  # its cells stay for a prompt with the same beginning
        self._cond.notify_all()

    def prefill(
        self, slot: Slot, prompt: list[int], sampler: Sampler, follow: GoesOn | None = None
    ) -> Request:
        """Decode ``prompt`` after what the slot's cells already hold of it (at least its last
        token is decoded: its logits give the first sample)."""
        with self._cond:
            keep = min(common_prefix(slot.cached, prompt), len(prompt) - 1)
        request = Request(slot, prompt[keep:], keep, sampler, prompt=True, rewind=True, follow=follow)
        return self._submit(request)

    def follow(self, request: Request, goes_on: GoesOn) -> None:
        """Have the engine queue the step after ``request`` when it samples it (one step ahead of
        the caller, never more: the step it queues follows nothing until asked)."""
        with self._cond:
            if not request.done.is_set():
                request.follow = goes_on

    def step(self, slot: Slot, token: int, position: int, sampler: Sampler, rewind: bool = False) -> Request:
        return self._submit(Request(slot, [token], position, sampler, prompt=False, rewind=rewind))

    def cancel(self, request: Request) -> None:
        with self._cond:
            request.cancelled = True
            self._cond.notify_all()

    def wait(self, request: Request) -> int:
        """The token sampled after ``request``; raises its failure."""
        while not request.done.wait(0.5):
            if not self._thread.is_alive():
                raise BackendError("ggml: the batch engine stopped")
        if request.error is not None:
            raise request.error
        return request.token

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None

    def _submit(self, request: Request) -> Request:
        with self._cond:
            if self._closed:
                raise BackendError("ggml: the model's batch engine was closed")
            request.slot.in_guest = False
            self._queue.append(request)
            self._cond.notify_all()
        return request

    # -- the engine thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for request in self._queue:
                        self._resolve(request, BackendError("ggml: the model's batch engine was closed"))
                    return
                self._gather()
                work = self._plan()
                self._decoding = [request for request, _ in work]
                clear, self._clear = self._clear, []
            memory = llama_cpp.llama_get_memory(self.context.ctx)
            for seq in clear:
                llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1)
                self.slots[seq].cached = []
            for request, _ in work:
                if request.rewind:  # from this chunk's first position on (a prompt goes in chunks)
                    position = request.start + request.offset
                    llama_cpp.llama_memory_seq_rm(memory, request.slot.seq, position, -1)
            try:
                if work:
                    self._decode(work)
            finally:
                with self._cond:
                    self._decoding = []
                    for slot in self._releasing:
                        self._free_slot(slot)
                    self._releasing = []
                    self._cond.notify_all()

    def _gather(self) -> None:
        """Wait (bounded) while a slot's holder has its token but has not asked for the next."""
        deadline = time.monotonic() + self.gather_seconds
        while not self._closed:
            queued = {request.slot.seq for request in self._queue}
            if not any(slot.in_guest and slot.seq not in queued for slot in self.slots):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _plan(self) -> list[tuple[Request, int]]:
        """This step's work: every generating sequence's token first, then prompt chunks in
        arrival order; never more than n_batch tokens (llama_decode asserts beyond)."""
        for request in [r for r in self._queue if r.cancelled]:
            self._resolve(request, Cancelled("ggml: generation cancelled"))
        # with fewer batch slots than sequences, those left out come first next step (they
        # stay at the queue's head while the decoded ones queue again behind them)
        work = [(request, 1) for request in self._queue if not request.prompt][: self.capacity]
        prompts = [request for request in self._queue if request.prompt]
        budget = self.capacity - len(work)
        if work:
            # running streams get a token every ubatch's worth of prompt, not every n_batch's
            budget = min(budget, max(self.context.n_ubatch - len(work), 1))
        prompt_tokens = 0
        for request in prompts:
            # Prompts one after the other, not all at once: prompt tokens cost the same alone or
            # together, so the first prompt's first token comes after its own tokens, not after
            # everyone's (the median time to first token halves for 8 at once); short prompts
            # share a step, whose fixed cost (~2 ms here) would otherwise show.
            if budget <= 0 or prompt_tokens >= PROMPT_STEP_TOKENS:
                break
            take = min(len(request.tokens) - request.offset, budget, max(self.context.n_ubatch, 1))
            work.append((request, take))
            budget -= take
            prompt_tokens += take
        return work

    def _decode(self, work: list[tuple[Request, int]]) -> None:
        batch, rows = self._batch, []
        count = 0
        # In sequence order: with a KV area per sequence llama.cpp splits a batch into ubatches
        # of consecutive sequence ids (split_equal, sequential), so any other order cuts it
        # into more, smaller ubatches (slower, and logits that differ from the solo ones).
        work = sorted(work, key=lambda item: item[0].slot.seq)
        for request, take in work:
            seq = request.slot.seq
            for k in range(request.offset, request.offset + take):
                batch.token[count] = request.tokens[k]
                batch.pos[count] = request.start + k
                batch.n_seq_id[count] = 1
                batch.seq_id[count][0] = seq
                last = k == len(request.tokens) - 1
                batch.logits[count] = last
                if last:
                    rows.append((request, count))
                count += 1
            request.offset += take
        batch.n_tokens = count
        status = int(llama_cpp.llama_decode(self.context.ctx, batch))
        stats = self.stats
        stats.steps += 1
        stats.tokens += count
        seqs = {request.slot.seq for request, _ in work}
        stats.most_sequences = max(stats.most_sequences, len(seqs))
        stats.sequences_seen |= seqs
        if status != 0:
            # the processed ubatches stay in memory: the failed sequences start again clean
            failure = BackendError(f"ggml: llama_decode failed with status {status}")
            with self._cond:
                for request, _ in work:
                    self._clear.append(request.slot.seq)
                    self._resolve(request, failure)
            return
        for request, take in work:
            first = request.offset - take  # offset has moved past this step's tokens
            slot = request.slot
            del slot.cached[request.start + first :]
            slot.cached += request.tokens[first : request.offset]
        ctx = self.context.ctx
        # under the condition: a released or cancelled request's sampler may be freed as soon
        # as the condition is free, so the flag is read and the sampler used in one hold
        with self._cond:
            for request, row in rows:
                if not request.cancelled:
                    request.token = int(llama_cpp.llama_sampler_sample(request.sampler.chain, ctx, row))
                    position = request.start + len(request.tokens)
                    if request.follow is not None and request.follow(request.token, position):
                        step = Request(request.slot, [request.token], position, request.sampler, False)
                        request.next = step
                        self._queue.append(step)
            # only then wake the callers: each sample gives the GIL up and takes it back, and
            # woken callers would hold it meanwhile (3x the sampling time at 8 sequences)
            for request, _ in rows:
                self._resolve(request, Cancelled("ggml: generation cancelled") if request.cancelled else None)

    def _resolve(self, request: Request, error: BackendError | None) -> None:
        """Hand the request back (called with the condition held)."""
        if request in self._queue:
            self._queue.remove(request)
        request.error = error
        if error is None:
            request.slot.in_guest = True
        request.done.set()
