"""Tool calls while the answer streams (llm-serving spec §4.3): content and call deltas that
join to what :func:`wasinn.serve.tool_calls.parse_calls` makes of the whole text."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wasinn.serve.tool_calls import (
    CALL_HEAD,
    HERMES_OPEN,
    TRIGGERS,
    Minifier,
    ToolCall,
    ToolFormat,
    new_call_id,
    parse_calls,
)

log = logging.getLogger(__name__)


@dataclass
class _OpenCall:
    """A call being streamed: sent once its name is complete, then its arguments as they come."""

    call: ToolCall
    start: int  # where its arguments begin in the text
    minifier: Minifier = field(default_factory=Minifier)
    fed: int = 0  # characters of the arguments fed to the minifier


class ToolStream:
    """Turns the streamed text into content deltas and tool-call deltas (spec §4.3).

    Content is append-only: a tail that could begin a trigger (``<tool``, ``[TOOL``) or the
    trailing whitespace before one is held back; Llama 3.x output that opens with ``{`` and
    Generic output (all JSON) are content only if they turn out not to be calls. For Hermes
    and Llama 3.x, a call is sent as soon as its name is complete (index, id, type, name,
    ``arguments: ""``), then its arguments as they are generated; Mistral and Generic calls at
    the end. At the end the whole text is parsed as for a non-streamed answer, and whatever
    the deltas did not yet carry is sent, so they join to the same content and calls.
    """

    def __init__(self, form: ToolFormat, parallel: bool) -> None:
        self.form, self.parallel = form, parallel
        self.text = ""
        self.sent = 0  # characters of text already sent as content
        self.held = form is ToolFormat.GENERIC
        self.calls: list[_OpenCall] = []
        self.scan = 0  # where the next call may begin
        self.live = form in (ToolFormat.HERMES, ToolFormat.LLAMA3)

    def feed(self, piece: str) -> list[dict[str, Any]]:
        """The deltas that may be sent now."""
        self.text += piece
        if self.held:
            return self._calls() if self.live else []
        content = self._content()
        if self.held and self.live:
            return ([{"content": content}] if content else []) + self._calls()
        return [{"content": content}] if content else []

    def _content(self) -> str:
        if self.form is ToolFormat.LLAMA3:
            if not self.text.strip():
                return ""
            if self.sent == 0 and self.text.lstrip().startswith("{"):
                self.held = True
                return ""
            return self._release(len(self.text))
        triggers = TRIGGERS.get(self.form, ())
        for trigger in triggers:
            if (at := self.text.find(trigger, self.sent)) >= 0:
                self.held = True
                self.scan = at
                return self._release(len(self.text[:at].rstrip()))
        safe = len(self.text)
        for trigger in triggers:
            for size in range(min(len(trigger) - 1, len(self.text)), 0, -1):
                if trigger.startswith(self.text[-size:]):
                    safe = min(safe, len(self.text) - size)
                    break
        return self._release(len(self.text[:safe].rstrip()))

    def _release(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out, self.sent = self.text[self.sent : upto], upto
        return out

    def _calls(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        while True:
            if self.calls and not self.calls[-1].minifier.done:
                current = self.calls[-1]
                fragment = current.minifier.feed(self.text[current.start + current.fed :])
                current.fed += current.minifier.consumed
                if fragment:
                    current.call.arguments += fragment
                    deltas.append(_arguments_delta(len(self.calls) - 1, fragment))
                if not current.minifier.done:
                    return deltas
                self.scan = current.start + current.fed
            if self.calls and not self.parallel:
                return deltas
            head = self._next_head()
            if head is None:
                return deltas
            name, start = head
            call = ToolCall(name, "", new_call_id(self.form))
            self.calls.append(_OpenCall(call, start))
            deltas.append(_head_delta(len(self.calls) - 1, call))

    def _next_head(self) -> tuple[str, int] | None:
        """The next call's name and where its arguments start, once both are in the text."""
        if self.form is ToolFormat.HERMES:
            opened = HERMES_OPEN.search(self.text, self.scan)
            if opened is None:
                return None
            at = opened.end()
        else:
            at = self.scan + len(self.text[self.scan :]) - len(self.text[self.scan :].lstrip(" \t\n;"))
        head = CALL_HEAD.match(self.text, at)
        if head is None or head.end() == len(self.text):  # the arguments have not begun yet
            return None
        if self.text[head.end()] != "{":  # not an object (a JSON string?): sent at the end
            self.live = False
            return None
        try:
            name: str = json.loads(f'"{head[1]}"')
        except ValueError:
            return None
        return name, head.end()

    def finish(self) -> tuple[list[dict[str, Any]], bool]:
        """The last deltas, from the whole text parsed; and whether calls were made."""
        parsed = parse_calls(self.form, self.text, self.parallel)
        if not parsed.calls and not self.calls:
            rest = self.text[self.sent :]
            return ([{"content": rest}] if rest else []), False
        if not parsed.calls:
            # Calls went out while generated, and the whole text then failed to parse (text
            # after them, say): the calls stand; the rest is not sent as content, since it
            # holds their markup. Unlike the non-streamed answer, which is all content (§4.4).
            log.warning("tool calls: the streamed calls' text does not parse as a whole")
            return [], True
        deltas: list[dict[str, Any]] = []
        if rest := (parsed.content or "")[self.sent :]:
            deltas.append({"content": rest})
        for index, final in enumerate(parsed.calls):
            if index < len(self.calls):
                streamed = self.calls[index].call
                if final.name != streamed.name or not final.arguments.startswith(streamed.arguments):
                    log.warning("tool calls: call %d as streamed differs from the final parse", index)
                    continue
                if tail := final.arguments[len(streamed.arguments) :]:
                    deltas.append(_arguments_delta(index, tail))
            else:
                deltas += [_head_delta(index, final), _arguments_delta(index, final.arguments)]
        return deltas, True


def _head_delta(index: int, call: ToolCall) -> dict[str, Any]:
    head = {"name": call.name, "arguments": ""}
    return {"tool_calls": [{"index": index, "id": call.id, "type": "function", "function": head}]}


def _arguments_delta(index: int, fragment: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}


def call_deltas(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """Each call as two stream deltas: id, type and name with empty arguments; then arguments."""
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        deltas += [_head_delta(index, call), _arguments_delta(index, call.arguments)]
    return deltas
