"""Tool calls parsed from the model formats (llm-serving spec §4, conformance cases 13-26)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wasinn.serve.openai_protocol import RequestError
from wasinn.serve.tool_calls import ToolFormat, ToolRequest, detect_format, parse_calls
from wasinn.serve.tool_stream import ToolStream, call_deltas

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def test_the_format_is_detected_from_the_template_source() -> None:
    assert detect_format("{{ '<tool_call>' }}") is ToolFormat.HERMES
    assert detect_format("<|start_header_id|>ipython<|end_header_id|>") is ToolFormat.LLAMA3
    assert detect_format("[TOOL_CALLS]") is ToolFormat.MISTRAL
    assert detect_format("{{ messages }}") is ToolFormat.GENERIC
    assert detect_format("[TOOL_CALLS]", with_schema=True) is ToolFormat.GENERIC


def test_hermes_one_call_two_calls_and_content_before() -> None:
    one = parse_calls(ToolFormat.HERMES, f"<tool_call>\n{WEATHER}\n</tool_call>")
    assert one.content is None and len(one.calls) == 1
    assert one.calls[0].name == "get_weather" and json.loads(one.calls[0].arguments) == {"city": "Paris"}
    assert one.calls[0].id.startswith("call_") and len(one.calls[0].id) == 29
    two = parse_calls(
        ToolFormat.HERMES, f"Let me see.\n<tool_call>{WEATHER}</tool_call>\n<tool_call>{WEATHER}</tool_call>"
    )
    assert two.content == "Let me see." and len(two.calls) == 2 and two.calls[0].id != two.calls[1].id
    single = parse_calls(
        ToolFormat.HERMES, f"<tool_call>{WEATHER}</tool_call><tool_call>{WEATHER}</tool_call>", False
    )
    assert len(single.calls) == 1


def test_llama3_parameters_and_prose_first() -> None:
    parsed = parse_calls(ToolFormat.LLAMA3, ' {"name": "get_weather", "parameters": {"city": "Oslo"}}')
    assert parsed.content is None and parsed.calls[0].arguments == '{"city":"Oslo"}'
    prose = parse_calls(ToolFormat.LLAMA3, 'Sure: {"name": "get_weather", "parameters": {}}')
    assert prose.calls == [] and prose.content == 'Sure: {"name": "get_weather", "parameters": {}}'


def test_mistral_keeps_the_model_id_and_reads_the_newer_syntax() -> None:
    parsed = parse_calls(
        ToolFormat.MISTRAL,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}, "id": "abc123XYZ"}]',
    )
    assert parsed.calls[0].id == "abc123XYZ"
    newer = parse_calls(ToolFormat.MISTRAL, '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}')
    assert (
        newer.calls[0].name == "get_weather" and len(newer.calls[0].id) == 9 and newer.calls[0].id.isalnum()
    )


def test_generic_call_and_response() -> None:
    call = parse_calls(ToolFormat.GENERIC, json.dumps({"tool_call": json.loads(WEATHER)}))
    assert call.calls[0].name == "get_weather"
    answer = parse_calls(ToolFormat.GENERIC, '{"response": "hi"}')
    assert answer.content == "hi" and answer.calls == []


def test_a_malformed_call_is_content() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
    parsed = parse_calls(ToolFormat.HERMES, text)
    assert parsed.calls == [] and parsed.content == text


def joined(deltas: list[dict[str, Any]]) -> tuple[str, dict[int, dict[str, str]]]:
    """The content and each call (id, name, arguments) the deltas add up to."""
    content, calls = "", {}
    for delta in deltas:
        content += delta.get("content", "")
        for part in delta.get("tool_calls", []):
            call = calls.setdefault(part["index"], {"id": "", "name": "", "arguments": ""})
            if "id" in part:
                assert not call["id"] and part["type"] == "function" and part["function"]["arguments"] == ""
                call["id"], call["name"] = part["id"], part["function"]["name"]
            else:
                assert call["id"], "arguments before the call's head"
            call["arguments"] += part["function"]["arguments"]
    return content, calls


@pytest.mark.parametrize("step", [1, 3, 7])
def test_streamed_deltas_join_to_the_parsed_answer(step: int) -> None:
    text = (
        "Checking.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Pa ris", "q": "a\\"}b"}}\n</tool_call>\n'
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    )
    stream = ToolStream(ToolFormat.HERMES, True)
    deltas = [delta for at in range(0, len(text), step) for delta in stream.feed(text[at : at + step])]
    streamed_early = [d for d in deltas if "tool_calls" in d]
    last, called = stream.finish()
    content, calls = joined(deltas + last)
    final = parse_calls(ToolFormat.HERMES, text)
    assert called and content == final.content == "Checking."
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.name, c.arguments) for c in final.calls
    ]
    assert json.loads(calls[0]["arguments"]) == {"city": "Pa ris", "q": 'a"}b'}
    assert len(streamed_early) >= 3 and not last  # both calls went out while generated, not at the end
    assert not any("<" in d.get("content", "") for d in deltas)


def test_a_partial_trigger_is_held_back_then_released_as_content() -> None:
    plain = ToolStream(ToolFormat.HERMES, True)
    deltas = [d for piece in ("a <", "b> c ", "<tool") for d in plain.feed(piece)]
    last, called = plain.finish()
    assert not called and joined(deltas + last)[0] == "a <b> c <tool"


def test_llama3_and_mistral_streams() -> None:
    llama = ToolStream(ToolFormat.LLAMA3, True)
    text = '{"name": "get_weather", "parameters": {"city": "Oslo"}}'
    deltas = [d for ch in text for d in llama.feed(ch)]
    last, called = llama.finish()
    assert called and joined(deltas + last)[1][0]["arguments"] == '{"city":"Oslo"}' and not last
    mistral = ToolStream(ToolFormat.MISTRAL, True)
    text = 'Sure.[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}, "id": "abc123XYZ"}]'
    deltas = [d for ch in text for d in mistral.feed(ch)]
    last, called = mistral.finish()
    content, calls = joined(deltas + last)
    assert (
        called and content == "Sure." and calls[0] == {"id": "abc123XYZ", "name": "f", "arguments": '{"x":1}'}
    )


def test_call_deltas_are_a_head_then_the_arguments() -> None:
    calls = parse_calls(ToolFormat.HERMES, f"<tool_call>{WEATHER}</tool_call>").calls
    deltas = call_deltas(calls)
    assert deltas[0]["tool_calls"][0] == {
        "index": 0,
        "id": calls[0].id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert deltas[1]["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"city":"Paris"}'}}


def test_tool_choice_checks() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    named = ToolRequest.parse(
        {"tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    )
    assert named is not None and named.name == "get_weather"
    with pytest.raises(RequestError, match="not in tools"):
        ToolRequest.parse({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    none = ToolRequest.parse({"tools": tools, "tool_choice": "none"})
    assert none is not None and not none.active and none.grammar(ToolFormat.HERMES) == ""
    assert ToolRequest.parse({"tools": tools}).grammar(ToolFormat.HERMES) == ""  # type: ignore[union-attr]
    required = ToolRequest.parse({"tools": tools, "tool_choice": "required"})
    assert required is not None and "<tool_call>" in required.grammar(ToolFormat.HERMES)


def test_a_history_with_a_call_and_its_result_renders_through_the_template() -> None:
    """Case 27: the assistant's call (arguments a JSON string) and the tool message reach the template."""
    from wasinn.serve.chat_template import ChatTemplate

    source = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% for c in m.tool_calls or [] %}"
        '<tool_call>{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments }}}'
        "</tool_call>{% endfor %}\n{% endfor %}"
    )
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    history = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert ChatTemplate(source, "", "", False).prompt(history) == (
        # trim_blocks: the newline after each {% endfor %} goes, as in llama-cpp-python
        '<|user|>Weather?<|assistant|><tool_call>{"name": "get_weather", "arguments": {"city":"Oslo"}}'
        "</tool_call><|tool|>sunny"
    )


def test_a_stream_whose_whole_text_fails_keeps_the_calls_it_sent_and_leaks_no_markup() -> None:
    stream = ToolStream(ToolFormat.HERMES, True)
    text = f"<tool_call>{WEATHER}</tool_call> and then prose"
    deltas = [d for ch in text for d in stream.feed(ch)]
    last, called = stream.finish()
    content, calls = joined(deltas + last)
    assert called and content == "" and calls[0]["name"] == "get_weather"
    assert parse_calls(ToolFormat.HERMES, text).calls == []  # not streamed: all content (§4.4)
