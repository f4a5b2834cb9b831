"""``/v1/audio/transcriptions`` and ``/v1/audio/translations`` on a preloaded whisper model (spec §6.4).

The upload (multipart/form-data: ``file`` a 16 kHz 16-bit PCM WAV, as WasmEdge's whisper plugin
takes) goes to the whisper backend host-side, through the model's shared graph: metadata
(set_input index 1: ``language``, ``translate``, ``prompt``, ``temperature``) then the WAV,
compute, and the ``[HH:MM:SS.mmm --> HH:MM:SS.mmm] text`` lines the backend writes become
OpenAI's json, text, srt, vtt or verbose_json. The graph has one whisper.cpp context, so each
model transcribes one upload at a time (the others wait, up to ``--max-waiting``, then 503).
"""

from __future__ import annotations

import asyncio
import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from wasinn.core import NNError, SharedModel, Tensor, TensorType, WasinnError
from wasinn.serve.app import ServerState
from wasinn.serve.openai_protocol import RequestError, error_body

FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
_LINE = re.compile(r"\[(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\] ?(.*)")
# whisper's language codes → the lower-case English names OpenAI's verbose_json reports.
LANGUAGES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
}  # fmt: skip


@dataclass
class Segment:
    start: float
    end: float
    text: str  # whisper.cpp's own text, its leading space kept


@dataclass
class AudioModel:
    """A preloaded whisper model: its shared graph, used by one request at a time."""

    name: str
    shared: SharedModel
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0  # requests transcribing or waiting to


def parse_transcript(text: str) -> list[Segment]:
    segments = []
    for line in text.splitlines():
        found = _LINE.fullmatch(line)
        if found is None:
            continue
        h0, m0, s0, ms0, h1, m1, s1, ms1 = (int(part) for part in found.groups()[:8])
        segments.append(
            Segment(h0 * 3600 + m0 * 60 + s0 + ms0 / 1000, h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, found[9])
        )
    return segments


def _clock(seconds: float, mark: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{mark}{ms % 1000:03d}"


def srt(segments: Sequence[Segment]) -> str:
    return "".join(
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
        for i, s in enumerate(segments, 1)
    )


def vtt(segments: Sequence[Segment]) -> str:
    cues = "".join(f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n" for s in segments)
    return "WEBVTT\n\n" + cues


def _compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


class TooLarge(Exception):
    """A body over ``--max-body-bytes``: 413, as every route answers it."""


@dataclass(frozen=True)
class AudioRequest:
    audio: bytes
    model: str | None
    language: str | None
    prompt: str
    response_format: str
    temperature: float
    words: bool

    @classmethod
    async def parse(cls, request: Request, translate: bool, max_bytes: int) -> AudioRequest:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise RequestError("the body must be multipart/form-data with a file", "file")
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise TooLarge(f"the body of {length} bytes is over the limit of {max_bytes}")
        # A malformed multipart body is Starlette's HTTPException 400 (the server's JSON error).
        form = await request.form(max_files=1, max_fields=32, max_part_size=max_bytes)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise RequestError("file is required (an audio file)", "file")
            audio = await upload.read(max_bytes + 1)  # a chunked body has no length to check first
        finally:
            await form.close()  # the spooled upload's temporary file
        if len(audio) > max_bytes:
            raise TooLarge(f"the file is over the limit of {max_bytes} bytes")
        fields = {key: value for key, value in form.multi_items() if isinstance(value, str)}
        if fields.get("stream", "false").lower() not in ("false", "0", ""):
            raise RequestError("stream is not supported for transcriptions", "stream")
        response_format = fields.get("response_format", "json")
        if response_format not in FORMATS:
            raise RequestError(f"response_format must be one of {', '.join(FORMATS)}", "response_format")
        granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
        if any(value not in ("word", "segment") for value in granularities):
            raise RequestError("timestamp_granularities must be word or segment", "timestamp_granularities")
        words = "word" in granularities
        if words and response_format != "verbose_json":
            raise RequestError(
                "timestamp_granularities needs response_format verbose_json", "timestamp_granularities"
            )
        try:
            temperature = float(fields.get("temperature", 0) or 0)
        except ValueError:
            raise RequestError("temperature must be a number", "temperature") from None
        if not 0 <= temperature <= 1:
            raise RequestError("temperature must be from 0 to 1", "temperature")
        language = None if translate else (fields.get("language") or None)
        return cls(
            audio,
            fields.get("model"),
            language,
            fields.get("prompt", ""),
            response_format,
            temperature,
            words,
        )


def _run(model: AudioModel, audio: bytes, settings: dict[str, Any]) -> tuple[list[Segment], str]:
    """One transcription on the shared graph (in a worker thread): its segments and language."""
    import _pywhispercpp as pw

    with model.shared.lock:
        context = model.shared.graph.init_execution_context()
    try:
        meta = json.dumps(settings).encode()
        context.set_input(1, Tensor((len(meta),), TensorType.U8, np.frombuffer(meta, dtype=np.uint8)))
        wav = np.frombuffer(audio, dtype=np.uint8)
        context.set_input(0, Tensor((1, wav.size), TensorType.U8, wav))
        context.compute()
        text = bytes(context.get_output(0)).decode(errors="replace")
        whisper = getattr(model.shared.graph, "context", None)
        lang_id = int(pw.whisper_full_lang_id(whisper)) if whisper is not None else -1
        code = pw.whisper_lang_str(lang_id) if lang_id >= 0 else settings.get("language", "en")
    finally:
        context.release()
    return parse_transcript(text), str(code)


class AudioRoute:
    """``POST /v1/audio/transcriptions`` (or ``translations``): one upload, one transcript."""

    methods: Sequence[str] = ("POST",)

    def __init__(self, models: dict[str, AudioModel], state: ServerState, translate: bool) -> None:
        self.models, self.state, self.translate = models, state, translate
        self.task = "translate" if translate else "transcribe"
        self.path = f"/v1/audio/{'translations' if translate else 'transcriptions'}"
        self.metric_name = self.path.lstrip("/")

    async def handle(self, request: Request) -> Response:
        try:
            audio = await AudioRequest.parse(request, self.translate, self.state.max_body_bytes)
            model = self.models.get(audio.model or "") or (
                None if audio.model else next(iter(self.models.values()))
            )
            if model is None:
                served = ", ".join(self.models)
                return _error(
                    404, f"the model {audio.model!r} is not served here (served: {served})", "model"
                )
            return await self._answer(model, audio)
        except RequestError as err:
            return _error(400, str(err), err.param)
        except TooLarge as err:
            return _error(413, str(err), "file")

    async def _answer(self, model: AudioModel, audio: AudioRequest) -> Response:
        settings: dict[str, Any] = {
            "language": "en" if self.translate else (audio.language or "auto"),
            "translate": self.translate,
            "prompt": audio.prompt,
            "temperature": audio.temperature,
        }
        if model.waiting > self.state.max_waiting:  # one transcribing, max_waiting waiting
            return _error(503, f"{model.name}: too many audio requests waiting", None)
        model.waiting += 1
        try:
            async with model.lock:
                segments, language = await asyncio.to_thread(_run, model, audio.audio, settings)
                words = None
                if audio.words:  # one word per segment: whisper.cpp's max-len 1, split on words
                    split = {**settings, "max-len": 1, "split-on-word": True}
                    words, _ = await asyncio.to_thread(_run, model, audio.audio, split)
        except NNError as err:
            status = 400 if err.errno in (1, 2) else 500  # bad audio or settings: the client's
            return _error(status, str(err), "file" if status == 400 else None)
        except WasinnError as err:
            return _error(500, str(err), None)
        finally:
            model.waiting -= 1
        return self._format(audio, segments, language, words)

    def _format(
        self, audio: AudioRequest, segments: list[Segment], language: str, words: list[Segment] | None
    ) -> Response:
        text = "".join(s.text for s in segments).strip()
        kind = audio.response_format
        if kind == "text":
            return PlainTextResponse(text + "\n")
        if kind == "srt":
            return PlainTextResponse(srt(segments))
        if kind == "vtt":
            return PlainTextResponse(vtt(segments), media_type="text/vtt")
        if kind == "json":
            return JSONResponse({"text": text})
        duration = segments[-1].end if segments else 0.0
        body: dict[str, Any] = {
            "task": self.task,
            "language": LANGUAGES.get(language, language),
            "duration": duration,
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": [],
                    "temperature": audio.temperature,
                    "avg_logprob": 0.0,
                    "compression_ratio": _compression_ratio(s.text),
                    "no_speech_prob": 0.0,
                }
                for i, s in enumerate(segments)
            ],
        }
        if words is not None:
            body["words"] = [
                {"word": w.text.strip(), "start": w.start, "end": w.end} for w in words if w.text.strip()
            ]
        return JSONResponse(body)


def _error(status: int, message: str, param: str | None) -> Response:
    return JSONResponse(error_body(message, status, param), status_code=status)
