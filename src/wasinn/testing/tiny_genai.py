"""A tiny random-weight causal LM as an OpenVINO GenAI model directory, written offline.

The recipe of the genai spec (§3.6): a byte-level BPE tokenizer trained here on a dozen
sentences, a 2-layer Llama of width 32 with random weights from a seeded ``transformers``
config (no hub), exported by ``optimum-intel`` as the stateful IR ``LLMPipeline`` wants, and
the tokenizer converted by ``openvino-tokenizers``. Needs the dev extra (transformers,
optimum-intel, torch); the runtime backend needs only ``openvino-genai``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from wasinn.backends._offline import openvino_telemetry_off
from wasinn.core._paths import user_cache_dir

SENTENCES = [
    "hello world, this is a tiny model.",
    "the quick brown fox jumps over the lazy dog.",
    "wasinn runs webassembly guests that call wasi-nn.",
    "openvino genai generates text from a prompt.",
    "a small vocabulary is enough for a test.",
    "numbers 0 1 2 3 4 5 6 7 8 9 and symbols !?.,;:",
    "Once upon a time there was a little robot.",
    "It liked to read books and write poems.",
    "The sun rises in the east and sets in the west.",
    "Tokens are made of bytes, merged by frequency.",
    "What is the capital of France? Paris.",
    "Good morning! How are you today?",
]
SPECIALS = ["<s>", "</s>", "<pad>"]
# One user turn and the generation prompt: enough for GenAI to apply the template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<s>{{ message['role'] }}: {{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def _tokenizer() -> Any:  # a transformers PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    return tokenizer


def write_tiny_genai(out: Path, seed: int = 0) -> Path:
    """Write the model directory ``out`` (openvino_model.xml, tokenizer and detokenizer IR,
    generation_config.json …) and return it. Deterministic for a given ``seed``."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    with openvino_telemetry_off():
        import openvino as ov
        import torch
        from openvino_tokenizers import convert_tokenizer
        from optimum.intel import OVModelForCausalLM
        from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out)
    source = out.with_name(out.name + "-hf")
    tokenizer = _tokenizer()
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIALS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.bos_token_id = ids["<s>"]
    model.generation_config.eos_token_id = ids["</s>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    with warnings.catch_warnings():  # the tracer's warnings about a tiny model's constants
        warnings.simplefilter("ignore")
        exported = OVModelForCausalLM.from_pretrained(source, export=True, compile=False)
    exported.save_pretrained(out)
    tokenizer.save_pretrained(out)
    ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
    ov.save_model(ov_tokenizer, out / "openvino_tokenizer.xml")
    ov.save_model(ov_detokenizer, out / "openvino_detokenizer.xml")
    shutil.rmtree(source)
    return out


def with_chat_template(model: Path, out: Path, template: str = CHAT_TEMPLATE) -> Path:
    """A copy of the model directory ``model`` whose tokenizer carries ``template``; only the
    tokenizer IR is converted again (the chat template travels in its runtime info)."""
    with openvino_telemetry_off():
        import openvino as ov
        from openvino_tokenizers import convert_tokenizer
        from transformers import PreTrainedTokenizerFast

    shutil.copytree(model, out)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
    ov.save_model(ov_tokenizer, out / "openvino_tokenizer.xml")
    ov.save_model(ov_detokenizer, out / "openvino_detokenizer.xml")
    return out


def tiny_genai() -> tuple[Path, Path]:
    """The model directory and its chat-template copy, written once into the user cache (the
    export takes 15–30 s on two cores); keyed by the openvino-genai release, whose IR they
    must match, and by this recipe's version."""
    from importlib.metadata import version

    root = user_cache_dir() / "testing" / f"tiny-genai-v1-{version('openvino-genai')}"
    plain, templated = root / "g", root / "templated"
    if not (plain / "openvino_model.xml").is_file() or not (templated / "openvino_tokenizer.xml").is_file():
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=root.name + "-", dir=root.parent))
        with_chat_template(write_tiny_genai(staging / "g"), staging / "templated")
        try:
            staging.rename(root)  # atomic: a concurrent writer's complete copy may have won
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return plain, templated
