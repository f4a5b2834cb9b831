"""The guest's side of the text backends (Piper, OpenVINO GenAI) through the WAT probe guest:
every call crosses wasm → ``wasi_ephemeral_nn`` → host as a compiled guest's would."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from conftest import Probe

U8, I32 = 3, 4
PIPER, CHATTTS, GENAI = 11, 12, 13
OUT_MAX = 1 << 16  # a guest's output buffer, big enough for the tests' outputs


class TextGuest:
    """A probe with room for the outputs; graph and context handles at fixed addresses."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.written = probe.put(b"\0" * 8)
        self.buffer = probe.put(b"\0" * OUT_MAX)

    def load(self, encoding: int, blobs: Sequence[bytes], target: int = 0) -> tuple[int, int]:
        """(errno, graph handle)."""
        errno = self.probe.load(encoding, blobs, target)
        return errno, self.probe.u32(Probe.HANDLE)

    def load_by_name(self, name: str, config: bytes | None = None) -> tuple[int, int]:
        name_ptr, name_len = self.probe.string(name)
        if config is None:
            errno = self.probe.call("load_by_name", name_ptr, name_len, Probe.HANDLE)
        else:
            config_ptr = self.probe.put(config)
            errno = self.probe.call(
                "load_by_name_with_config", name_ptr, name_len, config_ptr, len(config), Probe.HANDLE
            )
        return errno, self.probe.u32(Probe.HANDLE)

    def context(self, graph: int) -> int:
        assert self.probe.call("init_execution_context", graph, Probe.HANDLE + 4) == 0
        return self.probe.u32(Probe.HANDLE + 4)

    def set_input(
        self, context: int, data: bytes, index: int = 0, dims: Sequence[int] | None = None, kind: int = U8
    ) -> int:
        tensor = self.probe.tensor(list(dims) if dims is not None else [len(data)], kind, data)
        return self.probe.call("set_input", context, index, tensor)

    def compute(self, context: int) -> int:
        return self.probe.call("compute", context)

    def get_output(self, context: int, index: int = 0, size: int = OUT_MAX) -> tuple[int, bytes]:
        """(errno, bytes); on errno 7 the bytes are empty and :meth:`needed` holds the size."""
        errno = self.probe.call("get_output", context, index, self.buffer, size, self.written)
        length = self.probe.u32(self.written)
        return errno, self.probe.read(self.buffer, length) if errno == 0 else b""

    def needed(self) -> int:
        return self.probe.u32(self.written)

    def run(self, context: int, data: bytes) -> tuple[int, bytes]:
        """set_input, compute, get_output: the first failing errno, or (0, output)."""
        for errno in (self.set_input(context, data), self.compute(context)):
            if errno:
                return errno, b""
        return self.get_output(context)


def wav_header(data_bytes: int, rate: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, rate, 2 * rate, 2, 16,
        b"data", data_bytes,
    )  # fmt: skip
