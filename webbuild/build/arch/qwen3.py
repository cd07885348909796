"""Qwen3: Qwen2 without the Q/K/V biases, with a per-head RMSNorm on Q and K before RoPE."""

from __future__ import annotations

from typing import Any

from webbuild.build.arch import llama
from webbuild.build.arch.config import DecoderConfig, HFConfig, llama_like
from webbuild.build.arch.qwen2 import sliding_window
from webbuild.build.arch.weights import LLAMA_BLOCK_NAMES, GGUFKeys, GGUFLayout, llama_like_gguf_config

NAME = "qwen3"
convert_weights = llama.convert_weights


def config_from_hf(hf: dict[str, Any], context_window_size: int, prefill_chunk_size: int) -> DecoderConfig:
    cfg = HFConfig(hf, NAME)
    if cfg.get("attention_bias", False):
        cfg.refuse("attention_bias", "Qwen3 projection biases are not implemented", supported="false")
    return llama_like(cfg, context_window_size, prefill_chunk_size, qk_norm=True, **sliding_window(cfg))


def _gguf_config(keys: GGUFKeys, tensor_names: list[str]) -> dict[str, Any]:
    return llama_like_gguf_config(keys, tensor_names, NAME) | {"architectures": ["Qwen3ForCausalLM"]}


GGUF = GGUFLayout(
    NAME,
    _gguf_config,
    block_names=LLAMA_BLOCK_NAMES | {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"},
)
