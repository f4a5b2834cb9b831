"""``wasinn serve --openai``: /v1/chat/completions (JSON and SSE) and /v1/embeddings on a GGML guest.

The tiny random llama (wasinn.testing.tiny_gguf) is preloaded; every answer runs the
llm-serve guest (examples/c/llm-serve.c) through the ggml backend and is compared with
llama-cpp-python called natively on the same prompt (greedy decoding at temperature 0).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import guest_wasm, require_module
from test_ggml import Native

require_module("starlette")
require_module("httpx")

import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from serve_helpers import start_server, stop_server  # noqa: E402
from wasinn.core import ConfigError  # noqa: E402
from wasinn.serve.chat_template import CHATML  # noqa: E402
from wasinn.serve.config import ServeConfig  # noqa: E402
from wasinn.serve.server import build_app  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Once upon a time,"},
]
MAX_TOKENS = 12


def config(model: Path, **options: Any) -> ServeConfig:
    return ServeConfig(
        openai=("tiny",),
        openai_guest=guest_wasm("llm-serve"),
        preload=(f"tiny:GGML:AUTO:{model}",),
        cache=False,
        **options,
    )


@pytest.fixture(scope="module")
def client(tiny_model: Path) -> Iterator[TestClient]:
    with TestClient(build_app(config(tiny_model))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def native(tiny_model: Path) -> Iterator[Native]:
    reference = Native(tiny_model)
    yield reference
    reference.close()


def chat(client: TestClient, **fields: Any) -> httpx.Response:
    body = {"model": "tiny", "messages": MESSAGES, "temperature": 0, "max_tokens": MAX_TOKENS, **fields}
    return client.post("/v1/chat/completions", json=body)


def sse_events(text: str) -> list[Any]:
    """``data: {...}\\n\\n`` events, the last ``[DONE]``; nothing else in the stream."""
    assert text.endswith("\n\n")
    events: list[Any] = []
    for block in text.removesuffix("\n\n").split("\n\n"):
        assert block.startswith("data: "), block
        payload = block.removeprefix("data: ")
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


# The tiny llama's GGUF has no tokenizer.chat_template: chats are rendered as ChatML.
CHATML_PROMPT = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nOnce upon a time,<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_a_model_without_a_template_is_rendered_as_chatml() -> None:
    assert "<|im_start|>" in CHATML


def test_completion_text_and_usage_equal_native_greedy(client: TestClient, native: Native) -> None:
    response = chat(client)
    assert response.status_code == 200, response.text
    answer = response.json()
    prompt = CHATML_PROMPT.encode()
    tokens, text = native.greedy(prompt, MAX_TOKENS)
    eos = native.llm._model.token_eos()
    generated = [token for token in tokens if token != eos]
    choice = answer["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": text.decode(errors="replace")}
    assert choice["finish_reason"] == ("length" if len(generated) == MAX_TOKENS else "stop")
    assert answer["usage"] == {
        "prompt_tokens": len(native.tokens(prompt)),
        "completion_tokens": len(generated),
        "total_tokens": len(native.tokens(prompt)) + len(generated),
    }
    assert answer["object"] == "chat.completion" and answer["model"] == "tiny"
    assert answer["id"].startswith("chatcmpl-")


def test_the_stream_is_server_sent_events_whose_deltas_make_the_same_text(client: TestClient) -> None:
    whole = chat(client).json()
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": MESSAGES,
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [chunk["choices"][0]["delta"].get("content", "") for chunk in chunks[1:-2]]
    assert len(deltas) > 1  # token by token, not one block
    assert "".join(deltas) == whole["choices"][0]["message"]["content"]
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_stop_strings_end_the_text_before_them(client: TestClient) -> None:
    text = chat(client).json()["choices"][0]["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    answer = chat(client, stop=[stop]).json()["choices"][0]
    assert answer["message"]["content"] == text[: text.index(stop)]
    assert answer["finish_reason"] == "stop"
    streamed = chat(client, stop=stop, stream=True).text
    deltas = [event["choices"][0]["delta"].get("content", "") for event in sse_events(streamed)[:-1]]
    assert "".join(deltas) == text[: text.index(stop)]


def test_a_stream_holds_back_only_what_could_begin_a_stop_string(client: TestClient) -> None:
    """A stop string that never comes changes nothing: every token's text goes out as it is
    made (the guest once held back the stop's length minus one byte, so the first delta of a
    chat waited for several tokens)."""

    def deltas(**extra: Any) -> list[str]:
        events = sse_events(chat(client, stream=True, **extra).text)[:-1]
        return [event["choices"][0]["delta"].get("content", "") for event in events if event["choices"]]

    plain = deltas()
    assert deltas(stop=["\x07 a stop string that never comes"]) == plain
    assert len([delta for delta in plain if delta]) > 5


def native_embedding(model: Path, text: str) -> np.ndarray[Any, Any]:
    from llama_cpp import Llama

    # flash attention as llama.cpp's default (auto) picks it on the CPU, as the server's graph does
    llm = Llama(model_path=str(model), embedding=True, n_ctx=0, n_threads=1, flash_attn=True, verbose=False)
    try:
        vector = np.asarray(llm.embed(text, normalize=True))
    finally:
        llm.close()
    return vector[-1] if vector.ndim == 2 else vector


def test_embeddings_equal_native(client: TestClient, tiny_model: Path, native: Native) -> None:
    inputs = ["Once upon a time,", "the end"]
    response = client.post("/v1/embeddings", json={"model": "tiny", "input": inputs})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "list" and answer["model"] == "tiny"
    assert [item["index"] for item in answer["data"]] == [0, 1]
    for item, text in zip(answer["data"], inputs, strict=True):
        np.testing.assert_allclose(
            item["embedding"], native_embedding(tiny_model, text), rtol=1e-4, atol=1e-5
        )
    tokens = sum(len(native.tokens(text.encode())) for text in inputs)
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    # The openai client asks for base64: little-endian float32
    packed = client.post("/v1/embeddings", json={"input": inputs[0], "encoding_format": "base64"}).json()
    vector = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, answer["data"][0]["embedding"], rtol=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", b"{not json", 400, None),
        ("/v1/chat/completions", b"[1, 2]", 400, None),
        ("/v1/chat/completions", b'{"messages": []}', 400, "messages"),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}], "n": 2}', 400, "n"),
        ("/v1/chat/completions", b'{"messages": [{"content": "hi"}]}', 400, "messages"),
        (
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            400,
            "temperature",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model",
        ),
        ("/v1/embeddings", b"{bad", 400, None),
        ("/v1/embeddings", b'{"input": [1, 2, 3]}', 400, "input"),
    ],
)
def test_bad_requests_are_one_line_json_errors(
    client: TestClient, path: str, body: bytes, status: int, param: str | None
) -> None:
    response = client.post(path, content=body)
    assert response.status_code == status
    assert "\n" not in response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_failing_guest_is_an_error_and_the_server_keeps_serving(client: TestClient) -> None:
    too_long = [{"role": "user", "content": "word " * 300}]  # over the 256-token context
    for stream in (False, True):
        refused = chat(client, messages=too_long, stream=stream)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == (
            "llm-serve: the prompt is longer than the model's context allows (compute_single: errno 102)"
        )
        assert refused.json()["error"]["code"] == 65
    empty = client.post("/v1/embeddings", json={"input": ""})
    assert empty.status_code == 400 and empty.json()["error"]["message"] == "llm-serve: the prompt is empty"
    assert chat(client).status_code == 200
    assert client.post("/v1/embeddings", json={"input": "again"}).status_code == 200


def test_models_health_and_metrics(client: TestClient) -> None:
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    assert "/v1/chat/completions" in client.get("/healthz").json()["routes"]
    chat(client)
    assert 'wasinn_requests_total{route="v1/chat/completions",status="200"}' in client.get("/metrics").text


def test_openai_needs_a_preloaded_ggml_model(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="no --nn-preload model of that name"):
        build_app(
            ServeConfig(
                openai=("other",),
                openai_guest=guest_wasm("llm-serve"),
                preload=(f"tiny:GGML:AUTO:{tiny_model}",),
            )
        )


def test_the_command_line_streams_over_http(tiny_model: Path) -> None:
    process, base = start_server(
        "--nn-preload",
        f"tiny:GGML:AUTO:{tiny_model}",
        "--openai",
        "tiny",
        "--openai-guest",
        str(guest_wasm("llm-serve")),
        # a long stream (the tiny model makes a token in ~0.3 ms): still going when /metrics
        # answers, and long enough to arrive in many reads
        "--ctx-size",
        "4096",
    )
    try:
        body = {"messages": MESSAGES, "temperature": 0, "max_tokens": MAX_TOKENS, "stream": True}
        arrivals: list[tuple[float, str]] = []
        running_at_first_token = -1
        long = {**body, "max_tokens": 3000}
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=long, timeout=60) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if not line:
                    continue
                arrivals.append((time.perf_counter(), line))
                if running_at_first_token < 0 and '"content":"' in line and '"role"' not in line:
                    metrics = httpx.get(f"{base}/metrics", timeout=10).text
                    running_at_first_token = int(
                        metrics.split('wasinn_guests_running{pool="openai-tiny-chat"} ')[1].split()[0]
                    )
        lines = [line for _, line in arrivals]
        assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
        # Tokens arrive as the guest makes them: the first while the guest is still generating
        # (3,000 tokens take ~1 s), and the rest in many separate reads, not one at the end.
        assert running_at_first_token == 1
        contents = [when for when, line in arrivals if '"content":"' in line and '"role"' not in line]
        bursts = 1 + sum(later - earlier > 0.002 for earlier, later in pairwise(contents))
        print("BURSTS", len(contents), bursts)
        assert len(contents) >= 100 and bursts >= 5, (len(contents), bursts)
        # a client that leaves mid-stream does not stop the server
        with httpx.stream(
            "POST", f"{base}/v1/chat/completions", json={**body, "max_tokens": 200}, timeout=60
        ) as left:
            next(left.iter_lines())
        again = httpx.post(f"{base}/v1/chat/completions", json={**body, "stream": False}, timeout=60)
        assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] == MAX_TOKENS
    finally:
        stop_server(process)


def test_chat_template_override_and_its_raise_exception_is_a_400(
    tiny_model: Path, tmp_path: Path, native: Native
) -> None:
    """``--chat-template FILE``: its text is the prompt; a refusal from it is a 400 with its message."""
    template = tmp_path / "strict.jinja"
    template.write_text(
        "{% for m in messages %}{% if m.role == 'assistant' and loop.first %}"
        "{{ raise_exception('Conversation must start with the user') }}{% endif %}"
        "[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    )
    with TestClient(build_app(config(tiny_model, chat_template=template))) as own:
        refused = chat(own, messages=[{"role": "assistant", "content": "Hi"}])
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == "Conversation must start with the user"
        assert refused.json()["error"]["type"] == "invalid_request_error"
        answer = chat(own, messages=MESSAGES[1:], max_tokens=1).json()
    prompt = b"[user] Once upon a time,\n"
    assert answer["usage"]["prompt_tokens"] == len(native.tokens(prompt))  # one BOS, added by the backend


def test_a_model_without_tool_markers_calls_tools_in_the_generic_json(client: TestClient) -> None:
    """The tiny llama has no template (ChatML): Generic format, the call forced by the grammar."""
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"enum": ["Paris", "Oslo"]}},
                "required": ["city"],
            },
        },
    }
    answer = chat(client, tools=[weather], tool_choice="required", max_tokens=60, parallel_tool_calls=False)
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"] in ("Paris", "Oslo")
