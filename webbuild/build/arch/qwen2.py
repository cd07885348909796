"""Qwen2 / Qwen2.5: Llama with biases on the Q, K and V projections (tied or separate output head).

GGUF keeps HF's Q/K row order for Qwen (no permutation) and stores the biases as ``attn_{q,k,v}.bias``.
"""

from __future__ import annotations

from typing import Any

from webbuild.build.arch import llama
from webbuild.build.arch.config import DecoderConfig, HFConfig, llama_like, sliding_attention
from webbuild.build.arch.weights import GGUFKeys, GGUFLayout, llama_like_gguf_config

NAME = "qwen2"
convert_weights = llama.convert_weights


def sliding_window(cfg: HFConfig) -> dict[str, Any]:
    """When ``use_sliding_window`` turns it on, the window applies to layers from ``max_window_layers`` on (as
    transformers reads Qwen configs); otherwise every layer attends to the whole context."""
    layers = int(cfg.require("num_hidden_layers"))
    first = int(cfg.get("max_window_layers", layers))
    flags = sliding_attention(cfg, tuple(range(first, layers)))
    return flags if cfg.get("use_sliding_window", False) else {}


def config_from_hf(hf: dict[str, Any], context_window_size: int, prefill_chunk_size: int) -> DecoderConfig:
    cfg = HFConfig(hf, NAME)
    return llama_like(cfg, context_window_size, prefill_chunk_size, qkv_bias=True, **sliding_window(cfg))


def _gguf_config(keys: GGUFKeys, tensor_names: list[str]) -> dict[str, Any]:
    return llama_like_gguf_config(keys, tensor_names, NAME) | {"architectures": ["Qwen2ForCausalLM"]}


GGUF = GGUFLayout(NAME, _gguf_config)
