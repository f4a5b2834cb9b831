"""The GGML backend's vision path (ggml-backend spec §6) on the tiny llama and a tiny projector.

wasinn's greedy text and token counts for an image prompt must equal llama.cpp's vision
library driven directly here: the same mtmd calls through ``llama_cpp.mtmd_cpp``, with the
image decoded by mtmd's own stb_image loader (wasinn decodes it in Python) and a plain greedy
loop over ``llama_decode``. The images are PNG, which both decoders read to the same pixels.
"""

from __future__ import annotations

import base64
import ctypes
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import wasinn
from conftest import guest_wasm, missing, require_module, run_guest
from test_ggml import GREEDY, Session, errno_of, run_isolated
from wasinn.abi._plugin import resolve_guest_path
from wasinn.backends import get_backend, model_files
from wasinn.core import Errno, ExecutionTarget, GraphEncoding, NNSession

QUESTION = b"USER:<image>\nWhat is in the picture?\nASSISTANT:"
N_PREDICT = 12


def require_vision() -> None:
    """llama-cpp-python built with libmtmd (``make setup`` builds it so) and Pillow."""
    require_module("llama_cpp")
    require_module("PIL")
    try:
        import llama_cpp.mtmd_cpp  # noqa: F401  (loads libmtmd)
    except OSError as err:
        missing(
            f"llama-cpp-python was built without its vision library libmtmd ({err}); `make setup` builds it"
        )


@pytest.fixture(scope="session")
def mmproj() -> Path:
    require_vision()
    require_module("gguf")
    from wasinn.testing.tiny_mmproj import tiny_mmproj

    return tiny_mmproj()


def png(seed: int, width: int = 40, height: int = 30) -> bytes:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def inline(question: bytes, image: bytes, kind: bytes = b"png") -> bytes:
    tag = b'<img src="data:image/' + kind + b";base64," + base64.b64encode(image) + b'">'
    return question.replace(b"<image>", tag)


class NativeVision:
    """llama.cpp and libmtmd through llama-cpp-python's ctypes API, without wasinn."""

    def __init__(self, model: Path, mmproj: Path) -> None:
        import llama_cpp
        import llama_cpp.mtmd_cpp as mtmd

        self.llama, self.mtmd = llama_cpp, mtmd
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = llama_cpp.llama_model_load_from_file(bytes(model), model_params)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = 0, 2048, 512
        params.n_threads = params.n_threads_batch = 1
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        vision_params = mtmd.mtmd_context_params_default()
        vision_params.media_marker = b"<image>"
        vision_params.n_threads = 1
        vision_params.print_timings = False
        self.vision = mtmd.mtmd_init_from_file(bytes(mmproj), self.model, vision_params)
        assert self.vision

    def greedy(self, prompt: bytes, image: bytes, count: int) -> tuple[int, list[int], bytes]:
        """Text tokens of the prompt, then up to ``count`` greedy tokens and their pieces."""
        llama, mtmd = self.llama, self.mtmd
        buffer = (ctypes.c_uint8 * len(image)).from_buffer_copy(image)
        bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self.vision, buffer, len(image), False)
        assert bitmap
        chunks = mtmd.mtmd_input_chunks_init()
        text = mtmd.mtmd_input_text(prompt, len(prompt), True, True)
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd.mtmd_tokenize(self.vision, chunks, ctypes.byref(text), bitmaps, 1) == 0
        mtmd.mtmd_bitmap_free(bitmap)
        text_tokens = 0
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                text_tokens += mtmd.mtmd_input_chunk_get_n_tokens(chunk)
        llama.llama_memory_clear(llama.llama_get_memory(self.ctx), True)
        position = llama.llama_pos(0)
        assert (
            mtmd.mtmd_helper_eval_chunks(
                self.vision, self.ctx, chunks, 0, 0, 2048, True, ctypes.byref(position)
            )
            == 0
        )
        mtmd.mtmd_input_chunks_free(chunks)
        sampler = llama.llama_sampler_init_greedy()
        batch = llama.llama_batch_init(1, 0, 1)
        tokens: list[int] = []
        pieces = b""
        pos = position.value
        while len(tokens) < count:
            token = llama.llama_sampler_sample(sampler, self.ctx, -1)
            tokens.append(token)
            pieces += self.piece(token)
            if llama.llama_vocab_is_eog(self.vocab, token):
                break
            batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0] = token, pos, 1, True
            batch.seq_id[0][0] = 0
            batch.n_tokens = 1
            assert llama.llama_decode(self.ctx, batch) == 0
            pos += 1
        llama.llama_batch_free(batch)
        llama.llama_sampler_free(sampler)
        return text_tokens, tokens, pieces

    def piece(self, token: int) -> bytes:
        buffer = ctypes.create_string_buffer(256)
        size = self.llama.llama_token_to_piece(self.vocab, token, buffer, 256, 0, True)
        return buffer.raw[:size]

    def close(self) -> None:
        self.mtmd.mtmd_free(self.vision)
        self.llama.llama_free(self.ctx)
        self.llama.llama_model_free(self.model)


@pytest.fixture(scope="module")
def native(tiny_model: Path, mmproj: Path) -> Iterator[NativeVision]:
    reference = NativeVision(tiny_model, mmproj)
    yield reference
    reference.close()


@pytest.fixture
def vision(tiny_model: Path, mmproj: Path) -> Iterator[Session]:
    chat = Session(tiny_model, {**GREEDY, "mmproj": str(mmproj), "n-predict": N_PREDICT})
    yield chat
    chat.close()


class GuestSession(Session):
    """A session whose paths are a guest's: ``/data`` is mapped to the host's ``data``."""

    def __init__(self, data: Path, config: dict[str, object]) -> None:
        self.nn = NNSession(get_backend, guest_path=partial(resolve_guest_path, [("/data", data)]))
        builders = [b"preload:/data/model.gguf", json.dumps(config).encode()]
        self.graph = self.nn.load(builders, GraphEncoding.GGML, ExecutionTarget.CPU)
        self.ctx = self.graph.init_execution_context()


def expect_native(chat: Session, native: NativeVision, image: bytes) -> None:
    text_tokens, tokens, text = native.greedy(QUESTION, image, N_PREDICT)
    assert chat.metadata()["input_tokens"] == text_tokens
    assert chat.compute() == 0
    assert chat.text() == text
    assert chat.metadata() == {
        "input_tokens": text_tokens,
        "output_tokens": len(tokens),
        "llama_build_number": 8757,
        "llama_commit": "a29e4c0b",
    }


# ------------------------------------------------------------------ results


def test_inline_base64_image_equals_native_mtmd(vision: Session, native: NativeVision) -> None:
    image = png(1)
    vision.prompt(inline(QUESTION, image))
    expect_native(vision, native, image)


def test_image_file_equals_native_mtmd_and_the_image_matters(
    vision: Session, native: NativeVision, tmp_path: Path
) -> None:
    (tmp_path / "one.png").write_bytes(png(1))
    (tmp_path / "two.png").write_bytes(png(2))
    vision.meta({"image": str(tmp_path / "one.png")})
    vision.prompt(QUESTION)
    expect_native(vision, native, png(1))
    first = vision.text()
    vision.meta({"image": str(tmp_path / "two.png")})  # read again on every prompt
    vision.prompt(QUESTION)
    expect_native(vision, native, png(2))
    assert vision.text() != first  # the projector's output reaches the text model


def test_streaming_an_image_prompt_equals_compute(vision: Session, native: NativeVision) -> None:
    image = png(3)
    _, tokens, text = native.greedy(QUESTION, image, N_PREDICT)
    vision.prompt(inline(QUESTION, image))
    pieces = []
    for _ in range(N_PREDICT):
        assert vision.single() == 0
        pieces.append(vision.piece())
    assert b"".join(pieces) == text[: len(b"".join(pieces))]
    assert b"".join(pieces) == b"".join(native.piece(token) for token in tokens[:N_PREDICT])


def test_text_prompt_after_an_image_prompt_is_evaluated_as_text(tiny_model: Path, vision: Session) -> None:
    """WasmEdge HEAD keeps evaluating the last image prompt (spec §6); wasinn the current one."""
    plain = Session(tiny_model, {**GREEDY, "n-predict": N_PREDICT})
    try:
        plain.prompt(b"Once upon a time, ")
        assert plain.compute() == 0
        vision.prompt(inline(QUESTION, png(1)))
        assert vision.compute() == 0
        vision.prompt(b"Once upon a time, ")
        assert vision.compute() == 0
        assert vision.text() == plain.text()
        assert vision.metadata() == plain.metadata()
    finally:
        plain.close()


def test_a_model_reload_rebuilds_the_vision_context(vision: Session, native: NativeVision) -> None:
    """set_input(1) with a new n-gpu-layers reloads the model (spec §3.4); HEAD then keeps a
    vision context bound to the freed model, wasinn loads the projector again."""
    image = png(4)
    vision.prompt(inline(QUESTION, image))
    assert vision.compute() == 0
    before = vision.text()
    graph = vision.graph.backend_graph
    old_vision = graph.vision  # type: ignore[attr-defined]
    vision.meta({"n-gpu-layers": 0})  # changed from unset: the model is reloaded
    assert graph.vision is None  # type: ignore[attr-defined]
    assert vision.compute() == 0  # the prompt set before the reload, tokenized again
    assert vision.text() == before
    assert graph.vision is not None and graph.vision is not old_vision  # type: ignore[attr-defined]
    vision.prompt(inline(QUESTION, image))
    expect_native(vision, native, image)


def test_context_arithmetic_counts_the_image_positions(tiny_model: Path, mmproj: Path) -> None:
    """No n_ctx − 4 check for image prompts (spec §5.1): 101 after n_ctx − P + 1 tokens, P the
    prompt's positions (its text tokens and the 16 image tokens); over n_ctx positions → 1."""
    chat = Session(tiny_model, {**GREEDY, "mmproj": str(mmproj), "ignore-eos": True})
    n_ctx, image_tokens = 256, 16
    seen = []
    try:
        for words in (230, 236, 239):
            chat.prompt(inline(b" a" * words + b"<image> hi", png(1)))
            positions = chat.metadata()["input_tokens"] + image_tokens
            seen.append(positions)
            if positions <= n_ctx:
                assert chat.compute() == Errno.CONTEXT_FULL
                assert chat.metadata()["output_tokens"] == n_ctx - positions + 1
            else:
                assert chat.compute() == Errno.INVALID_ARGUMENT
                assert chat.single() == Errno.INVALID_ARGUMENT
        assert seen == [250, 256, 259]  # below n_ctx − 4, above it, above n_ctx
    finally:
        chat.close()


def test_instances_sharing_a_preloaded_graph_compute_images_concurrently(
    tiny_model: Path,
    mmproj: Path,
    native: NativeVision,
) -> None:
    """One vision context serves every instance of a preloaded graph; calls are serialised."""
    import threading

    from wasinn.core import ModelRegistry, Tensor, TensorType
    from wasinn.host.options import parse_preload

    registry = ModelRegistry([parse_preload(f"default:GGML:AUTO:{tiny_model}")], get_backend, model_files)
    expected = {seed: native.greedy(QUESTION, png(seed), N_PREDICT)[2] for seed in (1, 2, 3)}
    config = json.dumps({**GREEDY, "n-predict": N_PREDICT, "mmproj": str(mmproj)}).encode()
    results: dict[int, list[bytes]] = {}

    def guest(seed: int) -> None:
        nn = NNSession(get_backend, registry)
        context = nn.load_by_name("default", config).init_execution_context()
        prompt = np.frombuffer(inline(QUESTION, png(seed)), dtype=np.uint8)
        for _ in range(3):
            context.set_input(0, Tensor((len(prompt),), TensorType.U8, prompt))
            context.compute()
            results.setdefault(seed, []).append(bytes(context.get_output(0)))
        nn.close()

    threads = [threading.Thread(target=guest, args=(seed,)) for seed in expected]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry.close()
    assert results == {seed: [text] * 3 for seed, text in expected.items()}


# ------------------------------------------------------------------ errors (spec §12: all errno 1)


def test_image_prompts_without_mmproj_are_1(tiny_model: Path, mmproj: Path, tmp_path: Path) -> None:
    """Spec case 41, with real images."""
    (tmp_path / "one.png").write_bytes(png(1))
    chat = Session(tiny_model, GREEDY)
    try:
        assert errno_of(lambda: chat.prompt(inline(QUESTION, png(1)))) == Errno.INVALID_ARGUMENT
        chat.meta({"image": str(tmp_path / "one.png")})
        assert errno_of(lambda: chat.prompt(QUESTION)) == Errno.INVALID_ARGUMENT
    finally:
        chat.close()


def test_bad_images_and_markers_are_1(vision: Session, tmp_path: Path) -> None:
    def refused(prompt: bytes) -> bool:
        return errno_of(lambda: vision.prompt(prompt)) == Errno.INVALID_ARGUMENT

    assert refused(b'USER:<img src="data:image/png;base64,@@not base64@@">\nASSISTANT:')
    assert refused(inline(QUESTION, b"this is no image at all"))
    assert refused(inline(QUESTION, png(1)[:60]))  # a truncated PNG
    assert refused(b'USER:<img src="data:image/png;base64,AAAA\nASSISTANT:')  # no closing ">
    assert refused(inline(QUESTION, png(1)) + b"<image>")  # the tag's marker and another
    # the image's embeddings give no logits to sample from (llama.cpp would abort)
    assert refused(inline(b"USER:<image>", png(1)))
    vision.meta({"image": str(tmp_path / "missing.png")})
    assert refused(QUESTION)
    (tmp_path / "text.png").write_bytes(b"not a picture")
    vision.meta({"image": str(tmp_path / "text.png")})
    assert refused(QUESTION)
    (tmp_path / "one.png").write_bytes(png(1))
    vision.meta({"image": str(tmp_path / "one.png")})
    assert refused(b"USER:<image><image>\nASSISTANT:")  # one image, two markers
    assert refused(b"USER: no marker\nASSISTANT:")
    vision.prompt(QUESTION)
    assert vision.compute() == 0  # the context still works after the refusals


def test_a_missing_or_wrong_mmproj_is_1(tiny_model: Path) -> None:
    require_vision()
    for mmproj in ("/nonexistent/mmproj.gguf", str(tiny_model)):  # the text model is no projector
        chat = Session(tiny_model, {**GREEDY, "mmproj": mmproj, "n-predict": N_PREDICT})
        try:
            prompt = partial(chat.prompt, inline(QUESTION, png(1)))
            assert errno_of(prompt) == Errno.INVALID_ARGUMENT
            chat.prompt(b"Once upon a time, ")  # text prompts need no projector
            assert chat.compute() == 0
        finally:
            chat.close()


def test_projectors_clip_cpp_would_abort_on_are_1(tiny_model: Path, mmproj: Path, tmp_path: Path) -> None:
    """clip.cpp asserts (aborting the process) on a patch larger than the image or a width that
    heads do not divide; in a fresh interpreter, so that a regression fails only this test."""
    from wasinn.testing.tiny_mmproj import TinyMmprojShape, write_tiny_mmproj

    crafted = [
        write_tiny_mmproj(tmp_path / "patch.gguf", TinyMmprojShape(patch_size=100)),
        write_tiny_mmproj(tmp_path / "heads.gguf", TinyMmprojShape(head_count=3)),
    ]
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(mmproj.read_bytes()[:3000])
    script = """
    for path in sys.argv[2:-1]:
        context = load(NNSession(get_backend), {"mmproj": path}).init_execution_context()
        try:
            context.set_input(0, u8(sys.argv[-1].encode()))
        except NNError as err:
            print(int(err.errno), err)
    """
    prompt = inline(b"USER:<image> hi", png(1)).decode()
    done = run_isolated(script, str(tiny_model), *map(str, [*crafted, truncated]), prompt)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("1 ggml: the mmproj") for line in lines), lines


def test_guest_paths_resolve_through_the_dir_mappings(
    tiny_model: Path,
    mmproj: Path,
    native: NativeVision,
    tmp_path: Path,
) -> None:
    """mmproj and image name guest files: a guest reaches no host file outside its --dir."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "mmproj.gguf").write_bytes(mmproj.read_bytes())
    (data / "one.png").write_bytes(png(1))
    (tmp_path / "outside.png").write_bytes(png(1))
    (data / "model.gguf").write_bytes(tiny_model.read_bytes())
    chat = GuestSession(data, {**GREEDY, "n-predict": N_PREDICT, "mmproj": "/data/mmproj.gguf"})
    try:
        for outside in (str(tmp_path / "outside.png"), "/data/../outside.png"):
            chat.meta({"image": outside})
            assert errno_of(lambda: chat.prompt(QUESTION)) == Errno.INVALID_ARGUMENT
        chat.meta({"image": "/data/one.png"})
        chat.prompt(QUESTION)
        expect_native(chat, native, png(1))
        chat.meta({"mmproj": str(data / "mmproj.gguf")})  # a host path: outside the mappings
        assert errno_of(lambda: chat.prompt(QUESTION)) == Errno.INVALID_ARGUMENT
    finally:
        chat.close()


def test_the_wasmedge_ggml_call_sequence_through_wasinn_run(
    tiny_model: Path,
    mmproj: Path,
    native: NativeVision,
    tmp_path: Path,
) -> None:
    """The llava example's sequence (load_by_name_with_config with mmproj and image, set_input,
    compute, get_output) from a wasm guest: its paths are guest paths under --dir .:."""
    (tmp_path / "mmproj.gguf").write_bytes(mmproj.read_bytes())
    (tmp_path / "one.png").write_bytes(png(1))
    config = {**GREEDY, "n-predict": N_PREDICT, "mmproj": "mmproj.gguf", "image": "one.png"}
    done = run_guest(
        guest_wasm("ggml-chat"),
        "--config",
        json.dumps(config),
        "default",
        QUESTION.decode(),
        cwd=tmp_path,
        preload=[f"default:GGML:AUTO:{tiny_model}"],
    )
    assert done.returncode == 0, done.stderr
    facts = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    text_tokens, tokens, text = native.greedy(QUESTION, png(1), N_PREDICT)
    assert facts["rc_compute"] == "0" and bytes.fromhex(facts["text_hex"]) == text
    after = json.loads(facts["metadata_after"])
    assert (after["input_tokens"], after["output_tokens"]) == (text_tokens, len(tokens))


def test_without_libmtmd_image_prompts_are_1_and_text_works(tiny_model: Path, mmproj: Path) -> None:
    """A llama-cpp-python built without libmtmd (LLAVA_BUILD=OFF) serves text; images get 1.
    MTMD_CPP_LIB points llama_cpp.mtmd_cpp at a directory without the library."""
    script = f"""
import base64, json, numpy as np
from wasinn.backends import get_backend
from wasinn.core import ExecutionTarget, GraphEncoding, NNError, NNSession, Tensor, TensorType
u8 = lambda b: Tensor((len(b),), TensorType.U8, np.frombuffer(b, dtype=np.uint8))
nn = NNSession(get_backend)
config = json.dumps({{"temp": 0, "n-predict": 4, "mmproj": {str(mmproj)!r}}}).encode()
ctx = nn.load([b"preload:" + {bytes(tiny_model)!r}, config], GraphEncoding.GGML, ExecutionTarget.CPU)
ctx = ctx.init_execution_context()
try:
    ctx.set_input(0, u8({inline(QUESTION, png(1))!r}))
except NNError as err:
    print("errno", int(err.errno), err)
ctx.set_input(0, u8(b"Once upon a time, "))
ctx.compute()
print("text", len(bytes(ctx.get_output(0))) > 0)
"""
    src = str(Path(wasinn.__file__).resolve().parents[1])
    pythonpath = os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "MTMD_CPP_LIB": str(Path(src) / "no-such-dir")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("errno 1 ") and "libmtmd" in lines[0] and "LLAVA_BUILD" in lines[0]
    assert lines[1] == "text True"
