"""An HF ``tokenizer.json`` and ``tokenizer_config.json`` rebuilt from a GGUF file's tokenizer metadata.

GGUF names its tokenizer kind in ``tokenizer.ggml.model``; two are rebuilt here, each as llama.cpp runs it:

- "gpt2": byte-level BPE. The file keeps the vocabulary, merges, token types and special ids, plus
  ``tokenizer.ggml.pre``: the name of the pre-tokenizer the merges were learned with, which llama.cpp knows
  by name and the file does not spell out. ``_PRE_TOKENIZERS`` maps those names to the HF pre-tokenizer that
  splits text the same way; a name missing there is refused rather than guessed, because a wrong split
  tokenizes plausibly but wrongly.
- "llama": SentencePiece BPE with byte fallback (Llama 2, Mistral, Phi-3, Gemma). The file keeps pieces and
  their scores but no merges: SentencePiece joins the adjacent pair whose joined piece scores highest, so the
  merges are every split of a piece into two pieces, ranked by the joined piece's score. Spaces become "▁",
  with one put before each run of text between tokens matched whole (special and user-defined ones) when
  ``tokenizer.ggml.add_space_prefix`` says so (Llama 2: yes; Gemma: no), and characters that are no piece
  become their UTF-8 bytes' ``<0xNN>`` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from webbuild.errors import CorruptFileError, UnsupportedError

# GGUF token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "▁"  # SentencePiece's visible space


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


@dataclass(frozen=True)
class Flags:
    """What a tokenizer adds to the text: BOS/EOS around it and a space before it. A GGUF that leaves a flag
    out gets llama.cpp's default for its kind (SentencePiece: BOS and the space; byte-level BPE: neither)."""

    add_bos: bool
    add_eos: bool
    add_space_prefix: bool

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Flags:
        spm = meta.get("tokenizer.ggml.model") == "llama"
        return cls(
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", spm)),
            add_eos=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
            add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", spm)),
        )


def build_tokenizer(meta: dict[str, Any]) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` equivalent to the GGUF's: byte-level BPE (``tokenizer.ggml.model`` "gpt2")
    or SentencePiece BPE with byte fallback ("llama")."""
    kind = meta.get("tokenizer.ggml.model")
    if kind not in _MODELS:
        raise UnsupportedError(
            f"GGUF tokenizer model {kind!r} is not supported; supported: "
            "gpt2 (byte-level BPE), llama (SentencePiece BPE with byte fallback)"
        )
    tokens: list[str] = _required(meta, "tokenizer.ggml.tokens")
    types: list[int] = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if len(types) != len(tokens):
        raise CorruptFileError(f"GGUF tokenizer has {len(tokens)} tokens but {len(types)} token types")
    flags = Flags.of(meta)
    tok = _MODELS[kind](meta, tokens, types, flags)
    # Control tokens (<|im_start|>, <start_of_turn> ...) and the unknown token are special: matched whole and
    # skipped when decoding with skip_special_tokens. User-defined ones are matched whole but decode as text.
    kinds = list(zip(tokens, types, strict=True))
    special = [AddedToken(t, special=True, normalized=False) for t, k in kinds if k in (CONTROL, UNKNOWN)]
    tok.add_special_tokens(special)
    user = [AddedToken(t, special=False, normalized=False) for t, k in kinds if k == USER_DEFINED]
    if user:
        tok.add_tokens(user)
    return tok


def _byte_level_bpe(meta: dict[str, Any], tokens: list[str], types: list[int], flags: Flags) -> Tokenizer:
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise UnsupportedError(
            f"GGUF pre-tokenizer {pre!r} is not supported; supported: {', '.join(sorted(_PRE_TOKENIZERS))}"
        )
    merges: list[str] = _required(meta, "tokenizer.ggml.merges")
    pairs = [tuple(m.split(" ")) for m in merges]
    if any(len(p) != 2 for p in pairs):
        raise CorruptFileError("GGUF tokenizer merges are not all 'left right' pairs")
    tok = Tokenizer(
        models.BPE(
            vocab={tok: i for i, tok in enumerate(tokens)},
            merges=pairs,
            unk_token=_unknown(meta, tokens),
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.pre_tokenizer = _PRE_TOKENIZERS[pre](flags.add_space_prefix)
    tok.decoder = decoders.ByteLevel()
    byte_level = processors.ByteLevel(trim_offsets=False)  # fixes offsets only
    template = _bos_eos(flags, meta, tokens)
    tok.post_processor = processors.Sequence([byte_level, template]) if template else byte_level
    return tok


def _sentencepiece_bpe(meta: dict[str, Any], tokens: list[str], types: list[int], flags: Flags) -> Tokenizer:
    scores: list[float] = _required(meta, "tokenizer.ggml.scores")
    if len(scores) != len(tokens):
        raise CorruptFileError(f"GGUF tokenizer has {len(tokens)} tokens but {len(scores)} scores")
    tok = Tokenizer(
        models.BPE(
            vocab={tok: i for i, tok in enumerate(tokens)},
            merges=merges_by_score(tokens, types, scores),
            unk_token=_unknown(meta, tokens),
            fuse_unk=True,
            byte_fallback=True,  # a character that is no piece -> its UTF-8 bytes as <0xNN> tokens
        )
    )
    # A normalizer, not a Metaspace pre-tokenizer: it puts "▁" before every run of text between tokens
    # matched whole, as llama.cpp does, also before one that starts with a space ("  hi" -> "▁▁▁hi", as
    # SentencePiece does too); Metaspace would skip both. No pre-tokenizer splits the text: SentencePiece
    # merges across "▁" as well.
    to_space = normalizers.Replace(" ", SPACE)
    tok.normalizer = (
        normalizers.Sequence([normalizers.Prepend(SPACE), to_space]) if flags.add_space_prefix else to_space
    )
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if flags.add_space_prefix:
        steps.append(decoders.Strip(" ", 1, 0))  # the space the encoder put first
    tok.decoder = decoders.Sequence(steps)
    tok.post_processor = _bos_eos(flags, meta, tokens)
    return tok


_MODELS: dict[str, Callable[[dict[str, Any], list[str], list[int], Flags], Tokenizer]] = {
    "gpt2": _byte_level_bpe,
    "llama": _sentencepiece_bpe,
}


def merges_by_score(tokens: list[str], types: list[int], scores: list[float]) -> list[tuple[str, str]]:
    """BPE merges equivalent to SentencePiece's encoding: every split of a normal piece into two normal
    pieces, best joined score first (ties: the lower id, then the shorter left part).

    Only normal pieces take part: SentencePiece never merges into or out of control, byte or unused pieces,
    and user-defined ones are matched whole before any merging.
    """
    normal = {t: i for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k == NORMAL}
    ranked = [
        (-scores[i], i, cut, piece[:cut], piece[cut:])
        for piece, i in normal.items()
        for cut in range(1, len(piece))
        if piece[:cut] in normal and piece[cut:] in normal
    ]
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _unknown(meta: dict[str, Any], tokens: list[str]) -> str | None:
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    return tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None


def _bos_eos(flags: Flags, meta: dict[str, Any], tokens: list[str]) -> processors.PostProcessor | None:
    """BOS/EOS around each sequence, as the flags ask (None when neither is added)."""
    ends = []
    for side, wanted in (("bos", flags.add_bos), ("eos", flags.add_eos)):
        token_id = meta.get(f"tokenizer.ggml.{side}_token_id")
        ends.append((tokens[token_id], token_id) if wanted and token_id is not None else None)
    bos, eos = ends
    if bos is None and eos is None:
        return None
    pre = [bos[0]] if bos else []
    post = [eos[0]] if eos else []
    return processors.TemplateProcessing(
        single=" ".join([*pre, "$A", *post]),
        pair=" ".join([*pre, "$A", *post, *(f"{t}:1" for t in pre), "$B:1", *(f"{t}:1" for t in post)]),
        special_tokens=[e for e in (bos, eos) if e is not None],
    )


def tokenizer_json_from_gguf(meta: dict[str, Any]) -> str:
    """HF ``tokenizer.json`` text (loadable with ``tokenizers.Tokenizer.from_str``), without whitespace."""
    doc = json.loads(build_tokenizer(meta).to_str())
    doc["model"]["merges"] = _merge_strings(doc["model"]["merges"])
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _merge_strings(pairs: list[list[str]]) -> list[str] | list[list[str]]:
    """Merges as ``"left right"`` strings, the form a byte-level GGUF stores them in, rather than ``tokenizers``'
    ``["left", "right"]`` pairs: every reader takes both, and the strings take 4 bytes less a merge (0.19 MiB of
    SmolLM2's 1.49 that every visitor fetches). The pairs exist for pieces with a space, which a string cannot
    split back: merges with one stay pairs."""
    if any(" " in piece for pair in pairs for piece in pair):
        return pairs
    return [" ".join(pair) for pair in pairs]


def tokenizer_config_from_gguf(meta: dict[str, Any]) -> dict[str, Any]:
    """HF ``tokenizer_config.json`` fields: special token strings, BOS/EOS flags and the chat template.

    The class is ``PreTrainedTokenizerFast``, which runs tokenizer.json as written: transformers 5 rebuilds a
    named class's own normalizer and pre-tokenizer (``LlamaTokenizer``'s Metaspace, ``GPT2Tokenizer``'s plain
    regex) from the vocabulary alone, and would drop what this module put there.
    """
    tokens: list[str] = _required(meta, "tokenizer.ggml.tokens")
    flags = Flags.of(meta)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": flags.add_bos,
        "add_eos_token": flags.add_eos,
        "add_prefix_space": flags.add_space_prefix,
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
