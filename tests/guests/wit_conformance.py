"""A componentize-py guest that drives wasi:nn 10-28, 08-19 and 06-25 for tests/test_wit.py.

Built with `wasinn build --nn-version` (all three). `wit_conformance.wasm SCENARIO [ARGS...]`
runs one scenario and prints one JSON object; the files it reads are in the preopened
current directory. Errors are reported as {"error": [code, data]}, never raised, so every
WIT `err` is checked by the test. Only standard library modules: there is no numpy here.
"""

import array
import json
import os
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import chunks
from wit_world.imports import wasi_nn_errors_0_2_0_rc_2024_06_25 as errors_0625
from wit_world.imports import wasi_nn_errors_0_2_0_rc_2024_10_28 as errors
from wit_world.imports import wasi_nn_graph_0_2_0_rc_2024_06_25 as graph_0625
from wit_world.imports import wasi_nn_graph_0_2_0_rc_2024_08_19 as graph_0819
from wit_world.imports import wasi_nn_graph_0_2_0_rc_2024_10_28 as graph
from wit_world.imports import wasi_nn_tensor_0_2_0_rc_2024_06_25 as tensor_0625
from wit_world.imports import wasi_nn_tensor_0_2_0_rc_2024_08_19 as tensor_0819
from wit_world.imports import wasi_nn_tensor_0_2_0_rc_2024_10_28 as tensor

KEPT = []  # objects the "leak" scenario never drops


def read(path):
    with open(path, "rb") as file:
        return file.read()


def failure(err):
    with err.value as error:
        return {"error": [error.code().name.lower().replace("_", "-"), error.data()]}


def attempt(operation):
    try:
        return {"ok": operation()}
    except Err as err:
        return failure(err)


def describe(t):
    with t:
        return [t.dimensions(), t.ty().name, t.data().hex()]


def outputs(results):
    return [[name, *describe(t)] for name, t in results]


def f32_tensor(dims, values, module=tensor):
    return module.Tensor(dims, module.TensorType.FP32, array.array("f", values).tobytes())


def enums(args):
    return {
        "tensor-type": {m.name: m.value for m in tensor.TensorType},
        "graph-encoding": {m.name: m.value for m in graph.GraphEncoding},
        "execution-target": {m.name: m.value for m in graph.ExecutionTarget},
        "error-code": {m.name: m.value for m in errors.ErrorCode},
    }


def tensors(args):
    made = {}
    for kind in tensor.TensorType:
        t = tensor.Tensor([2, 1], kind, bytes(range(kind.value + 1)))
        made[kind.name] = describe(t)
    odd = tensor.Tensor([], tensor.TensorType.FP32, b"\x01\x02\x03")  # rank 0, 3 bytes: accepted
    first = tensor.Tensor([4], tensor.TensorType.U8, b"abcd")
    second = tensor.Tensor([2], tensor.TensorType.U8, b"xy")
    repeated = [first.data().hex() for _ in range(3)]
    first.__exit__(None, None, None)
    return {"types": made, "odd": describe(odd), "repeated": repeated, "after-drop": describe(second)}


def load(args):
    encoding, target, *paths = args
    parts = [read(path) for path in paths]

    def run():
        with graph.load(parts, graph.GraphEncoding[encoding.upper()], graph.ExecutionTarget[target.upper()]):
            return "loaded"

    return attempt(run)


def by_name(args):
    return attempt(lambda: graph.load_by_name(args[0]).__exit__(None, None, None) or "loaded")


def _context(source):
    if source.endswith(".onnx"):  # by bytes; otherwise by name
        g = graph.load([read(source)], graph.GraphEncoding.ONNX, graph.ExecutionTarget.CPU)
    else:
        g = graph.load_by_name(source)
    return g.init_execution_context()


def _inputs(specs):
    """NAME:d0xd1:v0,v1,... (FP32) or NAME:text:STRING (U8 [len], e.g. a GGML prompt)."""
    inputs = []
    for spec in specs:
        name, dims, values = spec.split(":", 2)
        if dims == "text":
            data = values.encode()
            inputs.append((name, tensor.Tensor([len(data)], tensor.TensorType.U8, data)))
            continue
        inputs.append(
            (name, f32_tensor([int(d) for d in dims.split("x")], [float(v) for v in values.split(",")]))
        )
    return inputs


def compute(args):
    """compute NAME:d0xd1:v0,v1,... [...] against model args[0] (a preload name or a file)."""
    source, *specs = args
    ctx = _context(source)
    inputs = _inputs(specs)
    return attempt(lambda: outputs(ctx.compute(inputs)))


def sequence(args):
    """Computes on one context: SOURCE SPECS... [-- SPECS...]; one outcome per compute."""
    source, *rest = args
    ctx = _context(source)
    calls = [[]]
    for arg in rest:
        if arg == "--":
            calls.append([])
        else:
            calls[-1].append(arg)
    return [attempt(lambda specs=specs: outputs(ctx.compute(_inputs(specs)))) for specs in calls]


def typed(args):
    """A U8 input (or a wrong rank) where the model wants FP32: an error result, not a trap."""
    source, name, kind, dims = args
    ctx = graph.load_by_name(source).init_execution_context()
    shape = [int(d) for d in dims.split("x")]
    size = 1
    for d in shape:
        size *= d
    width = {"U8": 1, "FP32": 4, "I64": 8}[kind]
    data = tensor.Tensor(shape, tensor.TensorType[kind], bytes(size * width))
    return attempt(lambda: outputs(ctx.compute([(name, data)])))


def lifetimes(args):
    """Two names, two contexts, a dropped graph, repeated computes on one context."""
    source, name = args
    first = graph.load_by_name(source)
    second = graph.load_by_name(source)
    first.__exit__(None, None, None)
    ctx_a = second.init_execution_context()
    ctx_b = second.init_execution_context()
    second.__exit__(None, None, None)  # the contexts outlive their graph
    result = {}
    result["a1"] = outputs(ctx_a.compute([(name, f32_tensor([1, 4], [1, 2, 3, 4]))]))
    result["b"] = outputs(ctx_b.compute([(name, f32_tensor([1, 4], [-1, -1, -1, -1]))]))
    result["a2"] = outputs(ctx_a.compute([(name, f32_tensor([1, 4], [5, 6, 7, 8]))]))
    ctx_a.__exit__(None, None, None)
    ctx_b.__exit__(None, None, None)
    third = graph.load_by_name(source)  # the registry still has it
    with third.init_execution_context() as ctx:
        result["again"] = outputs(ctx.compute([(name, f32_tensor([1, 4], [1, 2, 3, 4]))]))
    third.__exit__(None, None, None)
    return result


def drops(args):
    """lifetimes, plus an error result the guest drops (case 30)."""
    result = lifetimes(args)
    result["error"] = by_name(["no-such-model"])
    return result


def repeat(args):
    """Many computes, every input moved and every output dropped."""
    source, name, count = args
    with graph.load_by_name(source) as g, g.init_execution_context() as ctx:
        for step in range(int(count)):
            for _, out in ctx.compute([(name, f32_tensor([1, 4], [step, step, step, step]))]):
                out.__exit__(None, None, None)
    return "done"


def leak(args):
    """Leave a graph, a context, a tensor and an error undropped for the host to free at close."""
    g = graph.load_by_name(args[0])
    KEPT.extend([g, g.init_execution_context(), tensor.Tensor([1], tensor.TensorType.U8, b"x")])
    try:
        graph.load_by_name("no-such-model")
    except Err as err:
        KEPT.append(err.value)
    return "kept"


def big(args):
    """A tensor of N bytes in one constructor call, then its data back."""
    size = int(args[0])
    with tensor.Tensor([size], tensor.TensorType.U8, bytes(size)) as t:
        return len(t.data())


def chunked(args):
    """wasinn:nn/chunks: a tensor built from pieces, and a model loaded from tensors."""
    total = int(args[0])
    piece = bytes(range(256)) * 4096  # 1 MiB
    t = tensor.Tensor([total], tensor.TensorType.U8, piece[: min(total, len(piece))])
    sent = min(total, len(piece))
    while sent < total:
        step = min(total - sent, len(piece))
        chunks.append(t, piece[:step])
        sent += step
    data = t.data()
    result = {"length": len(data), "head": data[:8].hex(), "tail": data[-8:].hex()}
    if len(args) > 1:
        encoding, *paths = args[1:]
        parts = []
        for path in paths:
            blob = read(path)
            part = tensor.Tensor([len(blob)], tensor.TensorType.U8, blob[:1000])
            if len(blob) > 1000:
                chunks.append(part, blob[1000:])
            parts.append(part)
        result["load"] = attempt(
            lambda: (
                chunks.load_parts(
                    parts, graph.GraphEncoding[encoding.upper()], graph.ExecutionTarget.CPU
                ).__exit__(None, None, None)
                or "loaded"
            )
        )
    return result


def old_api(args):
    """08-19 (and 06-25): set-input moves, compute() then get-output gives a new tensor each call."""
    version, source, name, output = args
    g_mod, t_mod = (graph_0819, tensor_0819) if version == "08-19" else (graph_0625, tensor_0625)
    result = {}
    with g_mod.load_by_name(source) as g, g.init_execution_context() as ctx:
        try:
            ctx.get_output(output)
            result["before"] = "ok"
        except Err as err:
            result["before"] = failure(err)
        ctx.set_input(name, f32_tensor([1, 4], [1, 2, 3, 4], t_mod))
        ctx.compute()
        result["first"] = describe(ctx.get_output(output))
        result["second"] = describe(ctx.get_output(output))
        try:
            ctx.get_output("no-such-output")
            result["unknown"] = "ok"
        except Err as err:
            result["unknown"] = failure(err)
        try:
            ctx.set_input("no-such-input", f32_tensor([1, 4], [1, 2, 3, 4], t_mod))
            result["bad-input"] = "ok"
        except Err as err:
            result["bad-input"] = failure(err)
        # The refused set-input left nothing behind: the next compute works (and gives the same).
        ctx.set_input(name, f32_tensor([1, 4], [1, 2, 3, 4], t_mod))
        ctx.compute()
        result["after-bad-input"] = describe(ctx.get_output(output))
    return result


def environment(args):
    """What `wasinn run --env/--dir` gave the guest: a variable and a file's size."""
    return {"env": os.environ.get(args[0]), "size": len(read(args[1]))}


def exit(args):
    """wasi:cli/exit: 0.2.0 carries only ok or err, so any non-zero status arrives as 1."""
    sys.stdout.flush()
    os._exit(int(args[0]))


def error_constructor(args):
    with errors_0625.Error(errors_0625.ErrorCode.TIMEOUT, "made by the guest") as error:
        return [error.code().name, error.data()]


SCENARIOS = {
    name: function
    for name, function in globals().items()
    if callable(function)
    and name not in {"read", "failure", "attempt", "describe", "outputs", "f32_tensor"}
    and not name.startswith("_")
    and function.__module__ == __name__
}


class Run(exports.Run):
    def run(self) -> None:
        scenario = sys.argv[1].replace("-", "_")
        print(json.dumps(SCENARIOS[scenario](sys.argv[2:])))
