"""Rotary position embeddings as HF configs describe them, reduced to what the blocks apply.

Every RoPE variant the families use changes only the inverse frequency of each rotated pair (and, for
``longrope``, the magnitude of cos/sin), so a config's rope parameters become one ``Rope``: the per-pair
inverse frequencies and an attention factor. The blocks rotate with those numbers and never see a variant name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from webbuild.errors import UnsupportedError

SUPPORTED = ("default", "linear", "llama3", "longrope")


@dataclass(frozen=True)
class Rope:
    """``inv_freq[i]`` rotates dims (i, i + d/2) (HF's rotate-half layout); cos and sin are scaled by
    ``attention_factor``."""

    inv_freq: tuple[float, ...]
    attention_factor: float = 1.0


def rope_kind(params: dict[str, Any]) -> str:
    """The variant's name: ``rope_type`` (older configs: ``type``), ``default`` when absent."""
    return str(params.get("rope_type") or params.get("type") or "default")


def make_rope(
    params: dict[str, Any], head_dim: int, *, max_position_embeddings: int, context_window_size: int, where: str
) -> Rope:
    """A ``Rope`` from one set of HF rope parameters (``rope_theta`` included); UnsupportedError for a variant
    or a field that is not implemented, naming the supported ones."""
    kind = rope_kind(params)
    if kind not in SUPPORTED:
        raise UnsupportedError(
            f"{where}: RoPE scaling {kind!r} is not supported; supported: {', '.join(SUPPORTED)}",
            tip="a checkpoint with another rope_scaling type would give wrong outputs, so it is refused",
        )
    partial = float(params.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise UnsupportedError(
            f"{where}: partial rotary embeddings (partial_rotary_factor {partial}) are not supported"
        )
    theta = float(params.get("rope_theta", 10000.0))
    # HF computes the base frequencies in float32; so do we, so both rotate by the same angles.
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** exponents)).astype(np.float32)
    factor = 1.0
    if kind == "linear":
        inv_freq = inv_freq / np.float32(params["factor"])
    elif kind == "llama3":
        inv_freq = _llama3(inv_freq, params)
    elif kind == "longrope":
        inv_freq, factor = _longrope_short(inv_freq, params, max_position_embeddings, context_window_size, where)
    return Rope(tuple(float(f) for f in inv_freq.astype(np.float32)), factor)


def _llama3(inv_freq: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Llama 3.1's scaling: long wavelengths divided by ``factor``, short ones kept, a smooth blend between."""
    factor, low, high = float(p["factor"]), float(p["low_freq_factor"]), float(p["high_freq_factor"])
    old_context = float(p["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return np.where(medium, blended, scaled).astype(np.float32)


def longrope_attention_factor(factor: float, original: int) -> float:
    """transformers' default ``longrope`` attention factor for a context ``factor`` times the original one."""
    return 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))


def _longrope_short(
    inv_freq: np.ndarray, p: dict[str, Any], max_positions: int, context_window_size: int, where: str
) -> tuple[np.ndarray, float]:
    """Phi-3's ``longrope`` within its original context: the ``short_factor`` divisors and the attention factor.

    transformers picks the factors per forward pass: ``short_factor`` while the positions stay within
    ``original_max_position_embeddings``, ``long_factor`` for every position once a sequence grows beyond it. A
    context window within the original one never grows beyond it, so short factors are what transformers uses at
    every length this build runs; past it, keys cached with the short factors would need rotating again, which a
    KV cache cannot do, so a longer context window is refused. The attention factor does not depend on the length.
    """
    original = int(p.get("original_max_position_embeddings") or 0)
    if not original:
        raise UnsupportedError(f"{where}: longrope scaling without original_max_position_embeddings")
    if context_window_size > original:
        raise UnsupportedError(
            f"{where}: longrope scaling is supported up to original_max_position_embeddings ({original} tokens); "
            f"a {context_window_size}-token context window would need its long factors",
            tip=f"build with --context-window-size {original} or less",
            param="context_window_size",
        )
    short = np.asarray(p["short_factor"], dtype=np.float32)
    if short.shape != inv_freq.shape:
        raise UnsupportedError(f"{where}: longrope short_factor has {short.size} entries, expected {inv_freq.size}")
    factor = p.get("attention_factor")
    if factor is None:  # as transformers: from ``factor``, else from how far max_position_embeddings reaches
        factor = longrope_attention_factor(float(p.get("factor") or max_positions / original), original)
    return (inv_freq / short).astype(np.float32), float(factor)
