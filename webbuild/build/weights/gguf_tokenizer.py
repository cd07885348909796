"""An HF ``tokenizer.json`` and ``tokenizer_config.json`` rebuilt from a GGUF file's tokenizer metadata.

GGUF keeps the vocabulary, merges, token types and special ids, plus ``tokenizer.ggml.pre``: the name of
the pre-tokenizer the merges were learned with, which llama.cpp knows by name and the file does not spell
out. ``_PRE_TOKENIZERS`` maps those names to the HF pre-tokenizer that splits text the same way; a name
missing there is refused rather than guessed, because a wrong split tokenizes plausibly but wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from webbuild.errors import CorruptFileError, UnsupportedError

# GGUF token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _byte_level(add_prefix_space: bool) -> pre_tokenizers.PreTokenizer:
    # GPT-2's regex split, then bytes -> printable characters.
    return pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, trim_offsets=True, use_regex=True)


def _digits_then_byte_level(add_prefix_space: bool) -> pre_tokenizers.PreTokenizer:
    # StarCoder-style vocabularies (SmolLM's included) split every digit apart before the GPT-2 regex.
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level(add_prefix_space)])


_PRE_TOKENIZERS: dict[str, Callable[[bool], pre_tokenizers.PreTokenizer]] = {
    "default": _byte_level,
    "gpt2": _byte_level,
    "smollm": _digits_then_byte_level,
    "starcoder": _digits_then_byte_level,
    "refact": _digits_then_byte_level,
}


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equivalent to the GGUF's (byte-level BPE, ``tokenizer.ggml.model`` "gpt2")."""
    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedError(f"GGUF tokenizer model {kind!r} is not supported; supported: gpt2 (byte-level BPE)")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise UnsupportedError(
            f"GGUF pre-tokenizer {pre!r} is not supported; supported: {', '.join(sorted(_PRE_TOKENIZERS))}"
        )
    tokens: list[str] = _required(meta, "tokenizer.ggml.tokens")
    merges: list[str] = _required(meta, "tokenizer.ggml.merges")
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise CorruptFileError(f"GGUF tokenizer has {len(tokens)} tokens but {len(types)} token types")
    pairs = [tuple(m.split(" ")) for m in merges]
    if any(len(p) != 2 for p in pairs):
        raise CorruptFileError("GGUF tokenizer merges are not all 'left right' pairs")
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    bpe = models.BPE(
        vocab={tok: i for i, tok in enumerate(tokens)},
        merges=pairs,
        unk_token=tokens[unk_id] if unk_id is not None else None,
        fuse_unk=False,
        byte_fallback=False,
    )
    tok = Tokenizer(bpe)
    add_prefix_space = bool(meta.get("tokenizer.ggml.add_space_prefix", False))
    tok.pre_tokenizer = _PRE_TOKENIZERS[pre](add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = _post_processor(meta, tokens)
    # Control tokens (<|im_start|> ...) are special: matched whole and skipped when decoding with
    # skip_special_tokens. User-defined ones are matched whole but decode as text.
    kinds = list(zip(tokens, types, strict=True))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in kinds if k == CONTROL])
    user = [AddedToken(t, special=False, normalized=False) for t, k in kinds if k == USER_DEFINED]
    if user:
        tok.add_tokens(user)
    return tok


def _post_processor(meta: dict[str, Any], tokens: list[str]) -> processors.PostProcessor:
    """Adds BOS/EOS around each sequence when the GGUF asks for it; otherwise only fixes offsets."""
    byte_level = processors.ByteLevel(trim_offsets=False)
    ends = []
    for side in ("bos", "eos"):
        token_id = meta.get(f"tokenizer.ggml.{side}_token_id")
        wanted = meta.get(f"tokenizer.ggml.add_{side}_token", False)
        ends.append((tokens[token_id], token_id) if wanted and token_id is not None else None)
    bos, eos = ends
    if bos is None and eos is None:
        return byte_level
    pre = [bos[0]] if bos else []
    post = [eos[0]] if eos else []
    template = processors.TemplateProcessing(
        single=" ".join([*pre, "$A", *post]),
        pair=" ".join([*pre, "$A", *post, *(f"{t}:1" for t in pre), "$B:1", *(f"{t}:1" for t in post)]),
        special_tokens=[e for e in (bos, eos) if e is not None],
    )
    return processors.Sequence([byte_level, template])


def tokenizer_json_from_gguf(meta: dict[str, Any]) -> str:
    """HF ``tokenizer.json`` text (loadable with ``tokenizers.Tokenizer.from_str``)."""
    return build_tokenizer(meta).to_str()


def tokenizer_config_from_gguf(meta: dict[str, Any]) -> dict[str, Any]:
    """HF ``tokenizer_config.json`` fields: special token strings, BOS/EOS flags and the chat template."""
    tokens: list[str] = _required(meta, "tokenizer.ggml.tokens")
    config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": bool(meta.get("tokenizer.ggml.add_space_prefix", False)),
        "clean_up_tokenization_spaces": False,
    }
    for name, key in (("bos", "bos"), ("eos", "eos"), ("pad", "padding"), ("unk", "unknown")):
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None and 0 <= token_id < len(tokens):
            config[f"{name}_token"] = tokens[token_id]
    arch = meta.get("general.architecture")
    if (context := meta.get(f"{arch}.context_length")) is not None:
        config["model_max_length"] = int(context)
    if (template := meta.get("tokenizer.chat_template")) is not None:
        config["chat_template"] = template
    return config


def _required(meta: dict[str, Any], key: str) -> Any:
    if key not in meta:
        raise CorruptFileError(f"GGUF tokenizer metadata lacks {key}")
    return meta[key]
