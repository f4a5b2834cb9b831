"""One chat request made ready for the llm-serve guest: its prompt, grammar, stops and tool format.

The messages are rendered with the model's chat template (:mod:`wasinn.serve.chat_template`),
``response_format`` and forced tool calls become a grammar (:mod:`wasinn.serve.grammars`), and
the finished text is split into content and ``tool_calls`` (:mod:`wasinn.serve.tool_calls`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from wasinn.serve.chat_template import ChatTemplate, TemplateFailure
from wasinn.serve.grammars import response_format
from wasinn.serve.openai_protocol import ChatRequest, Done, RequestError, chat_completion
from wasinn.serve.tool_calls import ToolFormat, ToolRequest, detect_format, parse_calls
from wasinn.serve.tool_stream import ToolStream


@dataclass(frozen=True)
class ChatPlan:
    prompt: str
    args: list[str]
    tools: ToolRequest | None
    form: ToolFormat | None  # the tool-call format to parse, None: plain content

    def message(self, ident: str, model: str, text: str, done: Done) -> dict[str, Any]:
        """The chat.completion for the guest's finished text."""
        if self.form is None or self.tools is None:
            return chat_completion(ident, model, text, done)
        parsed = parse_calls(self.form, text, self.tools.parallel)
        calls = [call.openai() for call in parsed.calls]
        return chat_completion(ident, model, parsed.content, _finish(done, bool(calls)), calls)

    def stream(self) -> ToolStream | None:
        if self.form is None or self.tools is None:
            return None
        return ToolStream(self.form, self.tools.parallel)


def _finish(done: Done, called: bool) -> Done:
    """``tool_calls`` when a call was made and the model stopped by itself; ``length`` stays."""
    if called and done.finish_reason == "stop":
        return dataclasses.replace(done, finish_reason="tool_calls")
    return done


def finish_reason(done: Done, called: bool) -> str:
    return _finish(done, called).finish_reason


def plan_chat(chat: ChatRequest, body: dict[str, Any], template: ChatTemplate, model: str) -> ChatPlan:
    """Render the prompt and choose the grammar; a template that refuses the chat is a 400."""
    grammar, schema = response_format(body)
    tools = ToolRequest.parse(body)
    messages = list(chat.messages)
    form = None
    if tools is not None:
        source = template.tool_use_source or template.source
        if tools.active:
            form = detect_format(source, with_schema=schema is not None)
            if form is ToolFormat.GENERIC:
                messages = _with_system(messages, tools.generic_instruction(schema))
            grammar = tools.grammar(form, schema) or grammar
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise RequestError("chat_template_kwargs must be an object", "chat_template_kwargs")
    if form is ToolFormat.LLAMA3:  # the tools in the system turn, as llama-server renders them
        kwargs = {"tools_in_user_message": False, **(kwargs or {})}
    try:
        offered = list(tools.tools) if tools else None
        prompt = template.prompt(messages, offered, body.get("tool_choice"), kwargs)
    except TemplateFailure as err:
        raise RequestError(str(err), "messages") from None
    args = chat.guest_args(model, grammar, template.stops)
    return ChatPlan(prompt, args, tools, form)


def _with_system(messages: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """The instruction as the system message, or after the one the client sent."""
    if messages and messages[0].get("role") in ("system", "developer"):
        first = dict(messages[0])
        content = first.get("content") or ""
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content)
        first["content"] = f"{content}\n\n{instruction}"
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]
