"""A tiny random-weight Llama with a character tokenizer and a ChatML template, as a ModelSource."""

from __future__ import annotations

from llama_reference import random_llama
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from webbuild.source import ModelSource

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<s>", "<|im_end|>", "<|im_start|>"]


def char_tokenizer(vocab_size: int = 256) -> Tokenizer:
    """Printable ASCII characters one token each, then the ChatML special tokens (ids 1, 2, 3 ...)."""
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<unk>": 0} | {s: i + 1 for i, s in enumerate(SPECIAL)}
    vocab |= {c: len(vocab) + i for i, c in enumerate(chars)}
    assert len(vocab) <= vocab_size
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL)
    return tok


def tiny_source(seed: int = 0, *, tied: bool = True, layers: int = 2) -> ModelSource:
    config, tensors = random_llama(seed, tied=tied, layers=layers)
    config["eos_token_id"] = 2  # <|im_end|>
    return ModelSource(
        model_id="tiny-llama",
        config=config,
        tokenizer_json=char_tokenizer().to_str(),
        tokenizer_config={"chat_template": CHATML, "bos_token": "<s>", "eos_token": "<|im_end|>"},
        tensors=tensors,
        origin="tiny random Llama (test)",
        defaults={"context_window_size": 128, "prefill_chunk_size": 16, "temperature": 0.0},
    )
