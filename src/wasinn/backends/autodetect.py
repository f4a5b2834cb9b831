"""Autodetect (encoding 5): recognise the model format from its bytes, then load it there.

WasmEdge answers errno 2 (invalid_encoding) for encoding 5; wasinn looks at the builders
and hands them, unchanged and with the same target, to the backend of the format it finds.
Detection reads only headers and top-level structure, never a whole model, and imports
no framework.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Sequence
from xml.etree.ElementTree import Element, ParseError, XMLPullParser

from wasinn.core import (
    Backend,
    BackendGraph,
    ExecutionTarget,
    GraphEncoding,
    InvalidEncoding,
    ModelConfig,
)

XML_HEAD = 64 * 1024  # enough to reach an IR's root element past any declaration and comments
TRIED = "OpenVINO IR (XML <net> root), TFLite (TFL3 identifier), GGUF, TorchScript (zip), ONNX (ModelProto)"


def is_openvino_ir(blob: bytes) -> bool:
    """The XML's root element is ``<net>``; only the first start tag is parsed."""
    head = blob[:XML_HEAD].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<"):
        return False
    parser: XMLPullParser[Element] = XMLPullParser(events=("start",))
    try:
        parser.feed(head)
        for event in parser.read_events():
            # The first "start" event is the root element; nothing else is parsed.
            root = event[-1]
            return isinstance(root, Element) and root.tag == "net"
    except ParseError:
        return False
    return False


def _is_tflite(blob: bytes) -> bool:
    # A flatbuffer's file identifier sits after the u32 root offset.
    return blob[4:8] == b"TFL3"


def _is_gguf(blob: bytes) -> bool:
    return blob[:4] == b"GGUF"


def _is_torchscript(blob: bytes) -> bool:
    """A TorchScript archive is a zip whose entries live under one folder: data.pkl, constants.pkl, code/."""
    if not blob.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return False
    return any(name.endswith(("/data.pkl", "/constants.pkl")) or "/code/" in name for name in names)


# ModelProto field number → protobuf wire type (onnx.proto3): 0 varint, 2 length-delimited.
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def _varint(blob: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(blob) or shift > 63:
            raise ValueError("truncated varint")
        byte = blob[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _is_onnx(blob: bytes) -> bool:
    """The bytes are exactly a sequence of top-level protobuf fields that fits ModelProto.

    Only the top level is walked (the graph is one length-delimited field, skipped), so this
    costs a few dozen steps for any model size, and needs no ``onnx`` package. It requires
    ``ir_version`` (field 1, varint) and ``graph`` (field 7, bytes), a wire type that matches
    for every known field, and the fields to end exactly at the end of the blob: random
    bytes, a flatbuffer or a zip fail one of these in the first few bytes.
    """
    seen: set[int] = set()
    pos = 0
    try:
        while pos < len(blob):
            key, pos = _varint(blob, pos)
            number, wire = key >> 3, key & 7
            if number == 0 or _MODEL_FIELDS.get(number, wire) != wire:
                return False
            if wire == 0:
                _, pos = _varint(blob, pos)
            elif wire == 2:
                length, pos = _varint(blob, pos)
                pos += length
            elif wire in (1, 5):  # fixed64 / fixed32, allowed for fields a later ONNX may add
                pos += 8 if wire == 1 else 4
            else:  # groups (3, 4) and 6, 7 never appear in ONNX
                return False
            seen.add(number)
    except ValueError:
        return False
    return pos == len(blob) and {1, 7} <= seen


# In this order: the cheap, exact magic numbers first; ONNX, which has none, last.
_DETECTORS: tuple[tuple[GraphEncoding, Callable[[bytes], bool]], ...] = (
    (GraphEncoding.OPENVINO, is_openvino_ir),
    (GraphEncoding.TENSORFLOWLITE, _is_tflite),
    (GraphEncoding.GGML, _is_gguf),
    (GraphEncoding.PYTORCH, _is_torchscript),
    (GraphEncoding.ONNX, _is_onnx),
)


def detect_encoding(builders: Sequence[bytes]) -> GraphEncoding:
    """The encoding of the model in ``builders[0]``; unrecognised bytes are errno 2."""
    if not builders:
        raise InvalidEncoding("autodetect: no builders to detect a model format from")
    first = bytes(builders[0]) if not isinstance(builders[0], bytes) else builders[0]
    for encoding, matches in _DETECTORS:
        if matches(first):
            return encoding
    raise InvalidEncoding(
        f"autodetect: cannot recognise the model format of builder 0 ({len(first)} bytes); tried {TRIED}"
    )


def _registry_backend(encoding: GraphEncoding) -> Backend:
    from wasinn.backends import get_backend  # the registry imports this module lazily

    return get_backend(encoding)


class AutodetectBackend(Backend):
    encoding = GraphEncoding.AUTODETECT
    name = "autodetect"
    config_keys = frozenset({"device", "threads"})  # the detected backend checks its own

    def __init__(self, resolve: Callable[[GraphEncoding], Backend] = _registry_backend) -> None:
        self._resolve = resolve

    def load(
        self, builders: Sequence[bytes], target: ExecutionTarget, config: ModelConfig | None = None
    ) -> BackendGraph:
        backend = self._resolve(detect_encoding(builders))
        if config is not None:
            config.require_honoured(backend)
        return backend.load_graph(builders, target, config)
