"""A stand-in Piper voice, written offline: an ONNX graph with Piper's signature and its JSON.

Not a speech model: the graph outputs ``T = floor(N × 256 × length_scale)`` samples (N the
phoneme-id count) all equal to ``noise_scale × 0.5`` (plus ``0.1 × sid`` for the two-speaker
variant), so every synthesis setting shows in the audio and the expected bytes can be
computed by hand (genai-tts spec §4.5). Inputs and output are named as libpiper and
piper-tts feed them: ``input`` int64 [1, N], ``input_lengths`` int64 [1], ``scales`` float32
[3] (noise, length, noise_w), ``sid`` int64 [1] only when ``num_speakers`` > 1; ``output``
float32 [1, 1, T].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

HOP = 256
SAMPLE_RATE = 16000
# PAD, BOS, EOS as libpiper hard-codes them; a word space and a few letters.
PHONEME_ID_MAP: dict[str, list[int]] = {
    "_": [0],
    "^": [1],
    "$": [2],
    " ": [3],
    "h": [4],
    "i": [5],
    "e": [6],
    "l": [7],
    "o": [8],
}


def voice_config(speakers: int = 1, phoneme_type: str = "text") -> dict[str, Any]:
    """The voice JSON (``<model>.onnx.json``)."""
    config: dict[str, Any] = {
        "audio": {"sample_rate": SAMPLE_RATE},
        "espeak": {"voice": "en-us"},
        "phoneme_type": phoneme_type,
        "num_symbols": 64,
        "num_speakers": speakers,
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_id_map": PHONEME_ID_MAP,
    }
    if phoneme_type == "espeak":
        config["phoneme_id_map"] = {}  # piper-tts then uses its built-in IPA map
    if speakers > 1:
        config["speaker_id_map"] = {f"s{i}": i for i in range(speakers)}
    return config


def voice_model(speakers: int = 1) -> bytes:
    """The ONNX graph, serialised (opset 15, IR 8: readable by any onnxruntime ≥ 1.10)."""
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: Any, dtype: Any) -> Any:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value, dtype)))

    inputs = [
        helper.make_tensor_value_info("input", TensorProto.INT64, [1, "n"]),
        helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
        helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
    ]
    nodes = [
        const("zero", [0], np.int64),
        const("one", [1], np.int64),
        const("two", [2], np.int64),
        const("hop", HOP, np.float32),
        const("half", 0.5, np.float32),
        const("nil", 0.0, np.float32),
        const("dims11", [1, 1], np.int64),
        helper.make_node("Shape", ["input"], ["n_i"], start=1, end=2),
        helper.make_node("Cast", ["n_i"], ["n_f"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["scales", "one", "two"], ["length_scale"]),
        helper.make_node("Slice", ["scales", "zero", "one"], ["noise_scale"]),
        helper.make_node("Mul", ["n_f", "length_scale"], ["n_ls"]),
        helper.make_node("Mul", ["n_ls", "hop"], ["t_f"]),
        helper.make_node("Floor", ["t_f"], ["t_floor"]),
        helper.make_node("Cast", ["t_floor"], ["t"], to=TensorProto.INT64),
        helper.make_node("Concat", ["dims11", "t"], ["shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            ["ones"],
            value=numpy_helper.from_array(np.array([1.0], np.float32)),
        ),
        helper.make_node("Mul", ["noise_scale", "half"], ["amplitude0"]),
        # Every input is consumed, so onnxruntime sees none as unused.
        helper.make_node("Cast", ["input_lengths"], ["lengths_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["lengths_f", "nil"], ["lengths_zero"]),
        helper.make_node("Add", ["amplitude0", "lengths_zero"], ["amplitude1"]),
    ]
    amplitude = "amplitude1"
    if speakers > 1:
        inputs.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
        nodes += [
            const("tenth", 0.1, np.float32),
            helper.make_node("Cast", ["sid"], ["sid_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["sid_f", "tenth"], ["sid_part"]),
            helper.make_node("Add", ["amplitude1", "sid_part"], ["amplitude2"]),
        ]
        amplitude = "amplitude2"
    nodes.append(helper.make_node("Mul", ["ones", amplitude], ["output"]))
    output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "t"])
    graph = helper.make_graph(nodes, "piper_stand_in", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def write_voice(directory: Path, name: str = "voice", speakers: int = 1, phoneme_type: str = "text") -> Path:
    """Write ``<name>.onnx`` and ``<name>.onnx.json`` under ``directory``; return the model path."""
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / f"{name}.onnx"
    model.write_bytes(voice_model(speakers))
    (directory / f"{name}.onnx.json").write_text(json.dumps(voice_config(speakers, phoneme_type)))
    return model
