"""OpenAI's request and response shapes, and the llm-serve guest's line protocol; no web framework.

Requests become the guest's arguments and stdin (the prompt); the guest's stdout lines
(``text <hex>``, ``embedding <json>``, ``done <reason> <prompt tokens> <completion tokens>``,
see examples/c/llm-serve.c) become OpenAI responses or stream chunks.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_STOPS = 4  # as OpenAI
MAX_INPUTS = 2048  # embedding inputs per request, as OpenAI
# The graph config the embedding guest loads its model with (a second graph of the model).
EMBEDDING_CONFIG = '{"embedding": true}'


class RequestError(Exception):
    """A request OpenAI would refuse with 400; ``param`` names the offending field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, an int of over 4,300 digits
        raise RequestError(f"the body is not valid JSON: {err}") from None
    except RecursionError:
        raise RequestError("the body is not JSON this server reads: it is nested too deeply") from None
    if ESCAPED_SURROGATE.search(body) and _lone_surrogate(parsed):
        # Valid JSON, but no UTF-8 text: the guest's prompt (and arguments) are UTF-8 bytes.
        raise RequestError("the body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not text")
    if not isinstance(parsed, dict):
        raise RequestError(f"the body must be a JSON object, got {type(parsed).__name__}")
    return parsed


# A surrogate reaches a parsed string only through a \uXXXX escape; paired ones become one
# character, so only where this matches can a lone one be left.
ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def _lone_surrogate(document: Any) -> bool:
    """Whether any string of the parsed document (keys too) cannot be encoded as UTF-8."""
    stack = [document]
    while stack:  # not recursive: the document may be nested nearly as deep as the parser allows
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
    return False


def _shown(value: Any) -> str:
    """A field's value for an error message: a scalar as JSON (its start), a container by kind."""
    if isinstance(value, list | dict):
        return "an array" if isinstance(value, list) else "an object"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _number(request: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = request.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"{key} must be a number from {low:g} to {high:g}, got {_shown(value)}", key)
    return float(value)


def _optional_int(request: dict[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = request.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        within = f"of at least {low}" if high is None else f"from {low} to {high}"
        raise RequestError(f"{key} must be an integer {within}, got {_shown(value)}", key)
    return value


_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def _checked_message(message: Any, index: int) -> dict[str, Any]:
    """A message as the chat template gets it: its role and text content checked, kept as sent."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise RequestError(f"{where} must be an object with a role and content", "messages")
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or not role:
        raise RequestError(f"{where}.role must be a non-empty string", "messages")
    if isinstance(content, list):
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise RequestError(f"{where}.content: only text parts are supported", "messages")
    elif content is not None and not isinstance(content, str):
        raise RequestError(f"{where}.content must be a string or a list of text parts", "messages")
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise RequestError(f"{where}.tool_calls must be a list", "messages")
    return {key: message[key] for key in _MESSAGE_KEYS if key in message}


def chat_messages(messages: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    return tuple(map(_checked_message, messages, range(len(messages))))


@dataclass(frozen=True)
class ChatRequest:
    model: str | None
    messages: tuple[dict[str, Any], ...]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    stops: tuple[str, ...]
    sampling: dict[str, float | int] = field(default_factory=dict)

    @classmethod
    def parse(cls, request: dict[str, Any]) -> ChatRequest:
        n = request.get("n", 1)
        if n != 1:
            raise RequestError(f"n must be 1 (one choice per request), got {_shown(n)}", "n")
        stream = request.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError("stream must be true or false", "stream")
        options = request.get("stream_options") or {}
        if not isinstance(options, dict):
            raise RequestError("stream_options must be an object", "stream_options")
        max_tokens = _optional_int(request, "max_completion_tokens", 0)
        if max_tokens is None:
            max_tokens = _optional_int(request, "max_tokens", 0)
        # The backend takes a seed as a 64-bit integer; past it the guest's set_input failed, a 500.
        seed = _optional_int(request, "seed", -(2**63), 2**63 - 1)
        sampling: dict[str, float | int] = {
            # Every request sets every key: the model's graph keeps the last request's values.
            "temp": _number(request, "temperature", 1.0, 0.0, 2.0),
            "top-p": _number(request, "top_p", 1.0, 0.0, 1.0),
            "presence-penalty": _number(request, "presence_penalty", 0.0, -2.0, 2.0),
            "frequency-penalty": _number(request, "frequency_penalty", 0.0, -2.0, 2.0),
            "seed": -1 if seed is None else seed,
        }
        return cls(
            model=_model_field(request),
            messages=chat_messages(request.get("messages")),
            stream=stream,
            include_usage=bool(options.get("include_usage", False)),
            max_tokens=max_tokens,
            stops=_stops(request.get("stop")),
            sampling=sampling,
        )

    def guest_args(
        self, model: str, grammar: str = "", stops: tuple[str, ...] = (), max_tokens: int | None = None
    ) -> list[str]:
        """The guest's arguments: every sampling key and the grammar ("" for none) each time."""
        args = ["--meta", json.dumps({**self.sampling, "grammar": grammar})]
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        if max_tokens is not None:
            args += ["--max-tokens", str(max_tokens)]
        for stop in (*self.stops, *stops):
            args += ["--stop", stop]
        return [*args, model]


def _model_field(request: dict[str, Any]) -> str | None:
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("model must be a string", "model")
    return model or None


def _stops(value: Any) -> tuple[str, ...]:
    stops = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise RequestError(f"stop must be a string or a list of at most {MAX_STOPS} strings", "stop")
    if any("\x00" in stop for stop in stops):  # the guest's --stop is a C string: it would stop sooner
        raise RequestError("stop strings cannot hold NUL", "stop")
    return tuple(stop for stop in stops if stop)


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str | None
    inputs: tuple[str, ...]
    base64: bool

    @classmethod
    def parse(cls, request: dict[str, Any]) -> EmbeddingRequest:
        value = request.get("input")
        inputs = [value] if isinstance(value, str) else value
        if not isinstance(inputs, list) or not inputs or not all(isinstance(text, str) for text in inputs):
            raise RequestError("input must be a string or a non-empty list of strings (not tokens)", "input")
        if len(inputs) > MAX_INPUTS:  # one guest run each, one after the other, holding the model
            raise RequestError(f"input holds {len(inputs)} strings; at most {MAX_INPUTS} a request", "input")
        encoding = request.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise RequestError("encoding_format must be float or base64", "encoding_format")
        return cls(_model_field(request), tuple(inputs), encoding == "base64")


# ------------------------------------------------------------------ the guest's output


@dataclass(frozen=True)
class Done:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class GuestLines:
    """Turns the guest's stdout, in chunks as they come, into text pieces, embeddings and the end."""

    def __init__(self) -> None:
        self._pending = b""
        self.done: Done | None = None

    def feed(self, chunk: bytes) -> Iterator[bytes | list[float]]:
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            kind, _, rest = line.partition(b" ")
            if kind == b"text":
                yield bytes.fromhex(rest.decode("ascii"))
            elif kind == b"embedding":
                vector: list[float] = json.loads(rest)["embedding"]
                yield vector
            elif kind == b"done":
                reason, prompt, completion = rest.decode("ascii").split()
                self.done = Done(reason, int(prompt), int(completion))


def parse_guest_output(stdout: bytes) -> tuple[bytes, list[list[float]], Done]:
    """A finished guest's whole stdout: the text, the embeddings and its last line."""
    lines = GuestLines()
    text, vectors = bytearray(), []
    for item in lines.feed(stdout):
        if isinstance(item, bytes):
            text += item
        else:
            vectors.append(item)
    if lines.done is None:
        raise ValueError("the guest ended without its done line")
    return bytes(text), vectors, lines.done


# ------------------------------------------------------------------ responses


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    ident: str, model: str, text: str | None, done: Done, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": done.finish_reason,
            }
        ],
        "usage": usage(done.prompt_tokens, done.completion_tokens),
    }


def chat_chunk(
    ident: str,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def usage_chunk(ident: str, model: str, done: Done, created: int | None = None) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [],
        "usage": usage(done.prompt_tokens, done.completion_tokens),
    }


def sse(event: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def embedding_item(index: int, vector: list[float], as_base64: bool) -> dict[str, Any]:
    value: list[float] | str = vector
    if as_base64:  # what the openai Python client asks for: little-endian float32
        value = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return {"object": "embedding", "index": index, "embedding": value}


def embeddings_response(model: str, items: list[dict[str, Any]], prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def error_body(
    message: str, status: int, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
