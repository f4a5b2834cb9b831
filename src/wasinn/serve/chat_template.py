"""The model's own chat template (GGUF ``tokenizer.chat_template``), rendered host-side.

Rendered as llama-cpp-python's ``Jinja2ChatFormatter`` does (llm-serving spec §3.1): a jinja2
``ImmutableSandboxedEnvironment`` with ``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, a
pass-through ``{% generation %}`` tag and a ``tojson`` that keeps non-ASCII text, with
``bos_token``/``eos_token`` as the vocabulary's token texts, ``add_generation_prompt`` true,
``raise_exception`` and ``strftime_now``. On top, as llama-server does (§3.2, §3.3):
``date_string``, ``enable_thinking`` false, ``tools`` only when there are some, ``developer``
messages as ``system``, content parts joined into one string for templates that only read
strings, tool-call arguments as objects for templates that ``tojson`` them.

The guest's prompt is tokenized by the GGML backend with ``add_special`` (WasmEdge's rule), so
a template that starts with ``{{ bos_token }}`` would give two BOS tokens; one leading BOS
text is stripped here when the vocabulary adds BOS itself (§3.3). A GGUF without a template is
rendered as ChatML (llama-server's fallback), with a warning and ``<|im_end|>`` as a stop.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from wasinn.core import ConfigError

log = logging.getLogger(__name__)

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n'"
    " }}{% endif %}"
)
CHATML_STOP = "<|im_end|>"
_PROBE = "wasinn-probe-7f3a"


class TemplateFailure(Exception):
    """The template refused the conversation (``raise_exception``) or failed to render: a 400."""


@dataclass(frozen=True)
class Vocabulary:
    """What the template needs from the model: its templates, BOS/EOS texts and the BOS rule."""

    templates: Mapping[str, str]  # "" is the default ``tokenizer.chat_template``; others by name
    bos_token: str
    eos_token: str
    add_bos: bool
    context_length: int


def read_vocabulary(path: str | os.PathLike[str]) -> Vocabulary:
    """The GGUF's chat templates and special tokens, read with llama.cpp (vocabulary only)."""
    import llama_cpp

    from wasinn.backends._llama import ensure_backend

    ensure_backend(False)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(os.fsencode(path), params)
    if not model:
        raise ConfigError(f"cannot read the GGUF {path} for its chat template")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        templates = {}
        for name in ("", "tool_use"):
            raw = llama_cpp.llama_model_chat_template(model, name.encode() if name else None)
            if raw:
                templates[name] = raw.decode()

        def text(token: int) -> str:
            return (
                ""
                if token < 0
                else bytes(llama_cpp.llama_vocab_get_text(vocab, token)).decode(errors="replace")
            )

        return Vocabulary(
            templates=templates,
            bos_token=text(int(llama_cpp.llama_vocab_bos(vocab))),
            eos_token=text(int(llama_cpp.llama_vocab_eos(vocab))),
            add_bos=bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
            context_length=_trained_context(model),
        )
    finally:
        llama_cpp.llama_model_free(model)


def _meta(model: Any, key: str) -> str:
    import ctypes

    import llama_cpp

    buffer = ctypes.create_string_buffer(256)
    size = int(llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer)))
    return buffer.value.decode(errors="replace") if size >= 0 else ""


def _trained_context(model: Any) -> int:
    """``<arch>.context_length`` from the metadata (a vocabulary-only load has no hparams)."""
    found = _meta(model, f"{_meta(model, 'general.architecture')}.context_length")
    return int(found) if found.isdigit() else 0


def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class IgnoreGenerationTags(jinja2.ext.Extension):
        """HuggingFace's ``{% generation %}`` tag, rendered as its body (as llama-cpp-python)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = _tojson
    return environment


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise TemplateFailure(message)


def _strftime_now(form: str) -> str:
    return datetime.now().strftime(form)


@dataclass
class ChatTemplate:
    """One model's chat template(s), ready to render OpenAI ``messages`` into a prompt."""

    source: str
    bos_token: str
    eos_token: str
    strip_bos: bool  # the backend adds BOS itself: strip one leading BOS text from the render
    tool_use_source: str | None = None
    fallback: bool = False  # the GGUF has no template: ChatML
    _compiled: dict[str, Any] = field(default_factory=dict, repr=False)
    _wants: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def for_model(cls, vocabulary: Vocabulary, override: Path | None = None) -> ChatTemplate:
        """The override file's template, else the GGUF's, else ChatML (with a warning)."""
        strip = vocabulary.add_bos and bool(vocabulary.bos_token)
        bos, eos = vocabulary.bos_token, vocabulary.eos_token
        if override is not None:
            try:
                source = override.read_text()
            except OSError as err:
                raise ConfigError(f"--chat-template {override}: {err.strerror or err}") from None
            return cls(source, bos, eos, strip)
        found = vocabulary.templates.get("")
        if found is None:
            log.warning("the model has no tokenizer.chat_template: chats are rendered as ChatML")
            return cls(CHATML, bos, eos, strip, fallback=True)
        return cls(found, bos, eos, strip, tool_use_source=vocabulary.templates.get("tool_use"))

    @property
    def stops(self) -> tuple[str, ...]:
        """Stop strings the template implies beyond the backend's end-of-generation tokens."""
        stops = [CHATML_STOP] if self.fallback else []
        if "<|eom_id|>" in self.source:  # Llama 3.x ends a tool call with it (spec §4.2)
            stops.append("<|eom_id|>")
        return tuple(stops)

    def _template(self, source: str) -> Any:
        compiled = self._compiled.get(source)
        if compiled is None:
            import jinja2

            try:
                compiled = self._compiled[source] = _environment().from_string(source)
            except jinja2.TemplateError as err:
                raise ConfigError(f"the chat template does not compile: {err}") from None
        return compiled

    def render_raw(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        source: str | None = None,
        **extra: Any,
    ) -> str:
        """The template's text for these messages as given, with nothing stripped."""
        import jinja2

        variables: dict[str, Any] = {
            "messages": list(messages),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": True,
            "raise_exception": _raise_exception,
            "strftime_now": _strftime_now,
            "tool_choice": tool_choice,
            **extra,
        }
        if tools:
            variables["tools"] = list(tools)
        try:
            text: str = self._template(source or self.source).render(**variables)
        except TemplateFailure:
            raise
        except (jinja2.TemplateError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise TemplateFailure(f"the chat template failed: {err}") from None
        return text

    def prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The guest's prompt: normalised messages rendered, one leading BOS text stripped.

        ``kwargs`` (a request's ``chat_template_kwargs``, as llama-server takes them) are more
        template variables, e.g. ``{"enable_thinking": true}``; they cannot replace the
        messages, tools or special tokens.
        """
        source = self.tool_use_source if tools and self.tool_use_source else self.source
        normalised = [self._normalise(message, source) for message in messages]
        extra = {"date_string": datetime.now().strftime("%d %b %Y"), "enable_thinking": False}
        reserved = {"messages", "tools", "tool_choice", "bos_token", "eos_token", "raise_exception", "source"}
        extra.update({key: value for key, value in (kwargs or {}).items() if key not in reserved})
        text = self.render_raw(normalised, tools, tool_choice, source, **extra)
        if self.strip_bos and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        return text

    def _normalise(self, message: Mapping[str, Any], source: str) -> dict[str, Any]:
        out = dict(message)
        if out.get("role") == "developer":
            out["role"] = "system"
        content = out.get("content")
        if content is None:
            out["content"] = ""
        elif isinstance(content, list) and not self._probe(source, "parts"):
            out["content"] = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        calls = out.get("tool_calls")
        if isinstance(calls, list) and self._probe(source, "object-arguments"):
            out["tool_calls"] = [_object_arguments(call) for call in calls]
        return out

    def _probe(self, source: str, what: str) -> bool:
        """Whether the template reads content parts / wants tool-call arguments as objects.

        Found once per template by rendering a probe conversation (llama-server's capability
        probing): a template that drops the probe text of a part-list ignores parts; one that
        shows the probe argument's name escaped (``\\"``) ``tojson``-ed a string.
        """
        key = f"{what}:{hash(source)}"
        found = self._wants.get(key)
        if found is None:
            if what == "parts":
                probe = [{"role": "user", "content": [{"type": "text", "text": _PROBE}]}]
            else:
                call = {"id": "call0probe", "type": "function"}
                call["function"] = {"name": "probe", "arguments": json.dumps({_PROBE: 1})}  # type: ignore[assignment]
                probe = [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                ]
            try:
                text = self.render_raw(probe, source=source)
            except TemplateFailure:
                text = ""
            found = _PROBE in text if what == "parts" else f'\\"{_PROBE}\\"' in text
            self._wants[key] = found
        return found


def _object_arguments(call: Any) -> Any:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        return call
    arguments = call["function"].get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except ValueError:
            return call
        return {**call, "function": {**call["function"], "arguments": parsed}}
    return call
