"""OpenVINO GenAI (encoding 13) through wasi_ephemeral_nn, against ``openvino_genai.LLMPipeline``
called natively on the same directory: the tiny random Llama of wasinn.testing.tiny_genai,
exported offline at the start of the session (genai-tts spec §3, conformance §7 cases
19–29). Every case is a guest's call sequence through the WAT probe."""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import make_probe, nn_run, require_module, requires_no_gpu
from test_no_phone_home import assert_quiet, audited
from tts_probe import GENAI, I32, TextGuest
from wasinn import Runtime
from wasinn.core import ConfigError

GPU, TPU, AUTO = 1, 2, 3


@pytest.fixture(scope="session")
def genai_dirs() -> dict[str, Path]:
    """The model directory, and a copy whose tokenizer has a chat template: exported once per
    machine into the user cache (~25 s), then reused."""
    for module in ("openvino_genai", "transformers", "optimum.intel", "openvino_tokenizers"):
        require_module(module)
    from wasinn.testing.tiny_genai import tiny_genai

    plain, templated = tiny_genai()
    return {"g": plain, "templated": templated}


@pytest.fixture
def guest() -> Iterator[TextGuest]:
    # The model paths in builders are guest paths (tests/test_guest_paths.py): the whole host,
    # read-only, lets these tests name the files where the fixtures wrote them.
    probe = make_probe(Runtime(cache=False, dirs=["/:/:readonly"]), pages=4)
    yield TextGuest(probe)
    probe.instance.close()


def builders(directory: Path | str) -> list[bytes]:
    return [b"LLMPipeline", str(directory).encode(), b""]


@functools.cache
def native_pipeline(directory: Path) -> Any:
    import openvino_genai as og

    return og.LLMPipeline(str(directory), "CPU")


def native(directory: Path, prompt: str, **settings: object) -> bytes:
    """``LLMPipeline.generate`` called natively, with the config WasmEdge's compute uses."""
    import openvino_genai as og

    config = og.GenerationConfig()
    config.max_new_tokens = 100
    for key, value in settings.items():
        setattr(config, key, value)
    return str(native_pipeline(directory).generate(prompt, config)).encode()


def context(guest: TextGuest, directory: Path) -> int:
    errno, graph = guest.load(GENAI, builders(directory))
    assert errno == 0
    return guest.context(graph)


def test_greedy_text_equals_llm_pipeline(guest: TextGuest, genai_dirs: dict[str, Path]) -> None:
    """Cases 19, 24, 25: the text of LLMPipeline.generate with 100 new tokens, no prompt echo."""
    from tokenizers import Tokenizer

    expected = native(genai_dirs["g"], "hello")
    assert expected  # the random model says something before its end token
    errno, graph = guest.load(GENAI, builders(genai_dirs["g"]))
    assert errno == 0
    first, second = guest.context(graph), guest.context(graph)
    assert guest.run(first, b"hello") == (0, expected)
    assert guest.run(second, b"hello") == (0, expected)
    tokens = Tokenizer.from_file(str(genai_dirs["g"] / "tokenizer.json")).encode(expected.decode()).ids
    assert len(tokens) <= 100
    assert not expected.startswith(b"hello")
    other = native(genai_dirs["g"], "The sun rises")
    assert guest.run(first, b"The sun rises") == (0, other) and other != expected


def test_chat_template_is_applied(guest: TextGuest, genai_dirs: dict[str, Path]) -> None:
    """Case 26: a tokenizer with a chat template wraps the prompt, as GenAI's default does."""
    templated = native(genai_dirs["templated"], "hello")
    assert templated != native(genai_dirs["templated"], "hello", apply_chat_template=False)
    assert guest.run(context(guest, genai_dirs["templated"]), b"hello") == (0, templated)


@pytest.mark.parametrize(
    ("blobs", "target"),
    [
        ([b"LLMPipeline", b"dir"], 0),  # case 20
        ([b"LLMPipeline", b"dir", b"", b""], 0),
        ([b"llmpipeline", b"DIR", b""], 0),
        ([b"VLMPipeline", b"DIR", b""], 0),
        ([b"LLMPipeline", b"DIR", b""], TPU),
        ([b"LLMPipeline", b"DIR", b""], AUTO),
    ],
)
def test_load_argument_errors(
    guest: TextGuest, genai_dirs: dict[str, Path], blobs: list[bytes], target: int
) -> None:
    blobs = [blob.replace(b"DIR", str(genai_dirs["g"]).encode()) for blob in blobs]
    assert guest.load(GENAI, blobs, target)[0] == 1


def test_pipeline_failures_are_errno_5(guest: TextGuest, genai_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Case 21: a missing directory, one without openvino_model.xml."""
    assert guest.load(GENAI, builders(tmp_path / "missing"))[0] == 5
    assert guest.load(GENAI, builders(tmp_path))[0] == 5
    assert guest.load(GENAI, builders(genai_dirs["g"] / "openvino_model.xml"))[0] == 5


def test_gpu_without_a_gpu_is_errno_5(guest: TextGuest, genai_dirs: dict[str, Path]) -> None:
    import openvino as ov

    requires_no_gpu(any(d.startswith("GPU") for d in ov.Core().available_devices), "an OpenVINO GPU")
    assert guest.load(GENAI, builders(genai_dirs["g"]), GPU)[0] == 5


def test_call_sequence(guest: TextGuest, genai_dirs: dict[str, Path]) -> None:
    """Cases 22, 23, 27, 28."""
    expected = native(genai_dirs["g"], "hello")
    errno, graph = guest.load(GENAI, builders(genai_dirs["g"]))
    assert errno == 0
    ctx = guest.context(graph)
    assert guest.get_output(ctx) == (0, b"")  # before any compute: 0 bytes
    assert guest.get_output(ctx, index=1)[0] == 1
    assert guest.compute(ctx) == 5  # the empty prompt: GenAI throws (WasmEdge would answer 0)
    assert guest.set_input(ctx, b"hello", index=1) == 1
    assert guest.set_input(ctx, b"hell", kind=I32, dims=[1]) == 0  # type and dims unchecked
    assert guest.set_input(ctx, b"hello", dims=[5, 1]) == 0  # replaces the prompt
    assert guest.compute(ctx) == 0
    assert guest.get_output(ctx, size=0)[0] == 7
    assert guest.needed() == len(expected)
    assert guest.get_output(ctx, size=len(expected)) == (0, expected)
    assert guest.set_input(ctx, b"") == 0
    assert guest.compute(ctx) == 5  # case 27: the failure is an errno, the output is unchanged
    assert guest.get_output(ctx) == (0, expected)
    assert guest.probe.call("compute_single", ctx) == 1
    assert guest.probe.call("unload", graph) == 0
    assert guest.compute(ctx) == 1  # case 28: the graph is gone


def test_preloaded_pipeline(genai_dirs: dict[str, Path], tmp_path: Path) -> None:
    """Case 29: the three builders are files' contents; a config is a 4th builder (errno 1)."""
    files = [tmp_path / name for name in ("kind", "dir", "reserved")]
    for file, blob in zip(files, builders(genai_dirs["g"]), strict=True):
        file.write_bytes(blob)
    runtime = Runtime(cache=False, preload=[f"g:openvinogenai:cpu:{':'.join(map(str, files))}"])
    guest = TextGuest(make_probe(runtime, pages=4))
    errno, graph = guest.load_by_name("g")
    assert errno == 0
    assert guest.run(guest.context(graph), b"hello") == (0, native(genai_dirs["g"], "hello"))
    guest.probe.instance.close()
    fresh = TextGuest(make_probe(runtime, pages=4))
    assert fresh.load_by_name("g", b"{}")[0] == 1
    fresh.probe.instance.close()
    # A directory is not a file to read: wasinn refuses it at start-up (WasmEdge drops it).
    with pytest.raises(ConfigError, match="cannot read"):
        Runtime(cache=False, preload=[f"g:openvinogenai:cpu:{files[0]}:{genai_dirs['g']}:{files[2]}"])


def test_concurrent_contexts_and_cancel(genai_dirs: dict[str, Path]) -> None:
    """Contexts of one graph computing at once queue on the pipeline and each get the native
    text; a cancelled context answers 5 between tokens."""
    from wasinn.backends import get_backend
    from wasinn.core import BackendError, ExecutionTarget, GraphEncoding, NNSession, Tensor

    prompts = ["hello", "The sun rises", "Good morning", "What is"]
    expected = [native(genai_dirs["g"], prompt) for prompt in prompts]
    graph = NNSession(get_backend).load(
        builders(genai_dirs["g"]), GraphEncoding.OPENVINOGENAI, ExecutionTarget.CPU
    )
    results: dict[int, bytes] = {}

    def generate(i: int) -> None:
        ctx = graph.init_execution_context()
        for _ in range(2):
            ctx.set_input(0, Tensor.from_array(np.frombuffer(prompts[i].encode(), np.uint8)))
            ctx.compute()
            results[i] = ctx.get_output(0).tobytes()

    threads = [threading.Thread(target=generate, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(prompts))] == expected

    backend_graph = get_backend(GraphEncoding.OPENVINOGENAI).load(
        builders(genai_dirs["g"]), ExecutionTarget.CPU
    )
    ctx = backend_graph.init_execution_context()
    ctx.set_input(0, Tensor.from_array(np.frombuffer(b"hello", np.uint8)))
    errors: list[BaseException] = []

    def compute() -> None:
        try:
            ctx.compute()
        except BackendError as err:
            errors.append(err)

    with backend_graph.lock:  # hold the pipeline so the cancel lands before generation starts
        worker = threading.Thread(target=compute)
        worker.start()
        time.sleep(0.2)
        ctx.cancel()
    worker.join()
    assert [err.errno for err in errors] == [5] and "cancelled" in str(errors[0])


def test_nn_run_guest_prints_the_text(genai_dirs: dict[str, Path], tmp_path: Path) -> None:
    """The compiled C guest (examples/c/nn-run.c) under ``wasinn run``: the generated text, and
    errno 1 as its exit status for streaming, which GenAI does not offer; no network use or
    child process (issue 16)."""
    (tmp_path / "audit").mkdir()
    env, log = audited(tmp_path / "audit")
    # As WasmEdge's example runs: the model directory beside the guest, named relative to it.
    shutil.copytree(genai_dirs["g"], tmp_path / "model")
    for name, blob in zip(("kind", "dir", "reserved"), builders(Path("model")), strict=True):
        (tmp_path / name).write_bytes(blob)
    (tmp_path / "prompt").write_bytes(b"hello")
    load = ["--encoding", "openvinogenai", "--model", "kind", "--model", "dir", "--model", "reserved"]
    done = nn_run(tmp_path, *load, "--input", "0:u8:5:prompt", "--output", "0:out.txt", env=env)
    assert done.returncode == 0, done.stderr
    # The model by its host path, outside the guest's --dir: errno 1, nothing read.
    (tmp_path / "dir").write_bytes(str(genai_dirs["g"]).encode())
    outside = nn_run(tmp_path, *load, "--input", "0:u8:5:prompt", "--output", "0:out2.txt")
    assert outside.returncode == 1, outside.stderr
    assert "is not inside any --dir mapping" in outside.stderr
    (tmp_path / "dir").write_bytes(b"model")
    assert_quiet(log, "run", tmp_path / "audit" / "home")
    assert (tmp_path / "out.txt").read_bytes() == native(genai_dirs["g"], "hello")
    done = nn_run(tmp_path, *load, "--input", "0:u8:5:prompt", "--stream", "tokens.txt")
    assert done.returncode == 1, done.stderr
