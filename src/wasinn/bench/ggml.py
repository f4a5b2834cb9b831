"""``wasinn bench`` cases for the GGML backend: generation speed and time to first token.

Both sides run the same random-weight llama (wasinn.testing.tiny_gguf, a "bench" shape big
enough that decoding, not Python, dominates) with greedy sampling, ``ignore-eos`` and the
same thread count. The wasinn side is the ``ggml-chat`` guest in this process, timing itself
with WASI CLOCK_MONOTONIC: ``gen_ms`` spans set_input(prompt) + compute (``n-predict``
tokens), ``ttft_ms`` spans set_input(prompt) + compute_single + get_output_single. The native
side is llama-cpp-python's own ``Llama`` (tokenize + ``generate``), timed with perf_counter.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from wasinn.bench._harness import Unavailable, guest, require
from wasinn.bench.types import Plan, Record, alternate
from wasinn.host import Runtime

PROMPT = "Once upon a time, in a small village by the sea, there lived"
GENERATE_UNIT = (
    "ms per generation (prompt + n-predict tokens): wasinn timed in the guest, native with perf_counter"
)
TTFT_UNIT = "ms to the first token (set_input + prompt decode + first sample)"


def bench_model() -> Path:
    require("llama_cpp")
    require("gguf")
    from wasinn.testing.tiny_gguf import TinyLlamaShape, VocabUnavailable, tiny_llama

    shape = TinyLlamaShape(
        context_length=512,
        embedding_length=256,
        block_count=4,
        feed_forward_length=768,
        head_count=8,
        head_count_kv=8,
    )
    try:
        return tiny_llama(shape)
    except VocabUnavailable as err:
        raise Unavailable(str(err)) from None


class GuestGeneration:
    """The ggml-chat guest on a preloaded model, ``rounds`` generations per run.

    One runtime serves every run, so the preloaded graph stays loaded and warm between
    blocks, as the native side's ``Llama`` does.
    """

    def __init__(self, model: Path, tokens: int) -> None:
        self.module = guest("ggml-chat")
        self.meta = f'{{"temp": 0, "ignore-eos": true, "n-predict": {tokens}}}'
        self.directory = Path(tempfile.mkdtemp(prefix="wasinn-bench-"))
        self.runtime = Runtime(preload=[f"default:GGML:AUTO:{model}"])
        self.runs = 0

    def run(self, rounds: int, stream: bool, key: str) -> list[float]:
        args = ["--meta", self.meta, "--rounds", str(rounds + 1), "--time"]
        if stream:
            args += ["--stream", "--limit", "1"]
        self.runs += 1
        out, err = self.directory / f"stdout{self.runs}", self.directory / f"stderr{self.runs}"
        self.runtime.stdio = (None, out, err)
        code = self.runtime.run(self.module, [*args, "default", PROMPT])
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
        if code != 0:
            last = stderr.strip().splitlines()[-1:] or [f"exit {code}"]
            raise Unavailable(f"ggml-chat failed (exit {code}): {last[0]}")
        times = [float(line.split("=", 1)[1]) for line in stdout.splitlines() if line.startswith(key + "=")]
        return times[1:]  # the first round of each run warms the guest's own state

    def close(self) -> None:
        self.runtime.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class NativeGeneration:
    """llama-cpp-python's ``Llama`` with the backend's defaults (n_batch 2048, n_ubatch 512)."""

    def __init__(self, model: Path, tokens: int) -> None:
        from llama_cpp import Llama

        from wasinn.backends._llama import default_threads

        self.tokens = tokens
        threads = default_threads()
        self.llm: Any = Llama(
            model_path=str(model),
            n_ctx=0,
            n_batch=2048,
            n_ubatch=512,
            n_threads=threads,
            n_threads_batch=threads,  # the backend's default threads-batch is its threads
            flash_attn=True,  # the backend's default flash-attn is auto (on where supported)
            verbose=False,
        )
        self.threads = threads

    def _generate(self, count: int) -> None:
        self.llm.reset()  # no reuse of the previous prompt's KV cache: wasinn clears it too
        prompt = self.llm.tokenize(PROMPT.encode(), add_bos=True, special=True)
        generation = self.llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True)
        for produced, token in enumerate(generation, start=1):
            self.llm._model.token_to_piece(token, special=True)
            if produced == count:
                break

    def times(self, rounds: int, count: int) -> list[float]:
        samples = []
        for _ in range(rounds + 1):
            start = time.perf_counter_ns()
            self._generate(count)
            samples.append((time.perf_counter_ns() - start) / 1e6)
        return samples[1:]

    def close(self) -> None:
        self.llm.close()


def ggml_generation(plan: Plan) -> list[Record]:
    require("wasinn.backends.ggml")
    model = bench_model()
    tokens = 32 if plan.quick else 128
    rounds = 2 if plan.quick else 4
    blocks = plan.backend_blocks
    native = NativeGeneration(model, tokens)
    wasinn = GuestGeneration(model, tokens)
    try:
        native_ms, wasinn_ms = alternate(
            blocks, lambda: native.times(rounds, tokens), lambda: wasinn.run(rounds, False, "gen_ms")
        )
        speed = Record.measured("ggml/tokens-per-second", native_ms, wasinn_ms, GENERATE_UNIT)
        native_first, wasinn_first = alternate(
            blocks, lambda: native.times(rounds * 2, 1), lambda: wasinn.run(rounds * 2, True, "ttft_ms")
        )
        first = Record.measured("ggml/time-to-first-token", native_first, wasinn_first, TTFT_UNIT)
    finally:
        native.close()
        wasinn.close()
    native_rate = tokens / (speed.native_ms or 1) * 1e3
    wasinn_rate = tokens / (speed.wasinn_ms or 1) * 1e3
    notes = {
        "model": "random llama, embd 256, 4 blocks, ff 768, 32000-token SPM vocab",
        "threads": native.threads,
    }
    speed.notes = {
        **notes,
        "tokens": tokens,
        "native_tokens_per_s": round(native_rate, 1),
        "wasinn_tokens_per_s": round(wasinn_rate, 1),
    }
    first.notes = notes
    speed.judge("wasinn tokens/s >= 0.97 x native", wasinn_rate >= 0.97 * native_rate)
    first.judge("wasinn - native <= 2 ms", (first.delta_ms or 0) <= 2.0)
    return [speed, first]
