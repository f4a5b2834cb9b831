"""Road segmentation (OpenVINO road-segmentation-adas-0001) as a Python wasi:nn guest.

The Python twin of examples/road-segmentation (Rust, legacy wasi_ephemeral_nn): same
arguments, same output file, byte for byte.

    wasinn build examples/python/road_segmentation.py -o road_segmentation.wasm
    wasinn run --dir .:. road_segmentation.wasm MODEL_XML MODEL_BIN INPUT_TENSOR
"""

import wasinn_guest as nn

# 512x896x3 BGR f32 values in HWC order, as `wasinn im2tensor --dims 512x896x3xfp32` writes
# them; wasinn's OpenVINO backend converts the layout to the model's NCHW natively.
INPUT_DIMS = [1, 512, 896, 3]
OUTPUT_PATH = "wasinn-openvino-inference-output-1x4x512x896xf32.tensor"


def read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise SystemExit(f"road_segmentation: cannot read the {what} from {path!r}: {error}") from None


def main(args: list[str]) -> int:
    if len(args) != 4:
        print("usage: road_segmentation MODEL_XML MODEL_BIN INPUT_TENSOR")
        return 1
    xml = read(args[1], "graph XML")
    print(f"Load graph XML, size in bytes: {len(xml)}")
    weights = read(args[2], "graph weights")
    print(f"Load graph weights, size in bytes: {len(weights)}")
    data = read(args[3], "input tensor")
    print(f"Load input tensor, size in bytes: {len(data)}")

    graph = nn.load([xml, weights], "openvino", "cpu")
    print("Loaded graph into wasi-nn")
    with graph.context() as context:
        print("Created wasi-nn execution context")
        # "0": the model's first input by index (spec §7); its name, "data", works too.
        (output,) = context.compute({"0": nn.Tensor(INPUT_DIMS, "FP32", data)})
    print("Executed graph inference")
    print(f"bytes_written: {len(output.data)}")
    print(f"dump tensor to {OUTPUT_PATH!r}")
    print(f"\tThe size of bytes: {len(output.data)}")
    with open(OUTPUT_PATH, "wb") as file:
        file.write(output.data)
    return 0


Run = nn.command(main)
