"""Tiny random-weight models of every supported family, made with transformers' own classes (CPU torch), saved
as a Hugging Face directory, and written as GGUF the way llama.cpp's converter writes them.

Tokenizers of the two kinds the families ship: GPT-2-style byte-level BPE (Llama 3, Qwen) and
SentencePiece-style BPE with byte fallback (Llama 2, Gemma, Phi-3), both built with ``tokenizers``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

# Prompts the tokenizer checks run: code, numbers and several scripts (multi-byte UTF-8, byte fallback).
PROMPTS = [
    "def square(x):\n    return x ** 2  # the square\n",
    "In 2024 the price rose 12.5% to 1,234.56 €.",
    "Café crème, naïve — déjà vu.",
    "你好，世界！今天天气很好。",
    "Привет, как дела?",
    "こんにちは 😀 and   three spaces\tand a tab",
]

_BPE_SPECIALS = {
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"],
    "llama3": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
}
_SPM_SPECIALS = {
    "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
    "phi3": ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"],
}
_MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("Ġ", "s")]
_PIECES = ["▁t", "he", "▁the", "in", "▁a", "er", "on", "▁s"]

QWEN3_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
TEMPLATES = {
    "qwen": QWEN3_TEMPLATE,
    "llama3": (
        "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
        " + m['content'] + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + m['content'] + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
    "phi3": (
        "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
}
# special tokens of each kind: (bos, eos, pad)
_ROLES = {
    "qwen": ("<|endoftext|>", "<|im_end|>", "<|endoftext|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>"),
    "gemma": ("<bos>", "<end_of_turn>", "<pad>"),
    "phi3": ("<s>", "<|end|>", "<|endoftext|>"),
}


def byte_level_bpe(kind: str) -> Tokenizer:
    """GPT-2-style: bytes as printable characters, a few merges, specials matched whole."""
    specials = _BPE_SPECIALS[kind]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = specials + alphabet + ["".join(m) for m in _MERGES]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=list(_MERGES)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def sentencepiece_bpe(kind: str) -> Tokenizer:
    """SentencePiece-style (Llama 2 / Gemma / Phi-3 tokenizer.json): '▁' for spaces, BPE over pieces, unknown
    characters as <0xXX> byte tokens."""
    specials = _SPM_SPECIALS[kind]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    letters = sorted(set("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()#*%€-—\n\t"))
    tokens = specials + byte_tokens + letters + _PIECES
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("▁", "a"), ("e", "r"), ("o", "n"), ("▁", "s")]
    bpe = models.BPE(
        vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True
    )
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return tok


def tokenizer_for(kind: str) -> Tokenizer:
    return byte_level_bpe(kind) if kind in _BPE_SPECIALS else sentencepiece_bpe(kind)


def tokenizer_config(kind: str) -> dict[str, Any]:
    bos, eos, pad = _ROLES[kind]
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad,
        "add_bos_token": False,
        "chat_template": TEMPLATES[kind],
    }


@dataclass(frozen=True)
class Family:
    """A family's tiny test model: its transformers config class and fields, and its tokenizer kind."""

    model_type: str
    config_class: str
    fields: dict[str, Any]
    tokenizer: str
    gguf_arch: str


_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "max_position_embeddings": 1024}
FAMILIES = {
    "llama": Family(
        "llama",
        "LlamaConfig",
        _SHAPE
        | {
            "max_position_embeddings": 131072,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                # Llama 3.x's: with head_dim 16 and theta 5e5, pairs 0-3 keep their frequency, pair 4 is blended
                # (wavelength between 8192/4 and 8192) and pairs 5-7 are divided by 8.
                "original_max_position_embeddings": 8192,
            },
            "tie_word_embeddings": True,
        },
        "llama3",
        "llama",
    ),
    "qwen2": Family(
        "qwen2",
        "Qwen2Config",
        _SHAPE | {"num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": False},
        "qwen",
        "qwen2",
    ),
    "qwen3": Family(
        "qwen3",
        "Qwen3Config",
        _SHAPE | {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "tie_word_embeddings": True},
        "qwen",
        "qwen3",
    ),
    "phi3": Family(
        "phi3",
        "Phi3Config",
        _SHAPE
        | {
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "original_max_position_embeddings": 128,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [1.0 + 0.25 * i for i in range(8)],
                "long_factor": [2.0 + 0.5 * i for i in range(8)],
            },
            "sliding_window": 2047,
            "tie_word_embeddings": False,
        },
        "phi3",
        "phi3",
    ),
    "gemma3": Family(
        "gemma3_text",
        "Gemma3TextConfig",
        _SHAPE
        | {
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "query_pre_attn_scalar": 64,
            "sliding_window": 256,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            "tie_word_embeddings": True,
        },
        "gemma",
        "gemma3",
    ),
}


def make_hf_model(family: str, seed: int = 0, **overrides: Any) -> Any:
    """The transformers model of ``family`` (``overrides`` change config fields), weights drawn with a spread
    that makes logits decisive."""
    import torch
    import transformers

    spec = FAMILIES[family]
    tok = tokenizer_for(spec.tokenizer)
    bos, eos, pad = (tok.token_to_id(t) for t in _ROLES[spec.tokenizer])
    config = getattr(transformers, spec.config_class)(
        **(spec.fields | overrides),
        vocab_size=tok.get_vocab_size(),
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator) * 0.1
            # Norm weights near 1 (Gemma stores w of (1 + w), so near 0 there).
            offset = 1.0 if "norm" in name and spec.model_type != "gemma3_text" else 0.0
            p.copy_(noise + offset)
    return model.eval()


def write_hf_dir(path: Path, family: str, seed: int = 0, **overrides: Any) -> Path:
    """``save_pretrained`` safetensors + config.json, and the family's tokenizer files."""
    spec = FAMILIES[family]
    make_hf_model(family, seed, **overrides).save_pretrained(path, safe_serialization=True)
    (path / "tokenizer.json").write_text(tokenizer_for(spec.tokenizer).to_str())
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(spec.tokenizer)))
    return path


# --- GGUF, as llama.cpp's converter writes each family (names written here independently of webbuild) ----------

_GGUF_BLOCK = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_GEMMA_BLOCK = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
_GGUF_TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}


def gguf_name(hf: str, family: str) -> str:
    stem, kind = hf.rsplit(".", 1)
    if stem in _GGUF_TOP:
        return f"{_GGUF_TOP[stem]}.{kind}"
    _, _, layer, module = stem.split(".", 3)
    names = _GGUF_BLOCK | (_GEMMA_BLOCK if family == "gemma3" else {})
    return f"blk.{layer}.{names[module]}.{kind}"


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_cpp_rope_freqs(rope: dict[str, Any], head_dim: int) -> np.ndarray:
    """Llama 3's ``rope_freqs`` as llama.cpp's converter computes it (in torch float32, pair by pair): 1 for short
    wavelengths, ``factor`` for long ones, the inverse of the blended scale between. (The converter looks for
    original_max_position_embeddings beside, not in, the RoPE parameters, defaulting to Llama 3.x's 8192; this
    takes it from the parameters, where transformers keeps it, which is the same value for Llama 3.x.)"""
    import torch

    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    freqs = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32).numpy()


def rope_factor_tensors(writer: gguf.GGUFWriter, config: dict[str, Any], head_dim: int) -> dict[str, np.ndarray]:
    """The RoPE scaling llama.cpp's converter keeps as tensors (and, for longrope, the metadata beside them)."""
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type") == "llama3":
        return {"rope_freqs.weight": llama_cpp_rope_freqs(rope, head_dim)}
    if rope.get("rope_type") != "longrope":
        return {}
    original = rope["original_max_position_embeddings"]
    scale = config["max_position_embeddings"] / original
    writer.add_rope_scaling_orig_ctx_len(original)
    writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0)
    return {
        "rope_factors_long.weight": np.array(rope["long_factor"], np.float32),
        "rope_factors_short.weight": np.array(rope["short_factor"], np.float32),
    }


def write_gguf(path: Path, hf_dir: Path, family: str, rope_factors: dict[str, np.ndarray] | None = None) -> Path:
    """The HF directory's model as a GGUF file: llama.cpp's names and metadata keys, Llama's Q/K rows permuted,
    Gemma's norms stored as (1 + w), RoPE scaling as llama.cpp's factor tensors (``rope_factors``: other values
    for some of them, to make a damaged file)."""
    from safetensors.numpy import load_file

    spec = FAMILIES[family]
    config = json.loads((hf_dir / "config.json").read_text())
    tensors = load_file(str(hf_dir / "model.safetensors"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(path, spec.gguf_arch)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    rope = config.get("rope_parameters") or {}
    if family == "gemma3":
        writer.add_rope_freq_base(rope["full_attention"]["rope_theta"])
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["full_attention"]["factor"])
        writer.add_sliding_window(config["sliding_window"])
        writer.add_uint32(f"{spec.gguf_arch}.attention.sliding_window_pattern", 2)
    else:
        writer.add_rope_freq_base(rope.get("rope_theta", 10000.0))
    if family == "phi3":
        writer.add_sliding_window(config.get("sliding_window") or 0)
    for name, array in (rope_factor_tensors(writer, config, head_dim) | (rope_factors or {})).items():
        writer.add_tensor(name, array)
    for name, array in tensors.items():
        array = array.astype(np.float32)
        if family == "llama" and name.endswith("q_proj.weight"):
            array = llama_cpp_permute(array, heads)
        elif family == "llama" and name.endswith("k_proj.weight"):
            array = llama_cpp_permute(array, kv_heads)
        elif family == "gemma3" and name.endswith("norm.weight"):
            array = array + np.float32(1)
        writer.add_tensor(gguf_name(name, family), array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
