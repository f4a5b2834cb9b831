"""Tiny TensorFlow models with the real tensor names of WasmEdge's two TF examples.

``mtcnn_tiny``: placeholders ``input`` f32[?,?,3], ``min_size`` f32[], ``thresholds`` f32[3],
``factor`` f32[]; outputs ``box`` [2,4], ``prob`` [2], ``landmarks`` [2,10] (spec §6.2), plus
``top`` (top_k over the thresholds, 2 outputs) for the ``op:N`` cases.
``mobilenet_tiny``: ``input`` f32[1,224,224,3] → ``MobilenetV2/Predictions/Softmax`` f32[1,1001]
(mean-pool, a fixed matmul, softmax; spec §6.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def tf() -> Any:
    import tensorflow

    return tensorflow


def mtcnn_tiny() -> bytes:
    t = tf()
    graph = t.Graph()
    with graph.as_default():
        v1 = t.compat.v1
        pixels = v1.placeholder(t.float32, [None, None, 3], name="input")
        min_size = v1.placeholder(t.float32, [], name="min_size")
        thresholds = v1.placeholder(t.float32, [3], name="thresholds")
        factor = v1.placeholder(t.float32, [], name="factor")
        level = t.reduce_mean(pixels) * factor + min_size
        corners = t.stack(
            [level, level + 1, level * 2, level + 3, thresholds[0], thresholds[1], thresholds[2], level]
        )
        t.identity(t.reshape(corners, [2, 4]), name="box")
        t.identity(thresholds[:2] * level, name="prob")
        t.identity(t.zeros([2, 10]) + t.reduce_max(pixels, axis=[0, 1])[0], name="landmarks")
        t.math.top_k(thresholds, k=2, name="top")
    data: bytes = graph.as_graph_def().SerializeToString()
    return data


MOBILENET_OUTPUT = "MobilenetV2/Predictions/Softmax"


def mobilenet_tiny() -> bytes:
    t = tf()
    weights = np.random.RandomState(7).standard_normal((3, 1001)).astype(np.float32) * 4
    graph = t.Graph()
    with graph.as_default():
        pixels = t.compat.v1.placeholder(t.float32, [1, 224, 224, 3], name="input")
        pooled = t.reduce_mean(pixels, axis=[1, 2])
        t.nn.softmax(t.matmul(pooled, t.constant(weights)), name=MOBILENET_OUTPUT)
    data: bytes = graph.as_graph_def().SerializeToString()
    return data


SAVED_WIDTH = 4


def saved_model(directory: Path) -> None:
    """A TF2 SavedModel: signature ``serving_default`` x f32[1,4] → y = x·W + b (variables)."""
    t = tf()

    class Affine(t.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.RandomState(3)
            self.w = t.Variable(rng.standard_normal((SAVED_WIDTH, 3)).astype(np.float32))
            self.b = t.Variable(np.array([0.5, -1.0, 2.0], np.float32))

        @t.function(input_signature=[t.TensorSpec([1, SAVED_WIDTH], t.float32, name="x")])
        def serve(self, x: Any) -> Any:
            return {"y": t.matmul(x, self.w) + self.b}

    module = Affine()
    t.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})


def run_graph(model: bytes, feeds: dict[str, np.ndarray], fetches: list[str]) -> list[np.ndarray]:
    """The native oracle: the same GraphDef in a plain TF1 session."""
    t = tf()
    graph_def = t.compat.v1.GraphDef()
    graph_def.ParseFromString(model)
    graph = t.Graph()
    with graph.as_default():
        t.graph_util.import_graph_def(graph_def, name="")
    with t.compat.v1.Session(graph=graph) as session:
        results: list[np.ndarray] = session.run(fetches, feeds)
    return results


def run_saved(directory: Path, x: np.ndarray) -> np.ndarray:
    t = tf()
    loaded = t.saved_model.load(str(directory))
    result: np.ndarray = loaded.signatures["serving_default"](x=t.constant(x))["y"].numpy()
    return result


MASKED_WIDTH = 8


def tflite_boolean_mask() -> bytes:
    """TFLite: ``x`` f32[8] → ``x[x > 0]``, an output whose size only the invoke decides
    (4 bytes, shape [1], after allocation; 4 × the positive count after a run)."""
    t = tf()

    @t.function(input_signature=[t.TensorSpec([MASKED_WIDTH], t.float32, name="x")])
    def positive(x: Any) -> Any:
        return t.boolean_mask(x, x > 0)

    converter = t.lite.TFLiteConverter.from_concrete_functions([positive.get_concrete_function()])
    model: bytes = converter.convert()
    return model


def string_feed() -> bytes:
    """A graph fed by a string placeholder ``text`` (``length`` = its byte length): no
    fixed-size byte form, so no guest bytes can feed it."""
    t = tf()
    graph = t.Graph()
    with graph.as_default():
        text = t.compat.v1.placeholder(t.string, [], name="text")
        t.strings.length(text, name="length")
    data: bytes = graph.as_graph_def().SerializeToString()
    return data
