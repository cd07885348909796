"""Llama (and SmolLM2, which is Llama with tied embeddings): config reading and the HF weight-name map."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from webbuild.build.arch.blocks import DecoderConfig


def config_from_hf(hf: dict[str, Any], context_window_size: int, prefill_chunk_size: int) -> DecoderConfig:
    heads = hf["num_attention_heads"]
    return DecoderConfig(
        model_type="llama",
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        vocab_size=hf["vocab_size"],
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        context_window_size=min(context_window_size, hf.get("max_position_embeddings", context_window_size)),
        prefill_chunk_size=prefill_chunk_size,
    )


def convert_weights(hf: dict[str, np.ndarray], cfg: DecoderConfig) -> Iterator[tuple[str, np.ndarray]]:
    """HF names -> ours: q/k/v fuse into ``qkv_proj`` and gate/up into ``gate_up_proj`` (fewer kernels)."""
    yield "model.embed_tokens.weight", hf["model.embed_tokens.weight"]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        attn, mlp = f"{p}.self_attn", f"{p}.mlp"
        yield f"{p}.input_layernorm.weight", hf[f"{p}.input_layernorm.weight"]
        yield f"{attn}.qkv_proj.weight", np.concatenate([hf[f"{attn}.{x}_proj.weight"] for x in "qkv"], axis=0)
        yield f"{attn}.o_proj.weight", hf[f"{attn}.o_proj.weight"]
        yield f"{p}.post_attention_layernorm.weight", hf[f"{p}.post_attention_layernorm.weight"]
        yield (
            f"{mlp}.gate_up_proj.weight",
            np.concatenate([hf[f"{mlp}.gate_proj.weight"], hf[f"{mlp}.up_proj.weight"]], axis=0),
        )
        yield f"{mlp}.down_proj.weight", hf[f"{mlp}.down_proj.weight"]
    yield "model.norm.weight", hf["model.norm.weight"]
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", hf["lm_head.weight"]
