"""Gemma 3 text (``Gemma3ForCausalLM``, model_type ``gemma3_text``): Llama with RMSNorm weights used as
(1 + w), embeddings scaled by sqrt(hidden_size), norms after attention and MLP too, per-head Q/K norms, a
GELU-tanh gated MLP, softmax scale ``query_pre_attn_scalar ** -0.5`` and interleaved sliding-window (local)
and global layers, each kind with its own RoPE.

The (1 + w) is folded into the stored norm weights, so the blocks use plain RMSNorm; llama.cpp's converter
does the same, so GGUF norms are used as stored and only turned back into HF's w here. The local layers
attend to the last ``sliding_window`` positions through the KV cache's per-layer windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from webbuild.build.arch.config import DecoderConfig, HFConfig, llama_like, sliding_attention
from webbuild.build.arch.weights import LLAMA_BLOCK_NAMES, GGUFKeys, GGUFLayout, Tensors, llama_like_gguf_config

NAME = "gemma3_text"
_LOCAL_BASE = 10000.0  # RoPE base of the local layers when a config does not say (older configs, llama.cpp)


def _local_layers(cfg: HFConfig, layers: int) -> tuple[int, ...]:
    """Every ``pattern``-th layer is global, the others local (configs without ``layer_types``)."""
    pattern = int(cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or 6)
    return tuple(i for i in range(layers) if (i + 1) % pattern)


def config_from_hf(hf: dict[str, Any], context_window_size: int, prefill_chunk_size: int) -> DecoderConfig:
    cfg = HFConfig(hf, NAME)
    params = cfg.rope_parameters()
    local = params.get("sliding_attention") or {"rope_theta": cfg.get("rope_local_base_freq", _LOCAL_BASE)}
    for flag, off in (("attention_bias", False), ("use_bidirectional_attention", False)):
        if cfg.get(flag, off):
            cfg.refuse(flag, "not part of Gemma 3 text", supported=str(off).lower())
    hidden, scalar = int(cfg.require("hidden_size")), float(cfg.require("query_pre_attn_scalar"))
    cfg.require("sliding_window")  # transformers' default (4096) would apply to a config without one
    decoder = llama_like(
        cfg,
        context_window_size,
        prefill_chunk_size,
        rope=params["full_attention"],
        qk_norm=True,
        sandwich_norms=True,
        activation=cfg.activation("hidden_activation"),
        embedding_scale=math.sqrt(hidden),
        attention_scale=scalar**-0.5,
        **sliding_attention(cfg, _local_layers(cfg, int(cfg.require("num_hidden_layers")))),
    )
    sliding = cfg.rope(local, decoder.head_dim, decoder.context_window_size)
    return dataclasses.replace(decoder, sliding_rope=sliding)


# HF Gemma 3 name -> ours, per layer (ours follow Llama: post_attention_layernorm is the norm before the MLP).
_LAYER_NAMES = {
    "input_layernorm.weight": "input_layernorm.weight",
    "post_attention_layernorm.weight": "attn_output_norm.weight",
    "pre_feedforward_layernorm.weight": "post_attention_layernorm.weight",
    "post_feedforward_layernorm.weight": "mlp_output_norm.weight",
    "self_attn.q_norm.weight": "self_attn.q_norm.weight",
    "self_attn.k_norm.weight": "self_attn.k_norm.weight",
    "self_attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}


def _norm(w: np.ndarray) -> np.ndarray:
    return w + np.float32(1)


def convert_weights(t: Tensors, cfg: DecoderConfig) -> Iterator[tuple[str, np.ndarray]]:
    yield "model.embed_tokens.weight", t.take("model.embed_tokens.weight")
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        attn, mlp = f"{p}.self_attn", f"{p}.mlp"
        yield f"{attn}.qkv_proj.weight", t.fuse(*(f"{attn}.{x}_proj.weight" for x in "qkv"))
        yield f"{mlp}.gate_up_proj.weight", t.fuse(f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight")
        for hf_name, ours in _LAYER_NAMES.items():
            w = t.take(f"{p}.{hf_name}")
            yield f"{p}.{ours}", _norm(w) if "norm" in hf_name else w
    yield "model.norm.weight", _norm(t.take("model.norm.weight"))
    if not cfg.tie_word_embeddings:
        yield "lm_head.weight", t.take("lm_head.weight")


def _gguf_config(keys: GGUFKeys, tensor_names: list[str]) -> dict[str, Any]:
    config = llama_like_gguf_config(keys, tensor_names, NAME)
    layers = config["num_hidden_layers"]
    pattern = keys.get("attention.sliding_window_pattern", 6)
    sliding = (
        [bool(p) for p in pattern] if isinstance(pattern, list) else [(i + 1) % pattern != 0 for i in range(layers)]
    )
    return config | {
        "architectures": ["Gemma3ForCausalLM"],
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": config["head_dim"],
        "sliding_window": int(keys.get("attention.sliding_window")),
        "layer_types": ["sliding_attention" if s else "full_attention" for s in sliding],
        "rope_local_base_freq": keys.f32("rope.freq_base_swa", _LOCAL_BASE),
    }


def _gguf_to_hf(name: str, array: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    return array - np.float32(1) if name.endswith("norm.weight") else array


GGUF = GGUFLayout(
    "gemma3",
    _gguf_config,
    block_names=LLAMA_BLOCK_NAMES
    | {
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
        "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm",
    },
    to_hf=_gguf_to_hf,
)
