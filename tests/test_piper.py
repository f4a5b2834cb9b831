"""Piper (encoding 11) through wasi_ephemeral_nn, against piper-tts called natively, with the
stand-in voice of wasinn.testing.tiny_piper (genai-tts spec §4, conformance §7 cases 1–18,
30–32). Every case is a guest's call sequence through the WAT probe."""

from __future__ import annotations

import io
import json
import shutil
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import make_probe, nn_run, require_module
from test_no_phone_home import assert_quiet, audited
from tts_probe import CHATTTS, I32, PIPER, TextGuest, wav_header
from wasinn import Runtime

AMPLITUDE = int(0.5 * np.float32(0.667) * 32767)  # 10927: the stand-in's samples at the default noise
HI_SAMPLES = 7 * 256  # "hi": BOS PAD h PAD i PAD EOS → N 7, T = N × 256


@pytest.fixture(scope="session")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    require_module("piper")
    require_module("onnx")
    from wasinn.testing.tiny_piper import write_voice

    directory = tmp_path_factory.mktemp("piper")
    return {
        "v": write_voice(directory, "v"),
        "v2": write_voice(directory, "v2", speakers=2),
        "espeak": write_voice(directory, "espeak", phoneme_type="espeak"),
    }


@pytest.fixture
def guest() -> Iterator[TextGuest]:
    # The model paths in builders are guest paths (tests/test_guest_paths.py): the whole host,
    # read-only, lets these tests name the files where the fixtures wrote them.
    probe = make_probe(Runtime(cache=False, dirs=["/:/:readonly"]), pages=4)
    yield TextGuest(probe)
    probe.instance.close()


def config(model: Path, **keys: object) -> bytes:
    return json.dumps({"model": str(model), **keys}).encode()


def context(guest: TextGuest, run_config: bytes, encoding: int = PIPER) -> int:
    errno, graph = guest.load(encoding, [run_config])
    assert errno == 0
    return guest.context(graph)


def native(model: Path, text: str, **options: object) -> bytes:
    """piper-tts itself, as WasmEdge's libpiper synthesises: speaker 0, no normalisation."""
    import piper

    voice = piper.PiperVoice.load(model)
    settings = piper.SynthesisConfig(normalize_audio=False, **{"speaker_id": 0, **options})  # type: ignore[arg-type]
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        voice.synthesize_wav(text, writer, settings)
    return buffer.getvalue()


def test_wav_of_hi_is_the_stand_ins_arithmetic_and_piper_tts_own(
    guest: TextGuest, voices: dict[str, Path]
) -> None:
    ctx = context(guest, config(voices["v"]))
    errno, wav = guest.run(ctx, b"hi")
    assert errno == 0 and len(wav) == 3628  # case 8
    assert wav[:44] == wav_header(2 * HI_SAMPLES, 16000)
    assert set(np.frombuffer(wav[44:], "<i2")) == {AMPLITUDE}
    assert wav == native(voices["v"], "hi")
    # case 1: the guest's u32 encoding is taken mod 256, as WasmEdge's u8 enum
    assert guest.run(context(guest, config(voices["v"]), encoding=PIPER + 256), b"hi") == (0, wav)
    assert guest.load(8, [config(voices["v"])])[0] == 2  # Burn: WasmEdge has no such backend
    assert guest.load(15, [config(voices["v"])])[0] == 2
    assert guest.run(ctx, b"hi\0hh") == (0, wav)  # case 14: a C string
    assert guest.run(ctx, b"h?i") == (0, wav)  # case 15: unmapped characters are skipped


def test_real_espeak_phonemes_equal_piper_tts(guest: TextGuest, voices: dict[str, Path]) -> None:
    """The bundled espeak-ng data (offline): two sentences, one model run each, concatenated."""
    text = "Hello world. How are you today?"
    errno, wav = guest.run(context(guest, config(voices["espeak"], length_scale=0.5)), text.encode())
    assert errno == 0 and len(wav) > 44
    assert wav == native(voices["espeak"], text, length_scale=0.5)


@pytest.mark.parametrize(
    ("keys", "size", "sample"),
    [
        ({"output_type": "raw"}, 2 * HI_SAMPLES, AMPLITUDE),  # case 9
        ({"output_type": "raw", "length_scale": 2}, 4 * HI_SAMPLES, AMPLITUDE),  # case 10
        ({"output_type": "raw", "noise_scale": 0}, 2 * HI_SAMPLES, 0),
        ({"output_type": "raw", "speaker": 3, "sentence_silence": 1}, 2 * HI_SAMPLES, AMPLITUDE),  # case 5
        ({"output_type": "raw", "speaker_id": 1}, 2 * HI_SAMPLES, AMPLITUDE),  # case 16: one speaker
    ],
)
def test_run_config_settings(
    guest: TextGuest, voices: dict[str, Path], keys: dict[str, object], size: int, sample: int
) -> None:
    errno, raw = guest.run(context(guest, config(voices["v"], **keys)), b"hi")
    assert errno == 0 and len(raw) == size
    assert set(np.frombuffer(raw, "<i2")) == {sample}


def test_speakers_of_a_two_speaker_voice(guest: TextGuest, voices: dict[str, Path]) -> None:
    outputs = [
        guest.run(context(guest, config(voices["v2"], output_type="raw", speaker_id=s)), b"hi")[1]
        for s in (0, 1)
    ]
    assert set(np.frombuffer(outputs[0], "<i2")) == {AMPLITUDE}
    assert set(np.frombuffer(outputs[1], "<i2")) == {
        int((np.float32(0.5 * np.float32(0.667)) + np.float32(0.1)) * 32767)
    }
    assert outputs[1] == native(voices["v2"], "hi", speaker_id=1)[44:]


def test_json_input_overrides_are_per_input(guest: TextGuest, voices: dict[str, Path]) -> None:
    ctx = context(guest, config(voices["v"], json_input=True))
    errno, slow = guest.run(ctx, b'{"text":"hi","length_scale":2}')
    assert errno == 0 and len(slow) == 44 + 4 * HI_SAMPLES  # case 11
    assert guest.run(ctx, b'{"text":"hi"}') == (0, native(voices["v"], "hi"))  # not sticky
    # case 12: text is checked at compute, the JSON and its types at set_input
    assert guest.set_input(ctx, b'{"length_scale":2}') == 0
    assert guest.compute(ctx) == 1
    for bad in (b"not json", b"[]", b'{"text":"hi","output_type":"flac"}', b'{"text":"hi","speaker_id":"1"}'):
        assert guest.set_input(ctx, bad) == 1, bad


def test_empty_text(guest: TextGuest, voices: dict[str, Path]) -> None:
    assert guest.run(context(guest, config(voices["v"])), b"") == (0, wav_header(0, 22050))  # case 13
    assert guest.run(context(guest, config(voices["v"], output_type="raw")), b"") == (0, b"")


@pytest.mark.parametrize(
    ("builders", "errno"),
    [
        ([], 1),  # case 2
        ([b"{}", b"{}"], 1),
        ([b""], 2),  # case 3
        ([b"[1]"], 1),
        ([b"{}"], 1),
        ([b'{"model":"nope.onnx"}'], 1),
    ],
)
def test_load_errors(guest: TextGuest, builders: list[bytes], errno: int) -> None:
    assert guest.load(PIPER, builders)[0] == errno


@pytest.mark.parametrize(
    "keys",
    [
        {"output_type": "mp3"},  # case 5
        {"speaker_id": 1.5},
        {"noise_scale": "x"},
        {"json_input": "true"},
        {"config": "/nonexistent/voice.json"},  # case 4
    ],
)
def test_run_config_type_errors(guest: TextGuest, voices: dict[str, Path], keys: dict[str, object]) -> None:
    assert guest.load(PIPER, [config(voices["v"], **keys)])[0] == 1


def test_broken_voices_are_errno_1_not_a_crash(
    guest: TextGuest, voices: dict[str, Path], tmp_path: Path
) -> None:
    """Case 4 and 6: WasmEdge aborts the runtime on these."""
    assert guest.load(PIPER, [config(tmp_path)])[0] == 1  # a directory as the model
    good = json.loads(Path(f"{voices['v']}.json").read_text())
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not an onnx model")
    not_json, no_speakers = tmp_path / "a.json", tmp_path / "b.json"
    not_json.write_text("{")
    no_speakers.write_text(json.dumps({k: v for k, v in good.items() if k != "num_speakers"}))
    assert guest.load(PIPER, [config(voices["v"], config=str(not_json))])[0] == 1
    assert guest.load(PIPER, [config(voices["v"], config=str(no_speakers))])[0] == 1
    assert guest.load(PIPER, [config(garbage, config=f"{voices['v']}.json")])[0] == 1
    # the two-speaker model under a one-speaker voice JSON: Piper would not feed its sid
    assert guest.load(PIPER, [config(voices["v2"], config=f"{voices['v']}.json")])[0] == 1
    assert guest.run(context(guest, config(voices["v"])), b"hi")[0] == 0  # the host lives on


def test_call_sequence_errors(guest: TextGuest, voices: dict[str, Path]) -> None:
    ctx = context(guest, config(voices["v"]))
    assert guest.get_output(ctx)[0] == 1  # case 7: no output yet
    assert guest.compute(ctx) == 1  # no input yet
    assert guest.set_input(ctx, b"hi", index=1) == 1
    assert guest.set_input(ctx, b"hihi", dims=[2, 2]) == 1
    assert guest.set_input(ctx, b"hihi", kind=I32, dims=[4]) == 0  # the type is not checked
    assert guest.compute(ctx) == 0
    assert guest.get_output(ctx, index=1)[0] == 1
    assert guest.get_output(ctx, size=0)[0] == 7  # case 17
    needed = guest.needed()
    assert needed == 44 + 2 * 11 * 256
    assert guest.get_output(ctx, size=needed)[0] == 0
    assert guest.probe.call("compute_single", ctx) == 1  # case 18


def test_preloaded_voice(voices: dict[str, Path], tmp_path: Path) -> None:
    """Case 30: the preloaded file is the run config; a config at load_by_name makes 2 builders."""
    run_config = tmp_path / "cfg.json"
    run_config.write_bytes(config(voices["v"]))
    runtime = Runtime(cache=False, preload=[f"p:piper:cpu:{run_config}"])
    guest = TextGuest(make_probe(runtime, pages=4))
    errno, graph = guest.load_by_name("p")
    assert errno == 0
    assert guest.run(guest.context(graph), b"hi") == (0, native(voices["v"], "hi"))
    guest.probe.instance.close()
    fresh = TextGuest(make_probe(runtime, pages=4))  # an instance caches a name's graph: a new one
    assert fresh.load_by_name("p", config(voices["v"]))[0] == 1
    fresh.probe.instance.close()


def test_chattts_is_not_built(guest: TextGuest) -> None:
    """Case 31: ChatTTS downloads ~1 GB of weights at load; encoding 12 is errno 1, whatever."""
    assert guest.load(CHATTTS, [])[0] == 1
    assert guest.load(CHATTTS, [b"anything", b"{}"])[0] == 1
    from wasinn.backends import get_backend
    from wasinn.core import GraphEncoding, InvalidArgument

    with pytest.raises(InvalidArgument, match="1 GB of weights"):
        get_backend(GraphEncoding.CHATTTS)


def test_concurrent_contexts_of_one_voice(voices: dict[str, Path]) -> None:
    """Case 32: contexts of one graph synthesising at once give the sequential bytes."""
    from wasinn.backends import get_backend
    from wasinn.core import ExecutionTarget, GraphEncoding, NNSession, Tensor

    session = NNSession(get_backend)
    graph = session.load([config(voices["espeak"])], GraphEncoding.PIPER, ExecutionTarget.CPU)
    texts = [f"Sentence number {i}. And one more." for i in range(4)]
    expected = [native(voices["espeak"], text) for text in texts]
    results: dict[int, bytes] = {}

    def speak(i: int) -> None:
        ctx = graph.init_execution_context()
        for _ in range(3):
            ctx.set_input(0, Tensor.from_array(np.frombuffer(texts[i].encode(), np.uint8)))
            ctx.compute()
            results[i] = ctx.get_output(0).tobytes()
            assert results[i] == expected[i]

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(4)] == expected


def test_nn_run_guest_writes_the_wav(voices: dict[str, Path], tmp_path: Path) -> None:
    """The compiled C guest (examples/c/nn-run.c) under ``wasinn run``: WAV bytes out, its exit
    status the errno of a failing call, and no network use or child process (issue 16)."""
    (tmp_path / "audit").mkdir()
    env, log = audited(tmp_path / "audit")
    # As WasmEdge's example runs: the voice beside the guest, named relative to its directory.
    for file in voices["espeak"].parent.glob(voices["espeak"].name + "*"):
        shutil.copy(file, tmp_path)
    (tmp_path / "cfg.json").write_bytes(config(Path(voices["espeak"].name)))
    (tmp_path / "text").write_bytes(b"Hello world. How are you?")
    load = ("--encoding", "piper", "--model", "cfg.json", "--input", "0:u8:25:text")
    done = nn_run(tmp_path, *load, "--output", "0:out.wav", env=env)
    assert done.returncode == 0, done.stderr
    # The same voice by its host path, outside the guest's --dir: errno 1, not a read of it.
    (tmp_path / "outside.json").write_bytes(config(voices["espeak"]))
    outside = nn_run(tmp_path, "--encoding", "piper", "--model", "outside.json", "--input", "0:u8:25:text")
    assert outside.returncode == 1, outside.stderr
    assert "is not inside any --dir mapping" in outside.stderr
    assert_quiet(log, "run", tmp_path / "audit" / "home")
    assert (tmp_path / "out.wav").read_bytes() == native(voices["espeak"], "Hello world. How are you?")
    (tmp_path / "bad.json").write_bytes(b'{"model": "nope.onnx"}')
    done = nn_run(tmp_path, "--encoding", "11", "--model", "bad.json", "--input", "0:u8:25:text")
    assert done.returncode == 1, done.stderr
