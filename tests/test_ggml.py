"""The GGML backend (ggml-backend spec §16) on a tiny random llama, compared with llama-cpp-python.

The model is written by the test (wasinn.testing.tiny_gguf) on the real llama SPM vocab;
greedy decoding (temp 0) makes every generation deterministic, so wasinn's text and token
counts must equal llama-cpp-python's own ``Llama.generate`` on the same file.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import wasinn
from wasinn.backends import get_backend, model_files
from wasinn.core import Errno, ExecutionTarget, GraphEncoding, NNError, NNSession, Tensor, TensorType

PROMPT = b"Once upon a time, "
# The tiny model's trained context, which ctx-size 0 (the default) gives. llama.cpp rounds
# n_ctx up to a multiple of 256 (llama-context.cpp), so ctx-size 64 would give 256 too: tests
# of the spec's n_ctx arithmetic (§5.1) use CTX, which only an honoured ctx-size gives.
TRAINED_CTX, CTX = 256, 512
GREEDY = {"temp": 0, "threads": 1}


class Session:
    """One NNSession with one GGML graph and context, driven like a guest would."""

    def __init__(self, model: Path, config: dict[str, Any] | None = None) -> None:
        self.nn = NNSession(get_backend)
        builders = [b"preload:" + bytes(model)]
        if config is not None:
            builders.append(json.dumps(config).encode())
        self.graph = self.nn.load(builders, GraphEncoding.GGML, ExecutionTarget.CPU)
        self.ctx = self.graph.init_execution_context()

    def prompt(
        self, text: bytes, kind: TensorType = TensorType.U8, dims: tuple[int, ...] | None = None
    ) -> None:
        data = np.frombuffer(text, dtype=np.uint8)
        self.ctx.set_input(0, Tensor(dims if dims is not None else (len(text),), kind, data))

    def meta(self, settings: dict[str, Any] | bytes) -> None:
        raw = settings if isinstance(settings, bytes) else json.dumps(settings).encode()
        self.ctx.set_input(1, Tensor((len(raw),), TensorType.U8, np.frombuffer(raw, dtype=np.uint8)))

    def compute(self) -> int:
        return errno_of(self.ctx.compute)

    def single(self) -> int:
        return errno_of(self.ctx.compute_single)

    def text(self) -> bytes:
        return bytes(self.ctx.get_output(0))

    def piece(self) -> bytes:
        return bytes(self.ctx.get_output_single(0))

    def metadata(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(bytes(self.ctx.get_output(1)))
        return parsed

    def close(self) -> None:
        self.nn.close()


def errno_of(call: Any) -> int:
    try:
        call()
    except NNError as err:
        return int(err.errno)
    return 0


@pytest.fixture
def session(tiny_model: Path) -> Iterator[Session]:
    chat = Session(tiny_model, GREEDY)
    yield chat
    chat.close()


class Native:
    """llama-cpp-python's own API on the same file: the reference for greedy outputs."""

    def __init__(self, model: Path, n_ctx: int = 0) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(model), n_ctx=n_ctx, n_batch=2048, n_ubatch=512, n_threads=1, verbose=False
        )

    def tokens(self, prompt: bytes) -> list[int]:
        tokens: list[int] = self.llm.tokenize(prompt, add_bos=True, special=True)
        return tokens

    def greedy(self, prompt: bytes, count: int) -> tuple[list[int], bytes]:
        out: list[int] = []
        for token in self.llm.generate(self.tokens(prompt), temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) == count or self.llm._model.token_eos() == token:
                break
        return out, b"".join(self.piece(token) for token in out)

    def piece(self, token: int) -> bytes:
        import ctypes

        import llama_cpp

        buffer = ctypes.create_string_buffer(256)
        size = llama_cpp.llama_token_to_piece(self.llm._model.vocab, token, buffer, 256, 0, True)
        return buffer.raw[:size]

    def close(self) -> None:
        self.llm.close()


@pytest.fixture(scope="module")
def native(tiny_model: Path) -> Iterator[Native]:
    reference = Native(tiny_model)
    yield reference
    reference.close()


# ------------------------------------------------------------------ generation


def test_greedy_text_and_token_counts_equal_llama_cpp_python(session: Session, native: Native) -> None:
    session.meta({"n-predict": 24})
    session.prompt(PROMPT)
    before = session.metadata()
    assert before == {
        "input_tokens": len(native.tokens(PROMPT)),
        "output_tokens": 0,
        "llama_build_number": 8757,
        "llama_commit": "a29e4c0b",
    }
    assert session.compute() == 0
    tokens, text = native.greedy(PROMPT, 24)
    assert session.text() == text
    assert session.metadata()["output_tokens"] == len(tokens)


def test_metadata_output_is_byte_exact(session: Session) -> None:
    session.prompt(PROMPT)
    raw = bytes(session.ctx.get_output(1))
    assert re.fullmatch(
        rb'\{"input_tokens": \d+, "output_tokens": 0, '
        rb'"llama_build_number": 8757, "llama_commit": "a29e4c0b"\}',
        raw,
    )


def test_two_greedy_computes_are_identical_and_n_predict_zero_is_empty(session: Session) -> None:
    session.meta({"n-predict": 8})
    session.prompt(PROMPT)
    assert session.compute() == 0
    first = session.text()
    assert session.compute() == 0
    assert session.text() == first and first
    session.meta({"n-predict": 0})
    assert session.compute() == 0
    assert session.text() == b"" and session.metadata()["output_tokens"] == 0


def test_set_input_twice_keeps_input_tokens(session: Session) -> None:
    session.prompt(PROMPT)
    first = session.metadata()["input_tokens"]
    session.prompt(PROMPT)
    assert session.metadata()["input_tokens"] == first


def test_prompt_type_and_dims_are_ignored_but_f64_is_refused(session: Session) -> None:
    session.prompt(PROMPT, TensorType.F32, (1,))
    assert session.metadata()["input_tokens"] > 0
    for refused in (TensorType.F64, TensorType.I64):
        assert (
            errno_of(lambda refused=refused: session.prompt(PROMPT, refused, (1,))) == Errno.INVALID_ARGUMENT
        )


def test_compute_before_set_input_is_1_and_empty_output(session: Session) -> None:
    assert session.text() == b""
    assert session.compute() == Errno.INVALID_ARGUMENT
    assert session.single() == Errno.INVALID_ARGUMENT


@pytest.mark.parametrize(("config", "n_ctx"), [({}, TRAINED_CTX), ({"ctx-size": CTX}, CTX)])
def test_context_full_after_n_ctx_minus_p_plus_1_tokens(
    tiny_model: Path, config: dict[str, int], n_ctx: int
) -> None:
    chat = Session(tiny_model, {**GREEDY, **config, "ignore-eos": True})
    try:
        chat.prompt(PROMPT)
        prompt_tokens = chat.metadata()["input_tokens"]
        assert chat.compute() == Errno.CONTEXT_FULL
        assert chat.metadata()["output_tokens"] == n_ctx - prompt_tokens + 1
        assert len(chat.text()) > 0
    finally:
        chat.close()


def words(count: int) -> bytes:
    """A prompt of exactly ``count`` tokens: BOS, "word", then one token per " word" (SPM vocab)."""
    return b"word" + b" word" * (count - 2)


def test_prompt_too_long_is_102_for_compute_and_compute_single(tiny_model: Path, native: Native) -> None:
    assert len(native.tokens(words(CTX - 4))) == CTX - 4
    chat = Session(tiny_model, {**GREEDY, "ctx-size": CTX, "n-predict": 1})
    try:
        chat.prompt(words(CTX - 3))
        assert chat.metadata()["input_tokens"] == CTX - 3
        assert chat.compute() == Errno.PROMPT_TOO_LONG
        assert chat.single() == Errno.PROMPT_TOO_LONG
        chat.prompt(words(CTX - 4))  # the longest prompt n_ctx − 4 allows, far over the trained 256
        assert chat.compute() == 0
        chat.prompt(PROMPT)  # a short prompt works again after the failed start
        assert chat.single() == 0
    finally:
        chat.close()


def test_reverse_prompt_stops_at_the_completing_piece(session: Session, native: Native) -> None:
    tokens, _ = native.greedy(PROMPT, 16)
    pieces = [native.piece(token) for token in tokens]
    later = next(
        i for i in range(2, len(pieces)) if pieces[i].strip().isascii() and len(pieces[i].strip()) >= 2
    )
    target = pieces[later].strip()[:2]
    # the text stops at the first piece that completes the target, wherever that is
    stop = next(i for i in range(len(pieces)) if target in b"".join(pieces[: i + 1]))
    session.meta({"reverse-prompt": target.decode(), "n-predict": 16})
    session.prompt(PROMPT)
    assert session.compute() == 0
    assert session.text() == b"".join(pieces[: stop + 1])
    assert session.metadata()["output_tokens"] == stop + 1


# ------------------------------------------------------------------ streaming


def test_stream_until_end_of_sequence_equals_compute(tiny_model: Path) -> None:
    # The grammar allows only "yes" and then the end, so greedy decoding reaches EOS.
    chat = Session(tiny_model, {**GREEDY, "grammar": 'root ::= "yes"'})
    try:
        chat.prompt(PROMPT)
        pieces = []
        while (rc := chat.single()) == 0:
            pieces.append(chat.piece())
        assert rc == Errno.END_OF_SEQUENCE
        streamed = chat.text()
        assert b"".join(pieces) == b"yes"
        assert chat.metadata()["output_tokens"] == len(pieces) + 1
        assert chat.compute() == 0
        assert chat.text() == streamed and streamed.startswith(b"yes") and streamed.endswith(b"</s>")
        assert chat.single() == 0 and chat.piece() == pieces[0]  # after 100 it starts again
    finally:
        chat.close()


def test_fini_single_clears_and_regenerates(session: Session) -> None:
    assert session.piece() == b""
    session.prompt(PROMPT)
    assert session.single() == 0
    first = session.piece()
    assert session.single() == 0
    assert errno_of(session.ctx.fini_single) == 0
    assert session.text() == b"" and session.metadata()["output_tokens"] == 0
    assert session.single() == 0 and session.piece() == first


# ------------------------------------------------------------------ load and metadata errors


def test_load_errors(tiny_model: Path) -> None:
    nn = NNSession(get_backend)

    def load(*builders: bytes) -> int:
        return errno_of(lambda: nn.load(list(builders), GraphEncoding.GGML, ExecutionTarget.CPU))

    preload = b"preload:" + bytes(tiny_model)
    assert load(b"preload:/missing.gguf") == Errno.MODEL_NOT_FOUND
    assert load(b"preload:") == Errno.MODEL_NOT_FOUND
    assert load(preload, b"") == Errno.INVALID_ENCODING
    assert load(preload, b"{bad") == Errno.INVALID_ENCODING
    assert load(preload, b'{"ctx-size": "1024"}') == Errno.INVALID_ARGUMENT
    assert load(b"garbage") == Errno.INVALID_ARGUMENT
    assert load(preload, b"[]") == 0
    assert load(preload, b'{"llama3": true, "temp": 0}') == 0
    assert load(tiny_model.read_bytes()) == 0  # the model itself as builder[0]
    nn.close()


def run_isolated(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter: a regression that crashes llama.cpp (an abort or a
    segfault) then fails one test instead of killing the whole test run."""
    src = str(Path(wasinn.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-c", ISOLATED_PRELUDE + textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


ISOLATED_PRELUDE = """
import json, sys
import numpy as np
from wasinn.backends import get_backend
from wasinn.core import ExecutionTarget, GraphEncoding, NNError, NNSession, Tensor, TensorType

MODEL, PROMPT = sys.argv[1].encode(), b"Once upon a time, "


def u8(data):
    return Tensor((len(data),), TensorType.U8, np.frombuffer(data, dtype=np.uint8))


def load(nn, config):
    builders = [b"preload:" + MODEL, json.dumps(config).encode()]
    return nn.load(builders, GraphEncoding.GGML, ExecutionTarget.CPU)
"""


def test_values_llama_cpp_would_crash_on_are_refused(tiny_model: Path) -> None:
    """Unknown enum values abort llama.cpp (GGML_ABORT/GGML_ASSERT), a huge batch-size crashed
    llama_batch_init, a non-causal batch over ubatch-size asserts: errno 1 or 102 instead."""
    cases = {
        json.dumps({"embedding": True, "pooling-type": 99}): Errno.INVALID_ARGUMENT,
        json.dumps({"cache-type-k": 99}): Errno.INVALID_ARGUMENT,
        json.dumps({"cache-type-v": 99}): Errno.INVALID_ARGUMENT,
        json.dumps({"ctx-size": 1 << 32}): Errno.INVALID_ARGUMENT,  # ctypes would wrap it to 0
        json.dumps({"batch-size": 4_000_000_000}): 0,  # the batch holds min(batch-size, n_ctx)
        json.dumps({"embedding": True, "batch-size": 4_000_000_000}): 0,
        json.dumps({"attention-type": 1, "ubatch-size": 4}): Errno.PROMPT_TOO_LONG,
        json.dumps({"embedding": True, "attention-type": 1, "ubatch-size": 4}): Errno.PROMPT_TOO_LONG,
    }
    done = run_isolated(
        """
        for config in json.loads(sys.argv[2]):
            nn = NNSession(get_backend)
            try:
                context = load(nn, {**json.loads(config), "n-predict": 2}).init_execution_context()
                context.set_input(0, u8(PROMPT))
                context.compute()
                print(0, flush=True)
            except NNError as err:
                print(int(err.errno), flush=True)
            nn.close()
        """,
        str(tiny_model),
        json.dumps(list(cases)),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [int(line) for line in done.stdout.split()] == list(cases.values())


def test_a_model_reload_by_one_context_keeps_the_others_grammar_working(tiny_model: Path) -> None:
    """An ``n-gpu-layers`` change reloads the model (spec §3.4); the other contexts' grammar
    samplers pointed into the old vocabulary (a use-after-free that crashed the host)."""
    done = run_isolated(
        """
        nn = NNSession(get_backend)
        graph = load(nn, {"grammar": 'root ::= "yes"', "temp": 0, "n-predict": 4})
        first, second = graph.init_execution_context(), graph.init_execution_context()
        first.set_input(0, u8(PROMPT))
        second.set_input(1, u8(b'{"n-gpu-layers": 0}'))
        # another model between two reloads, so the freed vocabulary is not reused in place
        # (the dangling sampler then crashed every time, not only sometimes)
        nn.load([b"preload:" + MODEL], GraphEncoding.GGML, ExecutionTarget.CPU)
        second.set_input(1, u8(b'{"n-gpu-layers": -1}'))
        for context in (first, second):
            context.set_input(0, u8(PROMPT))
            context.compute()
            print(bytes(context.get_output(0)).decode(), flush=True)
        nn.close()
        """,
        str(tiny_model),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["yes</s>", "yes</s>"]


def test_metadata_enum_domains_are_llama_cpps() -> None:
    import llama_cpp

    from wasinn.backends.ggml_metadata import INT_DOMAINS, KV_CACHE_TYPES

    def constants(prefix: str) -> set[int]:
        return {getattr(llama_cpp, name) for name in dir(llama_cpp) if name.startswith(prefix)}

    assert set(INT_DOMAINS["pooling-type"]) == constants("LLAMA_POOLING_TYPE_")
    assert set(INT_DOMAINS["attention-type"]) == constants("LLAMA_ATTENTION_TYPE_")
    assert set(INT_DOMAINS["rope-scaling-type"]) == constants("LLAMA_ROPE_SCALING_TYPE_")
    kv_names = ("F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL")
    bf16 = 30  # ggml.h's GGML_TYPE_BF16, which llama_cpp does not export
    assert set(KV_CACHE_TYPES) == {getattr(llama_cpp, f"GGML_TYPE_{name}") for name in kv_names} | {bf16}


def test_bad_grammar_and_schema_are_errno_1(tiny_model: Path, session: Session) -> None:
    nn = NNSession(get_backend)
    builders = [b"preload:" + bytes(tiny_model), b'{"grammar": "root ::= ("}']
    graph = nn.load(builders, GraphEncoding.GGML, ExecutionTarget.CPU)
    assert errno_of(graph.init_execution_context) == Errno.INVALID_ARGUMENT
    nn.close()
    for bad in ({"grammar": "root ::= undefined-rule"}, {"json-schema": "{not json"}, {"json-schema": {}}):
        assert errno_of(lambda bad=bad: session.meta(bad)) == Errno.INVALID_ARGUMENT
    # The context survives: with no n-predict and EOG ignored, compute fills the trained
    # context and gives 101 after exactly n_ctx − P + 1 tokens (spec §5.1, §16 case 20).
    session.meta({"grammar": "", "ignore-eos": True})
    session.prompt(PROMPT)
    prompt_tokens = session.metadata()["input_tokens"]
    assert session.compute() == Errno.CONTEXT_FULL
    assert session.metadata()["output_tokens"] == TRAINED_CTX - prompt_tokens + 1


def test_grammar_and_json_schema_constrain_the_text(session: Session) -> None:
    session.meta({"grammar": 'root ::= "yes"', "n-predict": 4})
    session.prompt(PROMPT)
    assert session.compute() == 0
    assert session.text().startswith(b"yes")
    schema = json.dumps({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})
    session.meta({"grammar": "", "json-schema": schema, "n-predict": 40})
    assert session.compute() == 0
    text = session.text().removesuffix(b"</s>")
    assert json.loads(text)["ok"] in (True, False)


def test_invalid_graph_after_failed_reload_then_repaired(session: Session) -> None:
    bad = {"embedding": True, "batch-size": 0, "ubatch-size": 0}
    assert errno_of(lambda: session.meta(bad)) == Errno.INVALID_ARGUMENT
    assert errno_of(lambda: session.prompt(PROMPT)) == Errno.INVALID_ARGUMENT
    assert session.compute() == Errno.INVALID_ARGUMENT
    assert errno_of(lambda: session.ctx.get_output_single(0)) == Errno.INVALID_ARGUMENT
    assert session.text() == b""
    assert errno_of(session.ctx.fini_single) == 0
    session.meta({"embedding": False, "batch-size": 2048, "ubatch-size": 512, "n-predict": 3})
    session.prompt(PROMPT)
    assert session.compute() == 0 and session.metadata()["output_tokens"] == 3


def test_unload_keeps_contexts_readable(session: Session) -> None:
    session.meta({"n-predict": 3})
    session.prompt(PROMPT)
    assert session.compute() == 0
    text = session.text()
    session.graph.detach()  # the legacy unload
    assert errno_of(session.graph.init_execution_context) == Errno.INVALID_ARGUMENT
    assert session.text() == text
    assert errno_of(session.ctx.fini_single) == 0
    assert session.compute() == Errno.INVALID_ARGUMENT
    assert errno_of(lambda: session.prompt(PROMPT)) == Errno.INVALID_ARGUMENT
    session.ctx.close()
    assert session.compute() == Errno.INVALID_ARGUMENT


def test_image_prompt_without_mmproj_is_1(session: Session) -> None:
    assert (
        errno_of(lambda: session.prompt(b'<img src="data:image/jpeg;base64,AAAA">hi'))
        == Errno.INVALID_ARGUMENT
    )


def test_image_key_without_mmproj_makes_this_contexts_prompts_1(session: Session) -> None:
    """Spec case 41: ``image`` is per context (§3.2); without ``mmproj`` its prompts are 1."""
    other = session.graph.init_execution_context()
    session.meta({"image": "/nonexistent/picture.jpg"})  # accepted: the image is read per prompt
    assert errno_of(lambda: session.prompt(PROMPT)) == Errno.INVALID_ARGUMENT
    other.set_input(0, Tensor((len(PROMPT),), TensorType.U8, np.frombuffer(PROMPT, dtype=np.uint8)))
    session.meta({"image": ""})
    session.prompt(PROMPT)
    assert session.metadata()["input_tokens"] > 0


# ------------------------------------------------------------------ embeddings


def test_embedding_json_format_and_values(tiny_model: Path) -> None:
    # flash attention off, as llama-cpp-python's Llama defaults, so the values compare closely
    chat = Session(tiny_model, {"embedding": True, "threads": 1, "flash-attn": "off"})
    try:
        chat.prompt(PROMPT)
        assert chat.compute() == 0
        text = chat.text().decode()
        assert re.fullmatch(r'\{"n_embedding": 64, "embedding": \[[^ ]*\]\}', text)
        values = json.loads(text)["embedding"]
        assert len(values) == 64
        assert math.isclose(math.sqrt(sum(v * v for v in values)), 1.0, rel_tol=1e-5)
        assert chat.metadata()["output_tokens"] == 0
        from llama_cpp import Llama

        native = Llama(
            model_path=str(tiny_model),
            embedding=True,
            n_ctx=0,
            n_batch=2048,
            n_ubatch=512,
            n_threads=1,
            flash_attn=False,
            verbose=False,
        )
        raw = np.asarray(native.embed(PROMPT.decode(), normalize=False), dtype=np.float32)
        native.close()
        last = raw[-1] if raw.ndim == 2 else raw  # no pooling: the last token's, as llama.cpp's
        # Spec case 40: llama.cpp's common_embd_normalize (a double norm, float results), each
        # value printed by C's %.10g; the same llama.cpp call gives the same float32 values.
        scale = 1.0 / math.sqrt(sum(float(v) * float(v) for v in last))
        expected = ",".join("%.10g" % np.float32(float(v) * scale) for v in last)  # noqa: UP031
        assert text == f'{{"n_embedding": 64, "embedding": [{expected}]}}'
        chat.meta({"batch-size": 8})
        chat.prompt(b"word " * 12)
        assert chat.compute() == Errno.PROMPT_TOO_LONG
    finally:
        chat.close()


def test_instances_sharing_a_preloaded_graph_compute_concurrently(tiny_model: Path, native: Native) -> None:
    """A preloaded graph has one llama context for every instance; calls on it are serialised."""
    import threading

    from wasinn.core import ModelRegistry
    from wasinn.host.options import parse_preload

    registry = ModelRegistry([parse_preload(f"default:GGML:AUTO:{tiny_model}")], get_backend, model_files)
    _, expected = native.greedy(PROMPT, 12)
    results: list[bytes] = []

    def guest() -> None:
        nn = NNSession(get_backend, registry)
        context = nn.load_by_name(
            "default", b'{"temp": 0, "n-predict": 12, "threads": 1}'
        ).init_execution_context()
        for _ in range(3):
            context.set_input(0, Tensor((len(PROMPT),), TensorType.U8, np.frombuffer(PROMPT, dtype=np.uint8)))
            context.compute()
            results.append(bytes(context.get_output(0)))
        nn.close()

    threads = [threading.Thread(target=guest) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry.close()
    assert results == [expected] * 9
