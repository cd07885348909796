"""An independent numpy Llama (HF semantics) used as the reference for the compiled engines."""

from __future__ import annotations

import numpy as np


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """HF's rotate-half RoPE over the last axis of x: [seq, heads, head_dim]."""
    d = x.shape[-1]
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]
    cos = np.cos(np.concatenate([angles, angles], -1))[:, None, :]
    sin = np.sin(np.concatenate([angles, angles], -1))[:, None, :]
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return (x * cos + rotated * sin).astype(np.float32)


def llama_logits(hf: dict[str, np.ndarray], config: dict, token_ids: list[int]) -> np.ndarray:
    """Logits [seq, vocab] for every position of ``token_ids`` (causal attention, full precision)."""
    h, kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or config["hidden_size"] // h
    eps, theta = config["rms_norm_eps"], config["rope_theta"]
    n = len(token_ids)
    pos = np.arange(n)
    x = hf["model.embed_tokens.weight"][token_ids].astype(np.float32)
    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        a = _rms_norm(x, hf[f"{p}.input_layernorm.weight"], eps)
        q = _rope((a @ hf[f"{p}.self_attn.q_proj.weight"].T).reshape(n, h, d), pos, theta)
        k = _rope((a @ hf[f"{p}.self_attn.k_proj.weight"].T).reshape(n, kv, d), pos, theta)
        v = (a @ hf[f"{p}.self_attn.v_proj.weight"].T).reshape(n, kv, d)
        k, v = np.repeat(k, h // kv, axis=1), np.repeat(v, h // kv, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(n, h * d)
        x = x + attn @ hf[f"{p}.self_attn.o_proj.weight"].T
        m = _rms_norm(x, hf[f"{p}.post_attention_layernorm.weight"], eps)
        gate = m @ hf[f"{p}.mlp.gate_proj.weight"].T
        up = m @ hf[f"{p}.mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ hf[f"{p}.mlp.down_proj.weight"].T
    x = _rms_norm(x, hf["model.norm.weight"], eps)
    head = hf["model.embed_tokens.weight"] if config.get("tie_word_embeddings") else hf["lm_head.weight"]
    return x @ head.T
