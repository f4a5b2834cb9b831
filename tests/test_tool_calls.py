"""Tool calls parsed from the model formats (llm-serving spec §4, conformance cases 13-26)."""

from __future__ import annotations

import json

import pytest

from wasinn.serve.openai_protocol import RequestError
from wasinn.serve.tool_calls import (
    ToolFormat,
    ToolRequest,
    ToolStream,
    call_deltas,
    detect_format,
    parse_calls,
)

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


def test_the_stream_holds_back_a_partial_trigger_and_sends_the_calls_at_the_end() -> None:
    text = f"Checking.\n<tool_call>\n{WEATHER}\n</tool_call>"
    stream = ToolStream(ToolFormat.HERMES, True)
    sent = [stream.feed(text[at : at + 3]) for at in range(0, len(text), 3)]
    assert "<" not in "".join(sent) and "".join(sent) == "Checking."
    rest, calls = stream.finish()
    assert rest == "" and len(calls) == 1
    deltas = call_deltas(calls)
    assert deltas[0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    assert (
        deltas[0]["tool_calls"][0]["id"] == calls[0].id and deltas[0]["tool_calls"][0]["type"] == "function"
    )
    assert deltas[1]["tool_calls"][0] == {"index": 0, "function": {"arguments": calls[0].arguments}}
    plain = ToolStream(ToolFormat.HERMES, True)
    shown = "".join(plain.feed(piece) for piece in ("a <", "b> c ", "<tool"))
    assert shown + plain.finish()[0] == "a <b> c <tool"


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
