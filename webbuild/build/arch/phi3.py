"""Phi-3 / Phi-3.5-mini: Llama whose checkpoints already fuse ``qkv_proj`` and ``gate_up_proj`` (gate rows
first), with ``longrope`` RoPE scaling in the 128k variants, supported within the original context (4k).

Phi-3-mini-4k declares a 2047-token sliding window, which applies to every layer. GGUF stores the fused
tensors as ``attn_qkv`` and ``ffn_up``, and longrope's factors as ``rope_factors_long``/``rope_factors_short``
tensors (weights.rope_scaling reads them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from webbuild.build.arch import llama
from webbuild.build.arch.config import DecoderConfig, HFConfig, llama_like, sliding_attention
from webbuild.build.arch.rope import rope_kind
from webbuild.build.arch.weights import LLAMA_BLOCK_NAMES, GGUFKeys, GGUFLayout, Tensors, llama_like_gguf_config

NAME = "phi3"


def config_from_hf(hf: dict[str, Any], context_window_size: int, prefill_chunk_size: int) -> DecoderConfig:
    cfg = HFConfig(hf, NAME)
    rope = cfg.rope_parameters()["full_attention"]
    if rope_kind(rope) in ("su", "yarn"):  # early Phi-3 128k configs; transformers reads both as longrope
        rope = rope | {"rope_type": "longrope"}
    every_layer = tuple(range(int(cfg.require("num_hidden_layers"))))
    return llama_like(cfg, context_window_size, prefill_chunk_size, rope, **sliding_attention(cfg, every_layer))


def convert_weights(t: Tensors, cfg: DecoderConfig) -> Iterator[tuple[str, np.ndarray]]:
    yield "model.embed_tokens.weight", t.take("model.embed_tokens.weight")
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        for name in (
            "input_layernorm.weight",
            "self_attn.qkv_proj.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate_up_proj.weight",
            "mlp.down_proj.weight",
        ):
            yield f"{p}.{name}", t.take(f"{p}.{name}")
    yield from llama.convert_head(t, cfg)


def _gguf_config(keys: GGUFKeys, tensor_names: list[str]) -> dict[str, Any]:
    window = keys.get("attention.sliding_window", None)
    return llama_like_gguf_config(keys, tensor_names, NAME) | {
        "architectures": ["Phi3ForCausalLM"],
        "sliding_window": int(window) if window else None,
    }


_BLOCK_NAMES = {k: v for k, v in LLAMA_BLOCK_NAMES.items() if k not in ("attn_q", "attn_k", "attn_v", "ffn_gate")}
GGUF = GGUFLayout(
    NAME,
    _gguf_config,
    block_names=_BLOCK_NAMES | {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"},
    rope_factors=("rope_factors_long.weight", "rope_factors_short.weight"),
)
