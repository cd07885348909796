"""Llama (Llama 2, Llama 3.x with ``llama3`` RoPE scaling, SmolLM, TinyLlama): the base the other families vary.

HF -> ours: q/k/v fuse into ``qkv_proj`` and gate/up into ``gate_up_proj`` (fewer, larger matmuls). In GGUF,
llama.cpp's converter permutes the Q/K rows of Llama (its RoPE rotates adjacent pairs); reading undoes it. Llama 3's
scaling is a ``rope_freqs`` tensor there (weights.rope_scaling reads it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from webbuild.build.arch.config import DecoderConfig, HFConfig, llama_like
from webbuild.build.arch.weights import GGUFKeys, GGUFLayout, Tensors, llama_like_gguf_config, unpermute_qk

NAME = "llama"


def config_from_hf(hf: dict[str, Any], context_window_size: int, prefill_chunk_size: int) -> DecoderConfig:
    cfg = HFConfig(hf, NAME)
    if cfg.get("attention_bias", False):
        cfg.refuse(
            "attention_bias",
            "Llama has no projection biases (a Qwen2 checkpoint keeps model_type qwen2)",
            supported="false",
        )
    return llama_like(cfg, context_window_size, prefill_chunk_size)


def convert_layer(t: Tensors, p: str, cfg: DecoderConfig) -> Iterator[tuple[str, np.ndarray]]:
    """One decoder layer of a Llama-layout checkpoint (separate q/k/v and gate/up projections)."""
    attn, mlp = f"{p}.self_attn", f"{p}.mlp"
    yield f"{p}.input_layernorm.weight", t.take(f"{p}.input_layernorm.weight")
    yield f"{attn}.qkv_proj.weight", t.fuse(*(f"{attn}.{x}_proj.weight" for x in "qkv"))
    if cfg.qkv_bias:
        yield f"{attn}.qkv_bias", t.fuse(*(f"{attn}.{x}_proj.bias" for x in "qkv"))
    if cfg.qk_norm:
        yield f"{attn}.q_norm.weight", t.take(f"{attn}.q_norm.weight")
        yield f"{attn}.k_norm.weight", t.take(f"{attn}.k_norm.weight")
    yield f"{attn}.o_proj.weight", t.take(f"{attn}.o_proj.weight")
    yield f"{p}.post_attention_layernorm.weight", t.take(f"{p}.post_attention_layernorm.weight")
    yield f"{mlp}.gate_up_proj.weight", t.fuse(f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight")
    yield f"{mlp}.down_proj.weight", t.take(f"{mlp}.down_proj.weight")


def convert_weights(t: Tensors, cfg: DecoderConfig) -> Iterator[tuple[str, np.ndarray]]:
    yield "model.embed_tokens.weight", t.take("model.embed_tokens.weight")
    for i in range(cfg.num_hidden_layers):
        yield from convert_layer(t, f"model.layers.{i}", cfg)
    yield from convert_head(t, cfg)


def convert_head(t: Tensors, cfg: DecoderConfig) -> Iterator[tuple[str, np.ndarray]]:
    yield "model.norm.weight", t.take("model.norm.weight")
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", t.take("lm_head.weight")


def _gguf_config(keys: GGUFKeys, tensor_names: list[str]) -> dict[str, Any]:
    return llama_like_gguf_config(keys, tensor_names, NAME) | {"architectures": ["LlamaForCausalLM"]}


def _gguf_to_hf(name: str, array: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    if name.endswith(("q_proj.weight", "q_proj.bias")):
        return unpermute_qk(array, config["num_attention_heads"])
    if name.endswith(("k_proj.weight", "k_proj.bias")):
        return unpermute_qk(array, config["num_key_value_heads"])
    return array


GGUF = GGUFLayout(NAME, _gguf_config, to_hf=_gguf_to_hf, rope_factors=("rope_freqs.weight",))
