"""The model's own chat template (wasinn.serve.chat_template) against llama-cpp-python's.

The vocab-only GGUFs the llama-cpp-python 0.3.36 sdist vendors that carry a
``tokenizer.chat_template`` (phi-3, qwen2, qwen35, command-r, gemma-4) are rendered by
llama-cpp-python's ``Jinja2ChatFormatter`` and by wasinn: the same text, and the same tokens
once each is tokenized its way (llama-cpp-python: no BOS added, the template's own; wasinn: the
GGML backend's add_special, after one leading BOS text is stripped).
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from conftest import require_module

require_module("llama_cpp")
require_module("jinja2")

import llama_cpp  # noqa: E402
from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: E402

from wasinn.serve.chat_template import (  # noqa: E402
    CHATML,
    ChatTemplate,
    TemplateFailure,
    Vocabulary,
    read_vocabulary,
)
from wasinn.testing.tiny_gguf import REPO, SDIST_NAME, VocabUnavailable  # noqa: E402

TEMPLATED = ("phi-3", "qwen2", "qwen35", "command-r", "gemma-4")
CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Héllo <b> there"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "And again?"},
]
PARTS = [{"role": "user", "content": [{"type": "text", "text": "Two"}, {"type": "text", "text": " parts"}]}]


VOCABS = (*TEMPLATED, "llama-spm")


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The vocab GGUFs, extracted in one pass over the sdist (a .tar.gz reads front to back)."""
    out = tmp_path_factory.mktemp("vocab")
    sdist = REPO / "build" / "sdist" / SDIST_NAME
    if not sdist.is_file():
        raise VocabUnavailable(f"no {sdist}: `make setup` downloads it")
    wanted = {f"llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-{name}.gguf" for name in VOCABS}
    with tarfile.open(sdist) as archive:
        for member in archive:
            if member.name in wanted:
                extracted = archive.extractfile(member)
                assert extracted is not None
                (out / Path(member.name).name).write_bytes(extracted.read())
    return out


def vocab_gguf(name: str, vocab_dir: Path) -> Path:
    return vocab_dir / f"ggml-vocab-{name}.gguf"


_VOCABS: dict[Path, Any] = {}  # loaded once per file: a 262k-token vocabulary takes seconds


def tokenize(path: Path, text: str, add_bos: bool) -> list[int]:
    vocab = _VOCABS.get(path)
    if vocab is None:
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        vocab = _VOCABS[path] = llama_cpp.llama_model_get_vocab(model)
    data = text.encode()
    tokens = (llama_cpp.llama_token * (len(data) + 8))()
    count = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, len(data) + 8, add_bos, True)
    return list(tokens[:count])


def reference(vocabulary: Vocabulary, messages: list[dict[str, Any]]) -> str:
    formatter = Jinja2ChatFormatter(vocabulary.templates[""], vocabulary.eos_token, vocabulary.bos_token)
    prompt: str = formatter(messages=messages).prompt
    return prompt


@pytest.mark.parametrize("name", TEMPLATED)
def test_prompt_text_and_tokens_equal_llama_cpp_python(name: str, vocab_dir: Path) -> None:
    path = vocab_gguf(name, vocab_dir)
    vocabulary = read_vocabulary(path)
    template = ChatTemplate.for_model(vocabulary)
    assert not template.fallback
    for messages in (CHAT, CHAT[1:], CHAT[:2]):
        expected = reference(vocabulary, messages)
        ours = template.prompt(messages)
        stripped = template.strip_bos and expected.startswith(vocabulary.bos_token)
        assert (vocabulary.bos_token if stripped else "") + ours == expected
        theirs = tokenize(path, expected, add_bos=False)
        assert tokenize(path, ours, add_bos=True) == theirs
    # Content parts: a template that reads only strings gets them joined (llama-server's rule,
    # where llama-cpp-python fails); one that reads parts (gemma-4) gets them as sent.
    joined = [{"role": "user", "content": "Two parts"}]
    expected = reference(vocabulary, PARTS if name == "gemma-4" else joined)
    bos = vocabulary.bos_token if template.strip_bos and expected.startswith(vocabulary.bos_token) else ""
    assert bos + template.prompt(PARTS) == expected


def test_one_bos_where_the_template_starts_with_it(vocab_dir: Path) -> None:
    """phi-3's template starts with {{ bos_token }}: llama.cpp adds BOS too, so one is stripped."""
    path = vocab_gguf("phi-3", vocab_dir)
    ours = ChatTemplate.for_model(read_vocabulary(path)).prompt(CHAT[1:2])
    tokens = tokenize(path, ours, add_bos=True)
    assert tokens[:2] == [1, 32010] and tokens.count(1) == 1


def test_developer_is_system_and_raise_exception_is_a_template_failure(vocab_dir: Path) -> None:
    vocabulary = read_vocabulary(vocab_gguf("qwen2", vocab_dir))
    template = ChatTemplate.for_model(vocabulary)
    developer = [{"role": "developer", "content": "Be brief."}, CHAT[1]]
    assert template.prompt(developer) == template.prompt(
        [{"role": "system", "content": "Be brief."}, CHAT[1]]
    )
    strict = ChatTemplate(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must alternate') }}"
        "{% endif %}{{ messages[0]['content'] }}",
        "<s>",
        "</s>",
        False,
    )
    with pytest.raises(TemplateFailure, match="Conversation roles must alternate"):
        strict.prompt([CHAT[2]])


def test_no_template_is_chatml_and_an_override_file_wins(vocab_dir: Path, tmp_path: Path) -> None:
    vocabulary = read_vocabulary(vocab_gguf("llama-spm", vocab_dir))
    assert "" not in vocabulary.templates
    fallback = ChatTemplate.for_model(vocabulary)
    assert fallback.fallback and fallback.source == CHATML and "<|im_end|>" in fallback.stops
    assert (
        fallback.prompt(CHAT[1:2]) == "<|im_start|>user\nHéllo <b> there<|im_end|>\n<|im_start|>assistant\n"
    )
    override = tmp_path / "t.jinja"
    override.write_text("{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")
    own = ChatTemplate.for_model(vocabulary, override)
    assert own.prompt(CHAT[1:2]) == "[user] Héllo <b> there\n"  # <s> stripped: llama SPM adds BOS


def test_tool_call_arguments_go_as_objects_to_templates_that_tojson_them() -> None:
    source = (
        "{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
        "{{ c.function.arguments | tojson }}{% endfor %}{% else %}{{ m.content }}{% endif %}{% endfor %}"
    )
    template = ChatTemplate(source, "", "", False)
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"city": "Oslo"}'}}
    rendered = template.prompt([CHAT[1], {"role": "assistant", "content": None, "tool_calls": [call]}])
    assert rendered.endswith('{"city": "Oslo"}')  # not the double-encoded "{\"city\": ...}"


def test_chat_template_kwargs_reach_the_template() -> None:
    template = ChatTemplate(
        "{{ 'think' if enable_thinking else 'plain' }} {{ messages[0].content }}", "", "", False
    )
    assert template.prompt(CHAT[1:2]) == "plain Héllo <b> there"
    assert template.prompt(CHAT[1:2], kwargs={"enable_thinking": True}) == "think Héllo <b> there"
    assert template.prompt(CHAT[1:2], kwargs={"messages": []}) == "plain Héllo <b> there"
