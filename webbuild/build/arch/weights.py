"""Weight-layout tools the family files share: reading HF tensors into the definition's parameters (every
tensor used or refused, none dropped), and the GGUF layout (tensor names, metadata, row permutations).

Row operations (fusing, splitting, llama.cpp's Q/K permutation) act on axis 0 only and never look at values,
so they apply unchanged to any array whose rows are whole output rows, quantized blocks included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webbuild import _log
from webbuild.build.arch.rope import longrope_attention_factor
from webbuild.errors import CorruptFileError, InputError, UnsupportedError

# Tensors some checkpoints carry that hold nothing the model needs (RoPE tables the definition recomputes).
_DERIVED = re.compile(r".*\.rotary_emb\.inv_freq")


class Tensors:
    """HF-named tensors being converted. ``take`` marks a tensor used; ``check_all_used`` refuses leftovers,
    because a tensor the definition does not use (a bias, an extra norm) means it would compute something else."""

    def __init__(self, tensors: dict[str, np.ndarray], origin: str) -> None:
        self.tensors, self.origin, self.used = tensors, origin, set[str]()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise InputError(f"{self.origin}: tensor {name} is missing from the weights")
        self.used.add(name)
        return self.tensors[name]

    def fuse(self, *names: str) -> np.ndarray:
        """Rows of several projections stacked into one (q/k/v -> qkv, gate/up -> gate_up)."""
        return np.concatenate([self.take(n) for n in names], axis=0)

    def check_all_used(self, family: str) -> None:
        unused = sorted(n for n in self.tensors if n not in self.used and not _DERIVED.fullmatch(n))
        if unused:
            more = f" (+{len(unused) - 6} more)" if len(unused) > 6 else ""
            raise UnsupportedError(
                f"{self.origin}: the {family} definition does not use the tensors {', '.join(unused[:6])}{more}",
                tip="the checkpoint has parts this architecture lacks (is its model_type right?); "
                "dropping them would give wrong outputs",
            )


def split_rows(w: np.ndarray, *sizes: int) -> list[np.ndarray]:
    """The inverse of fusing: consecutive row blocks of the given sizes."""
    if sum(sizes) != w.shape[0]:
        raise CorruptFileError(f"a fused tensor has {w.shape[0]} rows, expected {sum(sizes)}")
    return np.split(w, np.cumsum(sizes)[:-1], axis=0)


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF -> GGUF row order of a Q/K projection (llama.cpp's converter does it for Llama): within each head,
    HF keeps the two RoPE halves apart; GGUF interleaves them. The inverse of ``unpermute_qk``."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF -> HF row order of a Q/K projection (weight or bias)."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


class GGUFKeys:
    """``<arch>.*`` metadata of a GGUF file; a missing key without default is a CorruptFileError.

    ``rope_factors`` holds the file's RoPE frequency-factor tensors (by GGUF name): llama.cpp stores that part of
    the config as tensors, and it becomes config again here, never a weight."""

    _MISSING = object()

    def __init__(self, meta: dict[str, Any], where: str, rope_factors: dict[str, np.ndarray] | None = None) -> None:
        self.meta, self.where, self.arch = meta, where, meta["general.architecture"]
        self.rope_factors = rope_factors or {}

    def get(self, key: str, default: Any = _MISSING) -> Any:
        value = self.meta.get(f"{self.arch}.{key}", default)
        if value is self._MISSING:
            raise CorruptFileError(f"{self.where} lacks the metadata key {self.arch}.{key}")
        return value

    def f32(self, key: str, default: Any = _MISSING) -> float:
        """GGUF stores floats as float32; the short decimal it was written from (1e-05, not 9.99e-06)."""
        return float(str(np.float32(self.get(key, default))))


# GGUF block tensor part -> HF module path inside model.layers.{i}, as llama.cpp's converter names them.
LLAMA_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_TOP_RE = re.compile(r"(\w+)\.(weight|bias)")


def _as_is(name: str, array: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    return array


@dataclass(frozen=True)
class GGUFLayout:
    """How one family is stored in GGUF: tensor names, the HF config from its metadata, and the change
    (``to_hf``: HF name, array, HF config -> array) that undoes what llama.cpp's converter did to a tensor."""

    arch: str  # general.architecture
    config: Callable[[GGUFKeys, list[str]], dict[str, Any]]
    block_names: dict[str, str] = field(default_factory=lambda: dict(LLAMA_BLOCK_NAMES))
    to_hf: Callable[[str, np.ndarray, dict[str, Any]], np.ndarray] = _as_is
    # The RoPE frequency-factor tensors llama.cpp reads for this architecture (``GGUFKeys.rope_factors``).
    rope_factors: tuple[str, ...] = ()

    def hf_name(self, name: str) -> str | None:
        """HF name for a GGUF tensor name, or None when this family has no such tensor."""
        if m := _BLOCK_RE.fullmatch(name):
            part = self.block_names.get(m[2])
            return f"model.layers.{m[1]}.{part}.{m[3]}" if part else None
        if m := _TOP_RE.fullmatch(name):
            top = TOP_NAMES.get(m[1])
            return f"{top}.{m[2]}" if top else None
        return None


def llama_like_gguf_config(keys: GGUFKeys, tensor_names: list[str], model_type: str) -> dict[str, Any]:
    """The HF config fields that llama.cpp keeps under the same keys for Llama, Qwen, Phi and Gemma."""
    hidden = int(keys.get("embedding_length"))
    heads = int(keys.get("attention.head_count"))
    kv_heads = keys.get("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):  # per-layer counts; only a uniform list fits one definition
        if len(set(kv_heads)) != 1:
            raise UnsupportedError(f"{keys.where}: per-layer KV head counts are not supported")
        kv_heads = kv_heads[0]
    head_dim = int(keys.get("attention.key_length", hidden // heads))
    rope_dims = int(keys.get("rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise UnsupportedError(f"{keys.where}: partial rotary embeddings ({rope_dims} of {head_dim} dims)")
    context_length = int(keys.get("context_length", 2048))
    tokens = keys.meta.get("tokenizer.ggml.tokens")
    vocab = keys.get("vocab_size", len(tokens) if tokens else GGUFKeys._MISSING)
    config: dict[str, Any] = {
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": int(keys.get("feed_forward_length")),
        "num_hidden_layers": int(keys.get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv_heads),
        "head_dim": head_dim,
        "rms_norm_eps": keys.f32("attention.layer_norm_rms_epsilon", 1e-5),
        "rope_theta": keys.f32("rope.freq_base", 10000.0),
        "max_position_embeddings": context_length,
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "torch_dtype": "float32",
    }
    scaling = rope_scaling(keys, head_dim, context_length)
    if scaling:
        config["rope_scaling"] = scaling
    if scaling and "original_max_position_embeddings" in scaling:  # where Phi3Config reads it (default 4096)
        config["original_max_position_embeddings"] = scaling["original_max_position_embeddings"]
    for ours, key in (("bos_token_id", "bos"), ("pad_token_id", "padding")):
        value = keys.meta.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None:
            config[ours] = int(value)
    ends = end_token_ids(keys.meta, keys.where)
    if ends:  # one id as one int, several as HF's list (Gemma 3's config.json: [1, 106])
        config["eos_token_id"] = ends[0] if len(ends) == 1 else ends
    return config


# Besides eos, llama.cpp ends generation at the end-of-turn and end-of-message tokens a GGUF names (Gemma's
# ``<end_of_turn>``, Llama 3's ``<|eot_id|>`` and ``<|eom_id|>``); Ollama's converter writes its list of them as
# ``eos_token_ids``. Hugging Face lists them all in ``eos_token_id`` (config.json, generation_config.json).
_END_KEYS = tuple(f"tokenizer.ggml.{k}" for k in ("eos_token_id", "eot_token_id", "eom_token_id", "eos_token_ids"))


def end_token_ids(meta: dict[str, Any], where: str) -> list[int]:
    """The ids that end generation, eos first, as HF's ``eos_token_id`` list. An id past the vocabulary is left
    out, as llama.cpp leaves it out: no sampled token can match it."""
    n_tokens = len(meta.get("tokenizer.ggml.tokens") or ())
    ids: list[int] = []
    for key in _END_KEYS:
        value = meta.get(key, [])
        for token_id in value if isinstance(value, list) else [value]:
            if 0 <= int(token_id) < n_tokens:
                ids.append(int(token_id))
            else:
                _log.detail(f"{where}: ignoring {key} {token_id}, past the vocabulary of {n_tokens} tokens")
    return list(dict.fromkeys(ids))


_FREQS, _LONG, _SHORT = "rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"


def rope_scaling(keys: GGUFKeys, head_dim: int, context_length: int) -> dict[str, Any] | None:
    """The HF ``rope_scaling`` that computes what llama.cpp computes from a GGUF's RoPE metadata and
    frequency-factor tensors (None: plain RoPE); UnsupportedError for what has no exact HF counterpart.

    llama.cpp rotates pair i by ``pos * base^(-2i/d) / f[i]`` and scales cos and sin by
    ``rope.scaling.attn_factor`` (1 when absent). ``f`` is ``rope_freqs`` (Llama 3's scaling, which the converter
    computes from the HF ``llama3`` parameters) or, for Phi-3's ``longrope``, ``rope_factors_short`` when the
    context is within ``rope.scaling.original_context_length`` and ``rope_factors_long`` past it. transformers'
    ``longrope`` is that same computation (inverse frequencies divided by per-pair factors, short ones within the
    original context, and an attention factor), so both become ``longrope``: ``rope_freqs`` as the short and long
    factors of an original context as long as the whole one, where transformers' default attention factor is 1.
    The config then also loads in transformers (``verify --reference hf``).
    """
    scaling = keys.get("rope.scaling.type", None) or "none"
    factors = keys.rope_factors
    stored_attention = keys.get("rope.scaling.attn_factor", None)
    if not factors:
        if scaling not in ("none", "linear"):
            raise UnsupportedError(
                f"{keys.where}: RoPE scaling {scaling!r} in GGUF metadata is not supported; supported: none, linear, "
                "and llama.cpp's frequency-factor tensors (rope_freqs, rope_factors_long/short)"
            )
        if stored_attention not in (None, 1.0):
            raise UnsupportedError(
                f"{keys.where}: {keys.arch}.rope.scaling.attn_factor {stored_attention} without frequency-factor "
                "tensors is not supported"
            )
        return {"rope_type": "linear", "factor": keys.f32("rope.scaling.factor")} if scaling == "linear" else None
    if scaling not in ("none", "longrope"):  # llama.cpp would apply both, which no HF rope_type does
        raise UnsupportedError(
            f"{keys.where}: RoPE scaling {scaling!r} together with the tensors {', '.join(sorted(factors))} is not "
            "supported"
        )
    for name, f in factors.items():
        if f.shape != (head_dim // 2,):
            raise CorruptFileError(
                f"{keys.where}: {name} has shape {f.shape}; a head of {head_dim} dims rotates {head_dim // 2} pairs, "
                "one factor each",
                tip="the file does not match its own metadata; convert the model again",
            )
    if set(factors) == {_FREQS}:
        short = long = factors[_FREQS]
        original = context_length
    elif set(factors) == {_LONG, _SHORT}:
        short, long = factors[_SHORT], factors[_LONG]
        original = int(keys.get("rope.scaling.original_context_length", context_length))
    else:
        raise CorruptFileError(
            f"{keys.where}: RoPE frequency factors {', '.join(sorted(factors))}: expected {_FREQS} alone, or "
            f"{_LONG} with {_SHORT}"
        )
    params: dict[str, Any] = {
        "rope_type": "longrope",
        "short_factor": [float(x) for x in short],
        "long_factor": [float(x) for x in long],
        "original_max_position_embeddings": original,
    }
    # The converter writes transformers' default attention factor, rounded to float32. Left unset, it is
    # computed the way the Hugging Face config's is, not rounded; any other stored value is used as stored.
    default = longrope_attention_factor(context_length / original, original)
    if np.float32(1.0 if stored_attention is None else stored_attention) != np.float32(default):
        params["attention_factor"] = keys.f32("rope.scaling.attn_factor", 1.0)
    return params
