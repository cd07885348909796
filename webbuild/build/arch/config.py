"""The decoder config the blocks are built from, and the HF ``config.json`` reading every family shares.

A family file maps its HF config onto ``DecoderConfig`` through ``HFConfig``: fields it reads are marked
used, fields that change the computation but are not implemented are refused by name (``refuse``), so a
checkpoint never builds into a model that silently computes something else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from webbuild.build.arch.rope import Rope, make_rope, rope_kind
from webbuild.errors import UnsupportedError

ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}

# Config fields that change what a model computes, with the value meaning "off". A family that implements
# one reads it; any other family refuses a config where it is on (mixture of experts, softcapping ...).
_FEATURE_FIELDS: dict[str, Any] = {
    "attention_bias": False,
    "mlp_bias": False,
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
    "num_experts": None,
    "num_local_experts": None,
    "moe_intermediate_size": None,
    "use_sliding_window": False,
    "sliding_window": None,
    "partial_rotary_factor": 1.0,
    "pretraining_tp": 1,
    "use_bidirectional_attention": False,
    "qk_layernorm": False,
}


@dataclass(frozen=True)
class DecoderConfig:
    """Shape and flags of a decoder-only transformer; filled by a family's ``config_from_hf``."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    context_window_size: int
    prefill_chunk_size: int
    rope: Rope
    # Layers listed here attend to the last ``sliding_window`` positions only (0: to all) and rotate with
    # ``sliding_rope`` when one is given (Gemma 3's local layers have their own RoPE base).
    sliding_layers: tuple[int, ...] = ()
    sliding_window: int = 0
    sliding_rope: Rope | None = None
    qkv_bias: bool = False
    qk_norm: bool = False  # per-head RMSNorm of Q and K before RoPE
    sandwich_norms: bool = False  # RMSNorm on the attention and MLP outputs too, before the residual add
    activation: str = "silu"  # of the gated MLP: "silu" | "gelu_tanh"
    embedding_scale: float = 1.0  # embeddings are multiplied by it (not the tied LM head)
    attention_scale: float = 0.0  # softmax scale; 0 means head_dim ** -0.5

    def rope_of(self, layer: int) -> Rope:
        return self.sliding_rope if self.sliding_rope and layer in self.sliding_layers else self.rope

    @property
    def shared_rope(self) -> Rope | None:
        """The RoPE of every layer when all rotate alike (then the KV cache's split kernel rotates: split_rope.py);
        None when layers differ (Gemma 3's local layers)."""
        ropes = {self.rope_of(layer) for layer in range(self.num_hidden_layers)}
        return ropes.pop() if len(ropes) == 1 else None

    @property
    def softmax_scale(self) -> float:
        return self.attention_scale or self.head_dim**-0.5

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class HFConfig:
    """An HF ``config.json`` dict being read by one family: ``get``/``require`` mark fields as read."""

    def __init__(self, hf: dict[str, Any], family: str) -> None:
        self.hf, self.family = hf, family
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        value = self.hf.get(key)
        return default if value is None else value

    def require(self, key: str) -> Any:
        self.read.add(key)
        if self.hf.get(key) is None:
            raise UnsupportedError(f"{self.family} config.json lacks {key}")
        return self.hf[key]

    def refuse(self, key: str, why: str, *, supported: str = "") -> None:
        raise UnsupportedError(
            f"{self.family} config field {key} = {self.hf.get(key)!r} is not supported: {why}"
            + (f"; supported: {supported}" if supported else ""),
            tip="building it anyway would give a model that answers differently from the original",
        )

    def check_features(self) -> None:
        """Refuses every feature field that is on and that the family did not read."""
        for key, off in _FEATURE_FIELDS.items():
            if key not in self.read and self.hf.get(key, off) not in (off, None):
                self.refuse(key, f"the {self.family} definition does not implement it")
        experts = sorted(k for k in self.hf if "expert" in k and self.hf[k] and k not in self.read)
        if experts:
            self.refuse(experts[0], "mixture-of-experts models are not supported")

    def activation(self, key: str = "hidden_act") -> str:
        name = str(self.get(key, "silu"))
        if name not in ACTIVATIONS:
            self.refuse(key, "unknown activation", supported=", ".join(ACTIVATIONS))
        return ACTIVATIONS[name]

    def rope_parameters(self) -> dict[str, dict[str, Any]]:
        """RoPE parameters per layer type (``full_attention``, ``sliding_attention``), from either config
        format: transformers 5's ``rope_parameters`` or the older ``rope_theta`` + ``rope_scaling``."""
        self.read.update({"rope_parameters", "rope_scaling", "rope_theta", "original_max_position_embeddings"})
        params = self.hf.get("rope_parameters")
        if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
            nested = {k: dict(v) for k, v in params.items()}
        else:
            flat = dict(params or self.hf.get("rope_scaling") or {})
            flat.setdefault("rope_theta", self.hf.get("rope_theta", 10000.0))
            nested = {"full_attention": flat}
        for p in nested.values():
            if "partial_rotary_factor" in self.hf:
                self.read.add("partial_rotary_factor")
                p.setdefault("partial_rotary_factor", self.hf["partial_rotary_factor"])
            if self.hf.get("original_max_position_embeddings") and rope_kind(p) in ("llama3", "longrope"):
                p["original_max_position_embeddings"] = self.hf["original_max_position_embeddings"]
        return nested

    def rope(self, params: dict[str, Any], head_dim: int, context_window_size: int) -> Rope:
        return make_rope(
            params,
            head_dim,
            max_position_embeddings=int(self.get("max_position_embeddings", context_window_size)),
            context_window_size=context_window_size,
            where=f"{self.family} config.json",
        )


def sliding_attention(cfg: HFConfig, default_layers: tuple[int, ...]) -> dict[str, Any]:
    """``sliding_window`` and ``sliding_layers`` flags for ``llama_like``: the layers ``layer_types`` marks
    ``sliding_attention`` (transformers 5 writes it), else ``default_layers``; window 0 when the config has none."""
    types = cfg.get("layer_types")
    layers = tuple(i for i, kind in enumerate(types) if kind == "sliding_attention") if types else default_layers
    return {"sliding_window": int(cfg.get("sliding_window") or 0), "sliding_layers": layers}


def llama_like(
    cfg: HFConfig,
    context_window_size: int,
    prefill_chunk_size: int,
    rope: dict[str, Any] | None = None,
    **flags: Any,
) -> DecoderConfig:
    """The fields every family shares (sizes, norm eps, the RoPE of full-attention layers), plus ``flags``.
    ``rope`` gives those RoPE parameters when the config has more than one kind (default: the only one).

    A ``sliding_window`` among the flags (for its ``sliding_layers``) is dropped when the context window fits in
    it, where it changes nothing; else prefill chunks are at most one window long: TVM's KV cache attends a
    chunk's tokens to each other without the window, which is then exact, and to the cached ones with it.
    """
    heads = int(cfg.require("num_attention_heads"))
    hidden = int(cfg.require("hidden_size"))
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    window = min(context_window_size, int(cfg.get("max_position_embeddings", context_window_size)))
    if flags.get("sliding_window", 0) >= window:
        flags["sliding_window"] = 0
    if rope is None:
        params = cfg.rope_parameters()
        if set(params) != {"full_attention"}:
            cfg.refuse("rope_parameters", "per-layer-type RoPE is not part of this family", supported="one RoPE")
        rope = params["full_attention"]
    decoder = DecoderConfig(
        model_type=cfg.family,
        hidden_size=hidden,
        intermediate_size=int(cfg.require("intermediate_size")),
        num_hidden_layers=int(cfg.require("num_hidden_layers")),
        num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        vocab_size=int(cfg.require("vocab_size")),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        context_window_size=window,
        prefill_chunk_size=min(prefill_chunk_size, flags.get("sliding_window") or prefill_chunk_size),
        rope=cfg.rope(rope, head_dim, window),
        **({"activation": cfg.activation()} | flags),
    )
    cfg.check_features()
    return decoder
