"""Times inference rounds of a preloaded model from a Python guest (wasi:nn 10-28).

The component twin of `nn-run --name NAME --input ... --repeat N --time` (examples/c), used by
`wasinn bench --case component/round-trip`:

    wasinn run --dir .:. --nn-preload tiny:openvino:cpu:tiny.xml:tiny.bin time_rounds.wasm \
        --name tiny --input 0:f32:1x4:in.bin --repeat 100 --time

A round is what one nn-run round does: build the input tensor, compute, read every output's
bytes (the last round's are dropped when the next begins). `time_ns N` is printed per round
(WASI monotonic clock).
"""

import time

import wasinn_guest as nn

TYPES = {"f16": "FP16", "f32": "FP32", "f64": "FP64", "u8": "U8", "i32": "I32", "i64": "I64"}


def main(args: list[str]) -> int:
    options = {"--repeat": "1"}
    inputs = []
    position = 1
    while position < len(args):
        flag = args[position]
        if flag == "--time":
            options[flag] = ""
            position += 1
            continue
        value = args[position + 1]
        if flag == "--input":
            name, kind, dims, path = value.split(":")
            with open(path, "rb") as file:
                inputs.append((name, [int(d) for d in dims.split("x")], TYPES[kind], file.read()))
        else:
            options[flag] = value
        position += 2
    if "--name" not in options or not inputs:
        print("usage: time_rounds --name NAME --input NAME:TYPE:DIMS:PATH... [--repeat N] [--time]")
        return 64
    graph = nn.load_by_name(options["--name"])
    with graph.context() as context:
        for _ in range(int(options["--repeat"])):
            start = time.monotonic_ns()
            outputs = context.compute(
                [(name, nn.Tensor(dims, kind, data)) for name, dims, kind, data in inputs]
            )
            sizes = [len(output.data) for output in outputs]  # read like nn-run's get_output
            elapsed = time.monotonic_ns() - start
            if "--time" in options:
                print(f"time_ns {elapsed}")
    print(f"outputs: {', '.join(f'{out.name} {out.ty}{out.dims}' for out in outputs)}, {sum(sizes)} bytes")
    return 0


Run = nn.command(main)
