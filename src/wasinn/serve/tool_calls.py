"""OpenAI ``tools``: the model's tool-call format, its grammar, and the calls parsed from its text
(streamed: :mod:`wasinn.serve.tool_stream`).

Four formats (llm-serving spec §4.1, llama.cpp's LEGACY detection on the template source):
Hermes/Qwen ``<tool_call>{"name", "arguments"}</tool_call>``, Llama 3.x ``{"name",
"parameters"}`` at the start of the output, Mistral ``[TOOL_CALLS][{"name", "arguments",
"id"}]`` and Generic (the whole output is ``{"tool_call"|"tool_calls"|"response": …}``, asked
for by a system instruction and forced by a grammar). A final text that does not parse in the
model's format is content (LEGACY, §4.4), with a warning.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wasinn.serve.grammars import call_grammar
from wasinn.serve.openai_protocol import RequestError

log = logging.getLogger(__name__)
_ALNUM = string.ascii_letters + string.digits


class ToolFormat(enum.Enum):
    HERMES = "hermes"
    LLAMA3 = "llama3"
    MISTRAL = "mistral"
    GENERIC = "generic"


def detect_format(template: str, with_schema: bool = False) -> ToolFormat:
    """The format the chat template's source shows (spec §4.1, in its order)."""
    if "<tool_call>" in template:
        return ToolFormat.HERMES
    if with_schema:
        return ToolFormat.GENERIC
    if "<|start_header_id|>ipython<|end_header_id|>" in template:
        return ToolFormat.LLAMA3
    if "[TOOL_CALLS]" in template:
        return ToolFormat.MISTRAL
    return ToolFormat.GENERIC


@dataclass(frozen=True)
class ToolRequest:
    """A request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, checked."""

    tools: tuple[dict[str, Any], ...]
    choice: str  # none, auto, required, or "function" with ``name``
    name: str | None = None
    parallel: bool = True

    @classmethod
    def parse(cls, request: Mapping[str, Any]) -> ToolRequest | None:
        tools = request.get("tools")
        if tools is None or tools == []:
            if request.get("tool_choice") not in (None, "none", "auto"):
                raise RequestError("tool_choice needs tools", "tool_choice")
            return None
        if not isinstance(tools, list) or not all(_is_tool(tool) for tool in tools):
            raise RequestError(
                'tools must be a list of {"type": "function", "function": {"name", ...}}', "tools"
            )
        parallel = request.get("parallel_tool_calls", True)
        if not isinstance(parallel, bool):
            raise RequestError("parallel_tool_calls must be true or false", "parallel_tool_calls")
        choice = request.get("tool_choice", "auto")
        if choice in ("none", "auto", "required"):
            return cls(tuple(tools), choice, None, parallel)
        named = choice.get("function") if isinstance(choice, dict) else None
        name = named.get("name") if isinstance(named, dict) else None
        if not isinstance(name, str):
            raise RequestError(
                'tool_choice must be none, auto, required or {"type": "function", "function": {"name"}}',
                "tool_choice",
            )
        if name not in {tool["function"]["name"] for tool in tools}:
            raise RequestError(f"tool_choice names {name!r}, which is not in tools", "tool_choice")
        return cls(tuple(tools), "function", name, parallel)

    @property
    def active(self) -> bool:
        return self.choice != "none"

    def offered(self) -> list[dict[str, Any]]:
        """The functions the output may call: all, or the named one."""
        functions = [tool["function"] for tool in self.tools]
        return [f for f in functions if self.name is None or f["name"] == self.name]

    def grammar(self, form: ToolFormat, response_schema: Any = None) -> str:
        """The GBNF that forces a call (``required``, named; always for Generic), else ""."""
        if not self.active or (form is not ToolFormat.GENERIC and self.choice == "auto"):
            return ""  # auto: free text then parsed (the backend has no lazy grammar)
        return call_grammar(form.value, self.offered(), self.parallel, self.choice == "auto", response_schema)

    def generic_instruction(self, response_schema: Any = None) -> str:
        """The system text that asks a Generic model for its JSON (after llama.cpp's)."""
        response = response_schema if response_schema is not None else {"type": "string"}
        shape: dict[str, Any] = {"tool_call": {"name": "<one of the tools>", "arguments": {}}}
        if self.parallel:
            shape = {"tool_calls": [{"name": "<tool>", "arguments": {}, "id": "<id>"}]}
        return (
            "Respond in JSON format, either with `tool_call` (a request to call tools) or with "
            f"`response` (a reply to the user's request). Tool calls look like {json.dumps(shape)}; "
            f'a response is {{"response": …}} with this schema: {json.dumps(response)}. '
            f"Tools: {json.dumps(self.offered(), ensure_ascii=False)}"
        )


def _is_tool(tool: Any) -> bool:
    function = tool.get("function") if isinstance(tool, dict) else None
    return (
        isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and isinstance(function, dict)
        and isinstance(function.get("name"), str)
    )


@dataclass
class ToolCall:
    name: str
    arguments: str  # compact JSON text, as OpenAI sends it
    id: str

    def openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Parsed:
    content: str | None
    calls: list[ToolCall] = field(default_factory=list)


def new_call_id(form: ToolFormat) -> str:
    """``call_`` + 24 alphanumerics; 9 alphanumerics for Mistral, whose template checks ids."""
    if form is ToolFormat.MISTRAL:
        return "".join(secrets.choice(_ALNUM) for _ in range(9))
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


class _NoCall(Exception):
    pass


HERMES_OPEN = re.compile(r"<(tool_call|function_call)>\s*")
_DECODER = json.JSONDecoder()
# A call object that starts with its name, then its arguments: what the grammar forces and
# what models write. Its arguments are then sent as the model wrote them, whitespace outside
# strings dropped, both when streamed (as they come) and not; other shapes are re-dumped.
CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')
_RAW = "\x00raw-arguments"


def _decode_call(text: str, at: int) -> tuple[dict[str, Any], int]:
    """The call object at ``at`` and its end; its raw arguments kept when it starts with its name."""
    call, end = _DECODER.raw_decode(text, at)
    call = _object(call)
    head = CALL_HEAD.match(text, at)
    if head is not None and text[head.end() : head.end() + 1] == "{":
        _, value_end = _DECODER.raw_decode(text, head.end())
        minifier = Minifier()
        call[_RAW] = minifier.feed(text[head.end() : value_end])
    return call, end


class Minifier:
    """JSON text without the whitespace outside strings, fed piece by piece; done at the end
    of the first complete object or array (or string). Prefix-stable, so it can be streamed."""

    def __init__(self) -> None:
        self.depth, self.in_string, self.escape, self.done = 0, False, False, False
        self.consumed = 0  # characters of the last piece taken (the rest follows the end)

    def feed(self, text: str) -> str:
        out: list[str] = []
        for count, char in enumerate(text):
            if self.done:
                self.consumed = count
                return "".join(out)
            if self.in_string:
                out.append(char)
                if self.escape:
                    self.escape = False
                elif char == "\\":
                    self.escape = True
                elif char == '"':
                    self.in_string = False
                    self.done = self.depth == 0
                continue
            if char in " \t\r\n":
                continue
            out.append(char)
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                self.done = self.depth <= 0
        self.consumed = len(text)
        return "".join(out)


def parse_calls(form: ToolFormat, text: str, parallel: bool = True) -> Parsed:
    """The content and calls of a finished output; the whole text as content where it fails."""
    try:
        content, raw = _PARSERS[form](text)
    except (_NoCall, ValueError, KeyError, TypeError) as err:
        if not isinstance(err, _NoCall):
            log.warning("tool calls: the output does not parse as %s (%s): kept as content", form.value, err)
        return Parsed(text)
    calls = []
    for item in raw[: None if parallel else 1]:
        name, arguments = item["name"], item.get("arguments", item.get("parameters", {}))
        if not isinstance(name, str):
            raise_type = f"a call's name is {type(name).__name__}"
            log.warning("tool calls: %s: kept as content", raise_type)
            return Parsed(text)
        if isinstance(arguments, str):
            arguments = json.loads(arguments)
        given = item.get("id")
        ident = given if isinstance(given, str) and given else new_call_id(form)
        text_arguments = item.get(_RAW) or json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        calls.append(ToolCall(name, text_arguments, ident))
    return Parsed(content or None, calls)


def _hermes(text: str) -> tuple[str, list[dict[str, Any]]]:
    first = HERMES_OPEN.search(text)
    if first is None:
        raise _NoCall
    calls, at = [], first.start()
    while (found := HERMES_OPEN.match(text, at)) is not None:
        call, end = _decode_call(text, found.end())
        closing = re.compile(rf"\s*</{found.group(1)}>\s*")
        closed = closing.match(text, end)
        at = closed.end() if closed else end
        calls.append(call)
        if closed is None:
            break
    if text[at:].strip():
        raise ValueError(f"text after the calls: {text[at : at + 40]!r}")
    return text[: first.start()].rstrip(), calls


def _llama3(text: str) -> tuple[str, list[dict[str, Any]]]:
    if not text.lstrip().startswith("{"):
        raise _NoCall  # prose first: a plain answer
    calls, at = [], len(text) - len(text.lstrip())
    while at < len(text):
        call, at = _decode_call(text, at)
        if "parameters" not in call and "arguments" not in call:
            raise ValueError("a call without parameters")
        calls.append(call)
        at += len(text[at:]) - len(text[at:].lstrip(" \t\n;"))
    return "", calls


def _mistral(text: str) -> tuple[str, list[dict[str, Any]]]:
    start = text.find("[TOOL_CALLS]")
    if start < 0:
        raise _NoCall
    rest = text[start + len("[TOOL_CALLS]") :].lstrip()
    if rest.startswith("["):
        calls, end = _DECODER.raw_decode(rest)
        if not isinstance(calls, list) or rest[end:].strip():
            raise ValueError("not one JSON array of calls")
        return text[:start].rstrip(), [_object(call) for call in calls]
    found = []  # newer Mistral: name[ARGS]{…} repeated
    for chunk in rest.split("[TOOL_CALLS]"):
        name, marker, arguments = chunk.partition("[ARGS]")
        if not marker:
            raise ValueError("neither a JSON array nor name[ARGS]{…}")
        found.append({"name": name.strip(), "arguments": json.loads(arguments)})
    return text[:start].rstrip(), found


def _generic(text: str) -> tuple[str, list[dict[str, Any]]]:
    document = _object(json.loads(text))
    if "tool_call" in document:
        return "", [_object(document["tool_call"])]
    if "tool_calls" in document:
        return "", [_object(call) for call in document["tool_calls"]]
    if "response" in document:
        response = document["response"]
        return response if isinstance(response, str) else json.dumps(response, indent=2), []
    raise ValueError("no tool_call, tool_calls or response")


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("name", ""), str):
        raise ValueError("a call is not an object with a name")
    return value


_PARSERS = {
    ToolFormat.HERMES: _hermes,
    ToolFormat.LLAMA3: _llama3,
    ToolFormat.MISTRAL: _mistral,
    ToolFormat.GENERIC: _generic,
}


# Text that starts a call in each format: streamed content stops where one may begin.
TRIGGERS = {
    ToolFormat.HERMES: ("<tool_call>", "<function_call>"),
    ToolFormat.MISTRAL: ("[TOOL_CALLS]",),
}
