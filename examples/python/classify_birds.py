"""Bird classification (TFLite aiy/vision/classifier/birds_V1) as a Python wasi:nn guest.

    wasinn build examples/python/classify_birds.py -o classify_birds.wasm
    wasinn im2tensor --image bird.jpg --dims 224x224x3xu8 --tensor bird.tensor
    wasinn run --dir .:. --nn-preload birds:tensorflowlite:cpu:MODEL.tflite \
        classify_birds.wasm bird.tensor [LABELS.txt]
    wasinn run --dir .:. classify_birds.wasm --model MODEL.tflite bird.tensor [LABELS.txt]

The model is preloaded and loaded by name, or with ``--model`` read by the guest and loaded
by bytes: the 3.6 MB model is past one call's 2.79 MB, so ``wasinn_guest.load`` sends it in
pieces (wasinn:nn/chunks). The input is a 1x224x224x3 U8 picture; the output holds 965 U8
scores. Prints the top five classes.
"""

import wasinn_guest as nn

INPUT_DIMS = [1, 224, 224, 3]


def main(args: list[str]) -> int:
    model = None
    if args[1:2] == ["--model"] and len(args) > 2:
        model = args[2]
        args = [args[0], *args[3:]]
    if len(args) not in (2, 3):
        print("usage: classify_birds [--model MODEL.tflite] INPUT_TENSOR [LABELS.txt]")
        return 1
    with open(args[1], "rb") as file:
        pixels = file.read()
    labels: list[str] = []
    if len(args) == 3:
        with open(args[2]) as file:
            labels = [line.strip() for line in file]
    if model is None:
        graph = nn.load_by_name("birds")
    else:
        with open(model, "rb") as file:
            graph = nn.load([file.read()], "tensorflowlite")
    (scores,) = graph.compute({"0": nn.Tensor(INPUT_DIMS, "U8", pixels)})
    print(f"output {scores.name!r}: {scores.ty}{scores.dims}")
    for rank, (index, score) in enumerate(nn.top(nn.floats(scores), 5), 1):
        label = labels[index] if index < len(labels) else f"class {index}"
        print(f"{rank}. {label} ({index}): {score}")
    return 0


Run = nn.command(main)
