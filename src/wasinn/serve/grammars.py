"""GBNF grammars for ``response_format`` and forced tool calls, from JSON schemas.

Made with llama-cpp-python's Python port of llama.cpp's converter (``llama_grammar``,
llm-serving spec §5) and handed to the GGML backend as its ``grammar`` metadata key, so the
sampler can only pick tokens that keep the output inside the schema. A schema the converter
cannot take (``not``, ``properties`` beside ``anyOf``, remote ``$ref``) is a 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wasinn.serve.openai_protocol import RequestError

JSON_OBJECT: dict[str, Any] = {"type": "object"}


def _converter() -> Any:
    from llama_cpp.llama_grammar import SchemaConverter

    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


def _visit(converter: Any, schema: Any, name: str, param: str) -> str:
    try:
        resolved = converter.resolve_refs(schema, "request")
        rule: str = converter.visit(resolved, name)
    except (AssertionError, ValueError, KeyError, TypeError, NotImplementedError, RecursionError) as err:
        raise RequestError(f"the JSON schema cannot be made into a grammar: {err!r}", param) from None
    return rule


def schema_grammar(schema: Any, param: str = "response_format") -> str:
    """The GBNF grammar of one JSON schema."""
    if not isinstance(schema, dict):
        raise RequestError("the JSON schema must be an object", param)
    converter = _converter()
    _visit(converter, schema, "", param)
    grammar: str = converter.format_grammar()
    return grammar


def response_format(request: Mapping[str, Any]) -> tuple[str, Any]:
    """The grammar and schema a request's ``response_format`` asks for; ("", None) for text."""
    value = request.get("response_format")
    if value is None:
        return "", None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return "", None
    if kind == "json_object":
        schema = value.get("schema") or JSON_OBJECT  # llama-cpp-python's non-standard schema key
        return schema_grammar(schema), schema
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            raise RequestError("response_format.json_schema.schema is required", "response_format")
        return schema_grammar(schema), schema
    raise RequestError("response_format.type must be text, json_object or json_schema", "response_format")


def _call_schema(function: Mapping[str, Any], arguments_key: str) -> dict[str, Any]:
    parameters = function.get("parameters") or JSON_OBJECT
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, arguments_key: parameters},
        "required": ["name", arguments_key],
    }


def call_grammar(
    form: str,
    functions: Sequence[Mapping[str, Any]],
    parallel: bool,
    may_answer: bool,
    response_schema: Any = None,
) -> str:
    """The grammar that forces the model's tool-call syntax with each function's arguments.

    ``form`` is a :class:`~wasinn.serve.tool_calls.ToolFormat` value. Generic (the whole
    output JSON) may instead be ``{"response": …}`` when ``may_answer`` (``auto``).
    """
    key = "parameters" if form == "llama3" else "arguments"
    one = {"anyOf": [_call_schema(function, key) for function in functions]}
    if form == "generic":
        calls: dict[str, Any] = (
            {"type": "object", "properties": {"tool_calls": {"type": "array", "items": one, "minItems": 1}}}
            if parallel
            else {"type": "object", "properties": {"tool_call": one}}
        )
        calls["required"] = list(calls["properties"])
        options = [calls]
        if may_answer:
            response = response_schema if response_schema is not None else {"type": "string"}
            options.append({"type": "object", "properties": {"response": response}, "required": ["response"]})
        return schema_grammar({"anyOf": options} if len(options) > 1 else calls, "tools")
    converter = _converter()
    call = _visit(converter, one, "call", "tools")
    if form == "hermes":
        item = f'"<tool_call>\\n" {call} "\\n</tool_call>"'
        root = f'{item} ("\\n" {item})*' if parallel else item
    elif form == "mistral":
        root = f'"[TOOL_CALLS][" {call} ' + (f'(", " {call})* "]"' if parallel else '"]"')
    else:  # llama3: the call object itself
        root = call
    converter._add_rule("root", root)
    grammar: str = converter.format_grammar()
    return grammar
