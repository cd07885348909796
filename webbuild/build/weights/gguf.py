"""GGUF -> HF-layout float32 tensors and an HF-style config, using the PyPI ``gguf`` reader.

Three things differ from a Hugging Face checkpoint: tensor names (``blk.N.attn_q`` vs
``model.layers.N.self_attn.q_proj``), quantized storage (dequantized here with ``gguf.quants``), and for
Llama the rows of the Q and K projections, which llama.cpp's converter reorders from HF's rotate-half RoPE
layout to its interleaved one. ``unpermute_qk`` puts them back so every reader yields the same model.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from webbuild import _log
from webbuild.build.weights import check_architecture
from webbuild.errors import CorruptFileError, InputError, UnsupportedError

_TIP = "the file may be truncated or damaged; download it again"

# GGUF block tensor part -> HF module path inside model.layers.{i}
_BLOCK_NAMES = {
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
_TOP_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_TOP_RE = re.compile(r"(\w+)\.(weight|bias)")

# Architectures whose GGUF converter permutes Q/K rows (llama.cpp does it for Llama-family RoPE).
_PERMUTED_QK = {"llama"}


@dataclass
class GGUFModel:
    """What one GGUF file holds, in HF terms. ``metadata`` keeps every key (tokenizer ones included)."""

    path: Path
    architecture: str
    metadata: dict[str, Any]
    config: dict[str, Any]
    tensors: dict[str, np.ndarray]


def hf_tensor_name(name: str) -> str | None:
    """HF name for a GGUF tensor name, or None when it has no HF counterpart we know."""
    if m := _BLOCK_RE.fullmatch(name):
        part = _BLOCK_NAMES.get(m[2])
        return f"model.layers.{m[1]}.{part}.{m[3]}" if part else None
    if m := _TOP_RE.fullmatch(name):
        top = _TOP_NAMES.get(m[1])
        return f"{top}.{m[2]}" if top else None
    return None


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF -> GGUF row order of a Q/K projection (what llama.cpp's converter does); the inverse of
    ``unpermute_qk``. Within each head, HF keeps the two RoPE halves apart; GGUF interleaves them."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """GGUF -> HF row order of a Q/K projection (weight or bias)."""
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf(path: Path) -> gguf.GGUFReader:
    """A GGUFReader over ``path``; CorruptFileError naming the file when it is not a readable GGUF."""
    try:
        return gguf.GGUFReader(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from e
    except Exception as e:  # the reader parses untrusted bytes; any failure means a bad file
        raise CorruptFileError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})", tip=_TIP) from e


def read_metadata(reader: gguf.GGUFReader, path: Path) -> dict[str, Any]:
    """Every key/value pair as plain Python values (strings, numbers, lists)."""
    try:
        return {key: field.contents() for key, field in reader.fields.items()}
    except Exception as e:  # same reason as open_gguf
        raise CorruptFileError(f"{path}: unreadable GGUF metadata ({e})", tip=_TIP) from e


def load_gguf(path: Path) -> GGUFModel:
    """Read, dequantize and rename every tensor of a GGUF file; build its HF config."""
    path = Path(path)
    reader = open_gguf(path)
    meta = read_metadata(reader, path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CorruptFileError(f"{path} has no general.architecture metadata", tip=_TIP)
    check_architecture(arch, str(path))
    names = {t.name: hf_tensor_name(t.name) for t in reader.tensors}
    unknown = sorted(n for n, hf in names.items() if hf is None)
    if unknown:
        raise UnsupportedError(
            f"{path}: tensors with no Hugging Face {arch} counterpart: {', '.join(unknown[:8])}"
            + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""),
            tip="this GGUF uses features webbuild does not model yet",
        )
    config = config_from_gguf(meta, list(names), path)
    kinds = Counter(t.tensor_type.name for t in reader.tensors)
    _log.detail(f"{len(names)} tensors: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    tensors: dict[str, np.ndarray] = {}
    with _log.bar(len(reader.tensors), "dequantizing", unit="tensor") as bar:
        for t in reader.tensors:
            array = _dequantize(t, path)
            part = t.name.split(".")[2] if t.name.startswith("blk.") else ""
            if arch in _PERMUTED_QK and part in heads:
                array = unpermute_qk(array, heads[part])
            tensors[str(names[t.name])] = array
            bar.update()
    return GGUFModel(path=path, architecture=arch, metadata=meta, config=config, tensors=tensors)


def _dequantize(t: Any, path: Path) -> np.ndarray:
    # GGUF lists dimensions innermost first; numpy/HF list them outermost first.
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    try:
        array = gguf.quants.dequantize(t.data, t.tensor_type)
        out = np.asarray(array, dtype=np.float32).reshape(shape)
    except NotImplementedError as e:
        raise UnsupportedError(
            f"{path}: tensor {t.name} has type {t.tensor_type.name}, which cannot be dequantized"
        ) from e
    except (ValueError, TypeError) as e:
        raise CorruptFileError(f"{path}: tensor {t.name} is damaged ({e})", tip=_TIP) from e
    # F32 tensors come back as views of the memory map; copy so the result outlives the reader.
    return out.copy() if np.may_share_memory(out, t.data) else out


def config_from_gguf(meta: dict[str, Any], tensor_names: list[str], path: Path | str = "GGUF") -> dict[str, Any]:
    """An HF ``config.json`` dict from GGUF ``<arch>.*`` metadata (and the tensor list, for tied embeddings)."""
    arch = meta["general.architecture"]
    missing = object()

    def get(key: str, default: Any = missing) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is missing:
            raise CorruptFileError(f"{path} lacks the metadata key {arch}.{key}", tip=_TIP)
        return value

    hidden = int(get("embedding_length"))
    heads = int(get("attention.head_count"))
    kv_heads = get("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):  # per-layer counts; only a uniform list is a plain Llama
        if len(set(kv_heads)) != 1:
            raise UnsupportedError(f"{path}: per-layer KV head counts are not supported")
        kv_heads = kv_heads[0]
    head_dim = int(get("attention.key_length", hidden // heads))
    rope_dims = int(get("rope.dimension_count", head_dim))
    if rope_dims != head_dim:
        raise UnsupportedError(f"{path}: partial rotary embeddings ({rope_dims} of {head_dim} dims)")
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling not in ("none", None):
        raise UnsupportedError(f"{path}: RoPE scaling {scaling!r} is not supported")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = get("vocab_size", len(tokens) if tokens else missing)
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": arch,
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(kv_heads),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _f32(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 2048)),
        "vocab_size": int(vocab),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "attention_bias": any(n.endswith("attn_q.bias") for n in tensor_names),
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    for ours, key in (("bos_token_id", "bos"), ("eos_token_id", "eos"), ("pad_token_id", "padding")):
        value = meta.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None:
            config[ours] = int(value)
    return config


def _f32(value: Any) -> float:
    """GGUF stores floats as float32; give back the short decimal it was written from (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))
