"""Qwen2 / Qwen2.5: Llama with biases on the Q, K and V projections (tied or separate output head).

GGUF keeps HF's Q/K row order for Qwen (no permutation) and stores the biases as ``attn_{q,k,v}.bias``.
"""

from __future__ import annotations

from typing import Any

from webbuild.build.arch import llama
from webbuild.build.arch.config import DecoderConfig, HFConfig, llama_like
from webbuild.build.arch.weights import GGUFKeys, GGUFLayout, llama_like_gguf_config

NAME = "qwen2"
convert_weights = llama.convert_weights


def sliding_window(cfg: HFConfig) -> int:
    """Qwen's window, when ``use_sliding_window`` turns it on (the context is then limited to it)."""
    cfg.get("max_window_layers")
    cfg.get("layer_types")
    window = cfg.get("sliding_window")
    return int(window or 0) if cfg.get("use_sliding_window", False) else 0


def config_from_hf(hf: dict[str, Any], context_window_size: int, prefill_chunk_size: int) -> DecoderConfig:
    cfg = HFConfig(hf, NAME)
    return llama_like(cfg, context_window_size, prefill_chunk_size, sliding_window(cfg), qkv_bias=True)


def _gguf_config(keys: GGUFKeys, tensor_names: list[str]) -> dict[str, Any]:
    return llama_like_gguf_config(keys, tensor_names, NAME) | {"architectures": ["Qwen2ForCausalLM"]}


GGUF = GGUFLayout(NAME, _gguf_config)
