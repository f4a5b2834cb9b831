"""``wasinn serve --openai`` driven by the official ``openai`` Python client (llm-serving spec §7).

The server runs as a person runs it (a subprocess); the model is the tiny random llama with a
Hermes-style chat template written into its GGUF, so the prompt is the model's own template
and a forced tool call (``required``, named) or ``response_format`` comes out of the grammar
even from random weights.
"""

from __future__ import annotations

import io
import json
import re
import wave
from collections.abc import Iterator

import numpy as np
import pytest

from conftest import guest_wasm, require_module

require_module("openai")
require_module("starlette")
require_module("jinja2")

import httpx  # noqa: E402
import openai  # noqa: E402

from serve_helpers import start_server, stop_server  # noqa: E402
from wasinn.testing.tiny_gguf import TinyLlamaShape, VocabUnavailable, tiny_llama  # noqa: E402

# Qwen 2.5's way of offering tools, cut down: the tools as JSON in the system turn.
HERMES = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>{% for tool in tools %}{{ tool | tojson }}"
    '{% endfor %}</tools>\nCall one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n'
    "{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments }}}\n</tool_call>'
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SHAPE = TinyLlamaShape(chat_template=HERMES, eos_boost=6.0)
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"enum": ["Paris", "Oslo"]}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    require_module("llama_cpp")
    require_module("_pywhispercpp")
    from wasinn.testing.tiny_whisper import tiny_whisper

    try:
        model = tiny_llama(SHAPE)
    except VocabUnavailable as err:
        pytest.skip(str(err))
    process, base = start_server(
        "--nn-preload",
        f"tiny:GGML:AUTO:{model}",
        "--nn-preload",
        f"whisper:Whisper:AUTO:{tiny_whisper()}",
        "--openai",
        "tiny",
        "--openai",
        "whisper",
        "--openai-guest",
        str(guest_wasm("llm-serve")),
    )
    yield base
    stop_server(process)


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    listed = client.models.list().data
    assert (
        [m.id for m in listed] == ["tiny", "whisper"]
        and listed[0].object == "model"
        and listed[0].owned_by == "wasinn"
    )
    assert (
        listed[0].model_extra is not None and listed[0].model_extra["context_length"] == SHAPE.context_length
    )
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_chat_stream_and_usage_match_the_answer(client: openai.OpenAI, server: str) -> None:
    answer = client.chat.completions.create(model="tiny", messages=USER, temperature=0, max_tokens=5)  # type: ignore[arg-type]
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert (
        answer.usage is not None
        and answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    )
    assert answer.usage.completion_tokens <= 5
    chunks = list(
        client.chat.completions.create(
            model="tiny",
            messages=USER,  # type: ignore[arg-type]
            temperature=0,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({(c.id, c.created) for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage
    assert chunks[-2].choices[0].finish_reason == choice.finish_reason
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == choice.message.content
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny", messages=USER, n=2)  # type: ignore[arg-type]
    assert refused.value.body["message"] and refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    raw = httpx.post(
        f"{server}/v1/chat/completions", json={"messages": USER, "max_tokens": 2, "stream": True}
    )
    assert raw.text.endswith("data: [DONE]\n\n")


def test_completions_and_their_stream(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="tiny", prompt="Once upon a time", temperature=0, max_tokens=6)
    assert answer.object == "text_completion" and answer.choices[0].logprobs is None
    assert answer.usage is not None and answer.usage.completion_tokens <= 6
    chunks = list(
        client.completions.create(
            model="tiny",
            prompt="Once upon a time",
            temperature=0,
            max_tokens=6,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == answer.choices[0].text
    assert chunks[-1].usage == answer.usage
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x", echo=True)


def test_response_format_json_schema_validates(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}, "sure": {"type": "boolean"}},
        "required": ["answer", "sure"],
    }
    answer = client.chat.completions.create(
        model="tiny",
        messages=USER,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
    )
    document = json.loads(answer.choices[0].message.content or "")
    assert document["answer"] in ("yes", "no") and isinstance(document["sure"], bool) and len(document) == 2
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="tiny",
            messages=USER,  # type: ignore[arg-type]
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}},
        )
    # json_object: any object. A random model's free string rarely closes, so the answer is
    # only forced to start as one; llama-cpp-python's "schema" extension bounds it.
    loose = client.chat.completions.create(
        model="tiny",
        messages=USER,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=8,
        response_format={"type": "json_object"},
    )
    assert (loose.choices[0].message.content or "").startswith("{")
    bounded = client.chat.completions.create(
        model="tiny",
        messages=USER,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=40,
        response_format={"type": "json_object", "schema": schema},  # type: ignore[typeddict-unknown-key]
    )
    assert isinstance(json.loads(bounded.choices[0].message.content or ""), dict)


def test_required_and_named_tool_calls(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="tiny",
        messages=USER,
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=60,
        parallel_tool_calls=False,  # type: ignore[arg-type]
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    assert arguments["city"] in ("Paris", "Oslo") and arguments["unit"] in ("C", "F")
    stream = client.chat.completions.create(
        model="tiny",
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
        parallel_tool_calls=False,
        stream=True,
    )
    deltas = [c.choices[0] for c in stream if c.choices]
    heads = [d.delta.tool_calls[0] for d in deltas if d.delta.tool_calls and d.delta.tool_calls[0].id]
    assert len(heads) == 1 and heads[0].function.name == "get_weather" and heads[0].function.arguments == ""  # type: ignore[union-attr]
    joined = "".join(
        d.delta.tool_calls[0].function.arguments or ""  # type: ignore[union-attr]
        for d in deltas
        if d.delta.tool_calls
    )
    assert json.loads(joined) == arguments
    fragments = [d for d in deltas if d.delta.tool_calls and not d.delta.tool_calls[0].id]
    assert len(fragments) > 3  # the arguments came as they were generated, not in one piece
    assert not any("<tool_call" in (d.delta.content or "") for d in deltas)
    assert deltas[-1].finish_reason == "tool_calls"
    # The call goes back in the history, with a tool message; then tool_choice none.
    history = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
    ]
    after = client.chat.completions.create(
        model="tiny",
        messages=history,
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_tokens=4,  # type: ignore[arg-type]
    )
    assert not after.choices[0].message.tool_calls and after.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="tiny",
            messages=USER,  # type: ignore[arg-type]
            tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "nope"}},
        )


def wav(seconds: float = 2.0) -> bytes:
    """A 16 kHz 16-bit mono WAV, what WasmEdge's whisper plugin takes."""
    samples = (np.sin(np.arange(int(16000 * seconds)) / 10) * 12000).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


SRT_CUE = r"(\d+)\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.*\n\n"
VTT_CUE = r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n.*\n\n"


def test_transcriptions_verbose_json_with_words_and_srt(client: openai.OpenAI) -> None:
    """Each whisper run of the tiny model takes seconds on a busy machine: three here."""
    audio = ("a.wav", wav(), "audio/wav")
    verbose = client.audio.transcriptions.create(
        model="whisper",
        file=audio,
        response_format="verbose_json",
        language="en",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.segments, "the tiny whisper wrote no segment"
    starts = [s.start for s in verbose.segments]
    assert starts == sorted(starts) and all(s.end >= s.start for s in verbose.segments)
    assert verbose.text == "".join(s.text for s in verbose.segments).strip()
    assert verbose.language == "english" and verbose.duration == verbose.segments[-1].end
    assert verbose.words is not None and all(w.end >= w.start for w in verbose.words)
    # Other formats are the same segments formatted (tests/test_openai_audio.py); srt here
    # comes from another run (whisper.cpp's temperature fallback samples on a random model,
    # so the texts of two runs may differ).
    srt = client.audio.transcriptions.create(
        model="whisper", file=audio, response_format="srt", language="en"
    )
    assert isinstance(srt, str) and re.fullmatch(f"({SRT_CUE})+", srt)
    numbers = [int(n) for n in re.findall(SRT_CUE, srt)]
    assert numbers == list(range(1, len(numbers) + 1))


def test_translation_and_refusals(client: openai.OpenAI, server: str) -> None:
    audio = ("a.wav", wav(), "audio/wav")
    translated = client.audio.translations.create(model="whisper", file=audio, response_format="text")
    assert isinstance(translated, str) and translated.endswith("\n")
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper", file=audio, response_format="diarized_json")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper", file=audio, timestamp_granularities=["word"])
    refused = httpx.post(
        f"{server}/v1/audio/transcriptions",
        data={"model": "whisper", "stream": "true"},
        files={"file": audio},
    )
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as not_wav:
        client.audio.transcriptions.create(model="whisper", file=("a.wav", b"not a wav", "audio/wav"))
    assert not_wav.value.body["message"]  # type: ignore[index]


def test_prompt_tokens_are_the_rendered_template_with_one_bos(client: openai.OpenAI) -> None:
    """Case 9: usage.prompt_tokens counts the GGUF template's text tokenized with one BOS."""
    from llama_cpp import Llama

    from wasinn.serve.chat_template import ChatTemplate, read_vocabulary

    path = tiny_llama(SHAPE)
    prompt = ChatTemplate.for_model(read_vocabulary(path)).prompt(USER)
    assert prompt.startswith("<|im_start|>user\nWhat is the weather")
    vocab = Llama(str(path), vocab_only=True, verbose=False)
    expected = vocab.tokenize(prompt.encode(), add_bos=True, special=True)
    assert expected.count(vocab.token_bos()) == 1
    answer = client.chat.completions.create(model="tiny", messages=USER, max_tokens=1)  # type: ignore[arg-type]
    assert answer.usage is not None and answer.usage.prompt_tokens == len(expected)
