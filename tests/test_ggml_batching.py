"""Continuous batching in the GGML backend (llm-serving spec §2, conformance cases 33-37).

With ``n-parallel`` > 1 a graph's execution contexts, from any instance sharing the
preloaded graph, are sequences of one llama context whose tokens one engine thread decodes
together. The model is the tiny random llama quantised to Q8_0 by llama.cpp itself: on the
CPU with a KV area per sequence, its batched logits are bit-identical to solo ones (spec
§2.8), so every comparison here is byte for byte.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import guest_wasm, require_module
from wasinn.backends import get_backend
from wasinn.core import (
    Errno,
    ExecutionTarget,
    GraphEncoding,
    GuestCancelled,
    Interruption,
    ModelRegistry,
    NNError,
    NNSession,
    Preload,
    Tensor,
    TensorType,
)

require_module("llama_cpp")
require_module("gguf")

from wasinn.testing.tiny_gguf import TinyLlamaShape, VocabUnavailable  # noqa: E402

TINY = TinyLlamaShape()
CTX = 256  # per sequence: the tiny model's trained context
GREEDY = {"temp": 0, "threads": 1}
PROMPTS = [f"Request {i}: {'once upon a time, ' * (i % 4 + 1)}there was".encode() for i in range(8)]


def quantized(shape: TinyLlamaShape = TINY) -> Path:
    from wasinn.testing.tiny_quant import tiny_llama_quantized

    try:
        return tiny_llama_quantized(shape)
    except VocabUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def q8_model() -> Path:
    return quantized()


def u8(data: bytes) -> Tensor:
    return Tensor((len(data),), TensorType.U8, np.frombuffer(data, dtype=np.uint8))


def errno_of(call: Any) -> int:
    try:
        call()
    except NNError as err:
        return int(err.errno)
    return 0


class Guest:
    """One guest instance: its own NNSession on the registry's shared graph, one context."""

    def __init__(
        self, registry: ModelRegistry, config: dict[str, Any], interruption: Interruption | None = None
    ):
        self.nn = NNSession(get_backend, registry, interruption=interruption)
        graph = self.nn.load_by_name("tiny", json.dumps({**GREEDY, **config}).encode())
        self.backend_graph = graph.backend_graph
        self.ctx = graph.init_execution_context()
        self.pieces: list[bytes] = []
        self.errno = -1

    def prompt(self, text: bytes, **meta: Any) -> Guest:
        if meta:
            raw = json.dumps(meta).encode()
            self.ctx.set_input(1, u8(raw))
        self.ctx.set_input(0, u8(text))
        return self

    def compute(self) -> tuple[bytes, int, int]:
        self.errno = errno_of(self.ctx.compute)
        return bytes(self.ctx.get_output(0)), self.output_tokens(), self.errno

    def stream(self, most: int = 10_000) -> tuple[bytes, int, int]:
        self.pieces = []
        for _ in range(most):
            self.errno = errno_of(self.ctx.compute_single)
            self.pieces.append(bytes(self.ctx.get_output_single(0)))
            if self.errno:
                break
        return b"".join(self.pieces), self.output_tokens(), self.errno

    def output_tokens(self) -> int:
        return int(json.loads(bytes(self.ctx.get_output(1)))["output_tokens"])

    def close(self) -> None:
        self.nn.close()


def preloaded(model: Path) -> ModelRegistry:
    """``--nn-preload tiny:GGML:CPU:MODEL``: one graph per config, shared by every instance."""
    return ModelRegistry(
        [Preload("tiny", GraphEncoding.GGML, ExecutionTarget.CPU, (str(model),))], get_backend
    )


@pytest.fixture
def registry(q8_model: Path) -> Iterator[ModelRegistry]:
    models = ModelRegistry(
        [Preload("tiny", GraphEncoding.GGML, ExecutionTarget.CPU, (str(q8_model),))], get_backend
    )
    yield models
    models.close()


def together(*jobs: Any) -> list[Any]:
    """Run the jobs in threads started at once; their results in order (a failure re-raised)."""
    results: list[Any] = [None] * len(jobs)
    failures: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = jobs[index]()
        except BaseException as err:  # noqa: BLE001 (re-raised below in the test's thread)
            failures.append(err)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if failures:
        raise failures[0]
    return results


def job(registry: ModelRegistry, config: dict[str, Any], prompt: bytes, stream: bool, **meta: Any) -> Any:
    def run() -> tuple[bytes, int, int]:
        guest = Guest(registry, config).prompt(prompt, **meta)
        try:
            # compute_single ignores n-predict: the stream stops after as many tokens
            return guest.stream(meta.get("n-predict", 10_000)) if stream else guest.compute()
        finally:
            guest.close()

    return run


def engine_of(registry: ModelRegistry, config: dict[str, Any]) -> Any:
    return registry.get("tiny", json.dumps({**GREEDY, **config}).encode()).graph.engine  # type: ignore[attr-defined]


def test_eight_concurrent_greedy_requests_equal_the_same_eight_one_at_a_time(registry: ModelRegistry) -> None:
    """Conformance 34: half through compute, half through compute_single, with small ubatches
    so that prompts go in chunks beside running streams."""
    config = {"n-parallel": 8, "ubatch-size": 8}
    jobs = [
        job(registry, config, prompt, i % 2 == 1, **{"n-predict": 24 + 4 * i})
        for i, prompt in enumerate(PROMPTS)
    ]
    solo = [run() for run in jobs]
    # the single-context graph (n-parallel 1, WasmEdge's own behaviour) gives the same
    assert [
        job(registry, {}, p, i % 2 == 1, **{"n-predict": 24 + 4 * i})() for i, p in enumerate(PROMPTS)
    ] == solo
    engine = engine_of(registry, config)
    steps = engine.stats.steps
    batched = together(*jobs)
    assert batched == solo
    assert all(errno == 0 and tokens == 24 + 4 * i for i, (_, tokens, errno) in enumerate(batched))
    # they really were decoded together: fewer steps than one at a time, several per decode
    assert engine.stats.most_sequences >= 4, engine.stats
    assert engine.stats.steps - steps < steps, (engine.stats.steps - steps, steps)


def test_mixed_lengths_and_a_request_that_leaves_do_not_disturb_the_others(registry: ModelRegistry) -> None:
    config = {"n-parallel": 4}
    lengths = [3, 40, 90]
    jobs = [job(registry, config, PROMPTS[i], i == 1, **{"n-predict": n}) for i, n in enumerate(lengths)]
    solo = [run() for run in jobs]
    engine = engine_of(registry, config)
    interruption = Interruption()
    leaving = Guest(registry, config, interruption).prompt(PROMPTS[5])  # no n-predict: runs to 101
    steps = engine.stats.steps

    def leave() -> int:
        while engine.stats.steps < steps + 20:
            time.sleep(0.001)
        interruption.interrupt("client left")
        return 0

    def leaver() -> str:
        with pytest.raises(GuestCancelled) as raised:
            leaving.compute()
        return str(raised.value)

    *others, reason, _ = together(*jobs, leaver, leave)
    assert others == solo
    assert "client left" in reason
    leaving.close()
    # every slot came back: four guests at once still run without waiting
    assert together(*[job(registry, config, PROMPTS[i], False, **{"n-predict": 5}) for i in range(4)]) == [
        job(registry, config, PROMPTS[i], False, **{"n-predict": 5})() for i in range(4)
    ]


def test_sequences_that_join_mid_run_equal_their_solo_runs(registry: ModelRegistry) -> None:
    """Two contexts start while three others are 20 steps into their generation: their
    prompts go into batches beside the running tokens, and every text is the solo one."""
    config = {"n-parallel": 5}
    running = [job(registry, config, PROMPTS[i], False, **{"n-predict": 60}) for i in range(3)]
    joining = [job(registry, config, PROMPTS[3 + i], i == 0, **{"n-predict": 40}) for i in range(2)]
    solo = [run() for run in (*running, *joining)]
    engine = engine_of(registry, config)
    steps = engine.stats.steps

    def later(run: Any) -> Any:
        def wait_then_run() -> Any:
            while engine.stats.steps < steps + 20:
                time.sleep(0.001)
            return run()

        return wait_then_run

    assert together(*running, *map(later, joining)) == solo


def test_fewer_batch_slots_than_sequences_are_refused_not_aborted(q8_model: Path) -> None:
    """llama.cpp asserts (aborting the host) on a context whose batch-size is below its
    sequence count; wasinn answers errno 1 at load. One token a sequence is enough."""
    nn = NNSession(get_backend)

    def load(config: dict[str, Any]) -> int:
        builders = [b"preload:" + bytes(q8_model), json.dumps(config).encode()]
        return errno_of(lambda: nn.load(builders, GraphEncoding.GGML, ExecutionTarget.CPU))

    assert load({"n-parallel": 4, "batch-size": 3}) == Errno.INVALID_ARGUMENT
    assert load({"n-parallel": 4, "batch-size": 4, "ubatch-size": 1}) == 0
    nn.close()


def test_a_stream_closed_mid_way_frees_its_slot(registry: ModelRegistry) -> None:
    config = {"n-parallel": 2}
    first, second = Guest(registry, config).prompt(PROMPTS[0]), Guest(registry, config).prompt(PROMPTS[1])
    first.stream(most=5)
    second.stream(most=5)
    first.close()  # the guest instance goes away mid-stream (its client left)
    third = Guest(registry, config).prompt(PROMPTS[2], **{"n-predict": 6})
    assert third.compute()[2] == 0  # took the freed slot at once
    assert second.stream(most=1)[2] == 0  # the other stream goes on
    second.close()
    third.close()


def test_a_context_over_the_slot_count_waits_for_a_free_slot(registry: ModelRegistry) -> None:
    config = {"n-parallel": 2}
    holders = [Guest(registry, config).prompt(PROMPTS[i]) for i in range(2)]
    for holder in holders:
        assert holder.stream(most=1)[2] == 0  # each stream holds a slot until fini_single
    waiting = Guest(registry, config).prompt(PROMPTS[2], **{"n-predict": 6})
    done = threading.Event()
    result: list[tuple[bytes, int, int]] = []

    def run() -> None:
        result.append(waiting.compute())
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    assert not done.wait(0.5)  # both slots are held
    holders[0].ctx.fini_single()
    assert done.wait(30)
    thread.join()
    expected = job(registry, config, PROMPTS[2], False, **{"n-predict": 6})()
    assert result == [expected]
    for guest in (*holders, waiting):
        guest.close()


def sequence_of(guest: Guest) -> Any:
    return guest.ctx.backend_context.sequence  # type: ignore[attr-defined]


def test_a_streams_next_token_is_decoded_while_its_guest_reads_the_last(registry: ModelRegistry) -> None:
    """Spec §2.3: the step of a stream runs ahead of the guest's next compute_single, so the
    engine's steps never wait for guest code; that call then finds its token decoded."""
    config = {"n-parallel": 2}
    engine = engine_of(registry, config)
    guest = Guest(registry, config).prompt(PROMPTS[0])
    assert guest.stream(most=1)[2] == 0
    ahead = sequence_of(guest).ahead
    assert ahead is not None and ahead.done.wait(30) and ahead.error is None
    steps = engine.stats.steps
    assert guest.stream(most=1)[2] == 0  # took the decoded step: no new prompt, one more ahead
    assert sequence_of(guest).ahead.done.wait(30)
    assert engine.stats.steps == steps + 1
    guest.close()
    expected = job(registry, {}, PROMPTS[0], True, **{"n-predict": 12})()
    assert job(registry, config, PROMPTS[0], True, **{"n-predict": 12})() == expected


def test_a_sampler_changed_mid_stream_samples_again_what_ran_ahead(registry: ModelRegistry) -> None:
    """A set_input(1) between two compute_single calls that rebuilds the sampler: the step
    run ahead with the old one is cancelled and decoded again, so the stream equals the one
    of a single context (n-parallel 1), which decodes at the call."""

    def stream(config: dict[str, Any]) -> tuple[bytes, bytes]:
        guest = Guest(registry, config).prompt(PROMPTS[2])
        before = guest.stream(most=6)[0]
        guest.ctx.set_input(1, u8(json.dumps({"temp": 0.9, "seed": 7, "top-k": 5}).encode()))
        after = guest.stream(most=12)[0]
        guest.close()
        return before, after

    single = stream({})
    assert stream({"n-parallel": 3}) == single
    # the change mattered: greedy goes on differently
    greedy = job(registry, {}, PROMPTS[2], True, **{"n-predict": 18})()[0]
    assert greedy != single[0] + single[1]


def test_a_new_sequence_takes_the_lowest_free_slot(registry: ModelRegistry) -> None:
    """With a KV area per sequence llama.cpp decodes only consecutive sequence ids in one
    ubatch: four running streams on slots 0, 2, 3 and 4 would take two graph passes a step."""
    config = {"n-parallel": 6}
    guests = [Guest(registry, config).prompt(PROMPTS[i]) for i in range(4)]
    for guest in guests:
        assert guest.stream(most=2)[2] == 0
    assert sorted(sequence_of(guest).slot.seq for guest in guests) == [0, 1, 2, 3]
    leaving = next(guest for guest in guests if sequence_of(guest).slot.seq == 1)
    leaving.close()  # its step run ahead may still be decoding
    newcomer = Guest(registry, config).prompt(PROMPTS[4])
    assert newcomer.stream(most=2)[2] == 0
    assert sequence_of(newcomer).slot.seq == 1
    for guest in (*guests, newcomer):
        if guest is not leaving:
            guest.close()


def input_tokens(guest: Guest) -> int:
    return int(json.loads(bytes(guest.ctx.get_output(1)))["input_tokens"])


def test_a_prompt_that_begins_like_the_slots_last_one_decodes_only_the_rest(registry: ModelRegistry) -> None:
    """llama-server's cache_prompt: a released slot keeps its cells, and the next prompt
    decodes only what follows the tokens they hold; the text is that of a fresh context."""
    config = {"n-parallel": 2}
    engine = engine_of(registry, config)
    first = Guest(registry, config).prompt(PROMPTS[3])
    assert first.stream(most=4)[2] == 0
    first_tokens = input_tokens(first)
    first.close()
    follow_up = PROMPTS[3] + b" a dragon who wrote stories"
    guest = Guest(registry, config).prompt(follow_up)
    before = engine.stats.tokens
    assert guest.stream(most=1)[2] == 0
    prompt_tokens = input_tokens(guest)
    decoded = engine.stats.tokens - before  # the prompt's rest, and maybe the step run ahead
    assert decoded <= prompt_tokens - first_tokens + 2 + 1, (decoded, prompt_tokens, first_tokens)
    guest.close()
    expected = job(registry, {}, follow_up, True, **{"n-predict": 16})()
    assert job(registry, config, follow_up, True, **{"n-predict": 16})() == expected


def test_a_conversation_goes_on_in_the_slot_that_holds_it(registry: ModelRegistry) -> None:
    config = {"n-parallel": 3}
    guests = [Guest(registry, config).prompt(PROMPTS[i]) for i in (1, 2)]
    for guest in guests:
        assert guest.stream(most=3)[2] == 0
    seqs = [sequence_of(guest).slot.seq for guest in guests]
    assert seqs == [0, 1]
    for guest in guests:
        guest.close()
    going_on = Guest(registry, config).prompt(PROMPTS[2] + b" and then, one day,")
    assert going_on.stream(most=2)[2] == 0
    assert sequence_of(going_on).slot.seq == 1  # most of its prompt is there
    other = Guest(registry, config).prompt(b"Something else entirely.")
    assert other.stream(most=2)[2] == 0
    assert sequence_of(other).slot.seq == 0  # nothing to reuse: the lowest free id
    going_on.close()
    other.close()


def test_errno_arithmetic_holds_per_sequence_while_others_run(registry: ModelRegistry) -> None:
    """Conformance 37: 101 after exactly ctx-size − P + 1 tokens with three contexts busy;
    n-predict, 102 and a missing prompt as for one context (ggml-backend spec §5)."""
    config = {"n-parallel": 4, "ctx-size": CTX}
    prompt = PROMPTS[3]
    probe = Guest(registry, config).prompt(prompt)
    length = int(json.loads(bytes(probe.ctx.get_output(1)))["input_tokens"])
    busy = [job(registry, config, PROMPTS[i], False, **{"n-predict": 150}) for i in range(3)]
    *_, streamed, computed = together(*busy, probe.stream, job(registry, config, prompt, False))
    assert streamed[1:] == (CTX - length + 1, Errno.CONTEXT_FULL)
    assert computed[1:] == (CTX - length + 1, Errno.CONTEXT_FULL)
    assert streamed[0] == computed[0]
    probe.close()

    limited = Guest(registry, config).prompt(prompt, **{"n-predict": 7})
    assert limited.compute()[1:] == (7, 0)
    limited.prompt(b"x " * (CTX - 4))  # over ctx-size − 4 tokens with BOS
    assert limited.compute()[2] == Errno.PROMPT_TOO_LONG
    assert limited.stream()[2] == Errno.PROMPT_TOO_LONG
    limited.close()
    empty = Guest(registry, config)
    assert errno_of(empty.ctx.compute) == Errno.INVALID_ARGUMENT
    empty.close()


def test_end_of_sequence_per_sequence(tmp_path: Path) -> None:
    """A model that soon samples EOS: compute ends with 0, a stream with 100, EOS in the text."""
    model = quantized(TinyLlamaShape(eos_boost=0.3))
    registry = ModelRegistry(
        [Preload("tiny", GraphEncoding.GGML, ExecutionTarget.CPU, (str(model),))], get_backend
    )
    try:
        config = {"n-parallel": 4}
        jobs = [job(registry, config, PROMPTS[i], i % 2 == 1) for i in range(4)]
        solo = [run() for run in jobs]
        assert together(*jobs) == solo
        assert [errno for *_, errno in solo] == [0, Errno.END_OF_SEQUENCE] * 2
        assert all(text.endswith(b"</s>") for text, *_ in solo)
    finally:
        registry.close()


def test_gpu_layers_on_a_cpu_build_warn_once_and_run_on_the_cpu(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """WasmEdge's CPU build runs guests that ask for n-gpu-layers 100 (its gemma and tts
    examples) on the CPU; so does wasinn, with one warning line."""
    from wasinn.backends._llama import gpu_offload_supported

    if gpu_offload_supported():
        pytest.skip("this llama-cpp-python build offloads to a GPU")
    registry = preloaded(tiny_model)
    try:
        with caplog.at_level(logging.WARNING, logger="wasinn"):
            on_gpu = job(registry, {"n-gpu-layers": 100}, PROMPTS[0], False, **{"n-predict": 8})()
        warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "CPU-only" in warnings[0] and "100" in warnings[0], warnings
        assert on_gpu == job(registry, {"n-gpu-layers": 0}, PROMPTS[0], False, **{"n-predict": 8})()
        assert on_gpu[2] == 0 and on_gpu[1] == 8
    finally:
        registry.close()


def test_serve_openai_streams_concurrent_chats_through_the_batch(q8_model: Path) -> None:
    """``wasinn serve --openai --parallel 4``: four concurrent streams are served together
    and equal the same chats one at a time."""
    require_module("httpx")
    import httpx

    TOKENS = 150
    from serve_helpers import start_server, stop_server

    process, base = start_server(
        "--nn-preload",
        f"tiny:GGML:AUTO:{q8_model}",
        "--openai",
        "tiny",
        "--openai-guest",
        str(guest_wasm("llm-serve")),
        "--parallel",
        "4",
    )

    def chat(index: int) -> tuple[str, int, float, float]:
        body = {
            "messages": [{"role": "user", "content": f"Story {index}: once upon a time,"}],
            "temperature": 0,
            "max_tokens": TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text, tokens, first, last = "", 0, 0.0, 0.0
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line.removeprefix("data: "))
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                for choice in event["choices"]:
                    if content := choice["delta"].get("content"):
                        first = first or time.perf_counter()
                        last = time.perf_counter()
                        text += content
        return text, tokens, first, last

    try:
        solo = [chat(index)[:2] for index in range(4)]
        concurrent = together(*[lambda index=index: chat(index) for index in range(4)])
        assert [result[:2] for result in concurrent] == solo
        assert all(tokens == TOKENS for _, tokens in solo)
        # streams were in flight together (with one chat at a time, none would overlap; a
        # loaded machine may start a guest late, so not all four need to)
        spans = [(first, last) for *_, first, last in concurrent]
        assert any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(spans, 2)), spans
    finally:
        stop_server(process)


def test_serve_ctx_size_sets_each_chats_context(tiny_model: Path) -> None:
    """``--ctx-size 512`` on a 256-token model: a chat without max_tokens runs to its own
    full context, 101 after exactly 512 − P + 1 tokens (finish ``length``)."""
    require_module("starlette")
    from starlette.testclient import TestClient

    from wasinn.serve.config import ServeConfig
    from wasinn.serve.server import build_app

    config = ServeConfig(
        openai=("tiny",),
        openai_guest=guest_wasm("llm-serve"),
        preload=(f"tiny:GGML:AUTO:{tiny_model}",),
        cache=False,
        parallel=2,
        ctx_size=2 * CTX,
    )
    body = {"messages": [{"role": "user", "content": "Once upon a time,"}], "temperature": 0}
    with TestClient(build_app(config)) as client:
        answer = client.post("/v1/chat/completions", json=body).json()
    usage = answer["usage"]
    assert answer["choices"][0]["finish_reason"] == "length"
    assert usage["completion_tokens"] == 2 * CTX - usage["prompt_tokens"] + 1, usage


def test_token_pieces_are_right_when_many_threads_ask_at_once(q8_model: Path) -> None:
    """Batched sequences turn tokens into text on their own threads at once; the pieces
    (cached per token) must be each token's own, not another thread's."""
    from wasinn.backends._llama import LlamaModel, ensure_backend

    ensure_backend(False)
    reference, shared = LlamaModel(str(q8_model), {}), LlamaModel(str(q8_model), {})
    try:
        tokens = range(3, 8003)
        expected = [reference.piece(token) for token in tokens]
        parts = together(*[lambda k=k: [shared.piece(t) for t in tokens[k::8]] for k in range(8)])
        got = [b""] * len(tokens)
        for k, part in enumerate(parts):
            got[k::8] = part
        assert got == expected
    finally:
        reference.close()
        shared.close()
