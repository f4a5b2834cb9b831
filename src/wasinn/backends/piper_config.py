"""Piper's run config and per-input JSON as WasmEdge reads them, and its WAV header.

Types are strict, as WasmEdge's simdjson reads (genai-tts spec §4.1): a wrong JSON type is
errno 1, unknown keys are ignored (the example's stale ``speaker``, ``sentence_silence`` …).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import piper

from wasinn.core import InvalidArgument, InvalidEncoding

OUTPUT_TYPES = ("wav", "raw")
EMPTY_WAV_RATE = 22050  # libpiper's header when no sample was produced
_NUMBERS = ("noise_scale", "length_scale", "noise_w")


@dataclass(frozen=True)
class RunConfig:
    model: str
    config: str | None = None
    espeak_data: str | None = None
    json_input: bool = False
    output_type: str | None = None
    speaker_id: int | None = None
    noise_scale: float | None = None
    length_scale: float | None = None
    noise_w: float | None = None


def _string(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(f"piper: run config {key!r} must be a string, got {value!r}")
    return value


def check_synthesis_keys(fields: dict[str, Any], where: str) -> None:
    """The keys a run config and a JSON input share; wrong types are errno 1."""
    output_type = fields.get("output_type")
    if output_type is not None and output_type not in OUTPUT_TYPES:
        raise InvalidArgument(f"piper: {where} output_type must be 'wav' or 'raw', got {output_type!r}")
    speaker = fields.get("speaker_id")
    if speaker is not None and (type(speaker) is not int or not -(2**63) <= speaker < 2**63):
        raise InvalidArgument(f"piper: {where} speaker_id must be an integer, got {speaker!r}")
    for key in _NUMBERS:
        value = fields.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidArgument(f"piper: {where} {key} must be a number, got {value!r}")


def parse_run_config(raw: bytes) -> RunConfig:
    """The load builder: not JSON → 2; not an object, a missing model, a wrong type → 1."""
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidEncoding(f"piper: the run config is not valid JSON: {err}") from None
    if not isinstance(fields, dict):
        raise InvalidArgument(f"piper: the run config must be a JSON object, got {type(fields).__name__}")
    model = _string(fields, "model")
    if model is None:
        raise InvalidArgument("piper: the run config needs 'model' (the voice's .onnx path)")
    json_input = fields.get("json_input", False)
    if not isinstance(json_input, bool):
        raise InvalidArgument(f"piper: run config json_input must be a boolean, got {json_input!r}")
    check_synthesis_keys(fields, "run config")
    return RunConfig(
        model=model,
        config=_string(fields, "config"),
        espeak_data=_string(fields, "espeak_data"),
        json_input=json_input,
        output_type=fields.get("output_type"),
        speaker_id=fields.get("speaker_id"),
        noise_scale=fields.get("noise_scale"),
        length_scale=fields.get("length_scale"),
        noise_w=fields.get("noise_w"),
    )


def synthesis_options(run: RunConfig, line: dict[str, Any]) -> tuple[piper.SynthesisConfig, str]:
    """piper's ``SynthesisConfig`` and the output type: voice JSON ← run config ← this input.

    Overrides of one input do not stick to the next (WasmEdge's test). ``speaker_id`` defaults
    to 0 (piper-tts would use the voice's ``default_speaker_id``), and the audio is not
    normalised (libpiper does not normalise; piper-tts does by default).
    """

    def pick(key: str) -> Any:
        value = line.get(key)
        return value if value is not None else getattr(run, key)

    speaker = pick("speaker_id")
    options = piper.SynthesisConfig(
        speaker_id=int(speaker) if speaker is not None else 0,
        length_scale=pick("length_scale"),
        noise_scale=pick("noise_scale"),
        noise_w_scale=pick("noise_w"),
        normalize_audio=False,
    )
    output_type = pick("output_type") or "wav"
    return options, output_type


def wav_bytes(samples: bytes, rate: int | None) -> bytes:
    """libpiper's 44-byte header (PCM, mono, 16-bit) and the samples."""
    rate = rate if rate is not None else EMPTY_WAV_RATE
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(samples),
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        len(samples),
    )
    return header + samples
