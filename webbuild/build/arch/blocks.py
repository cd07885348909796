"""Transformer building blocks written once for every decoder-only architecture.

An architecture file only describes its config and weight names; everything that becomes TVM IR lives here,
so the webgpu, llvm and cuda builds share one definition.
"""

from __future__ import annotations

from typing import Any

from tvm import relax as rx
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from webbuild.build.arch.config import DecoderConfig
from webbuild.build.arch.rope import Rope
from webbuild.build.quantize import QuantScheme
from webbuild.build.quantize.linear import make_linear


def _select(values: tuple[float, ...], i: Any, dtype: str) -> Any:
    """``values[i]`` for a TIR index ``i`` as a balanced tree of selects: per-dimension constants without
    a constant tensor in the module."""
    if len(values) == 1:
        return tirx.const(values[0], dtype)
    mid = len(values) // 2
    return tirx.Select(i < mid, _select(values[:mid], i, dtype), _select(values[mid:], i - mid, dtype))


def rotated_dim(x: Any, head: tuple[Any, ...], i: Any, position: Any, rope: Rope) -> Any:
    """Dim ``i`` of the head ``x[*head]`` rotated at ``position`` (HF's rotate-half RoPE: dim i pairs with
    i + d/2), in float32 and back to ``x``'s dtype. The blocks' ``apply_rope`` and the KV cache's split kernel
    (split_rope.py) both rotate with it, so either gives the same bits."""
    half = len(rope.inv_freq)
    angle = position.astype("float32") * _select(rope.inv_freq, tirx.indexmod(i, half), "float32")
    other = tirx.if_then_else(i < half, -x[(*head, i + half)], x[(*head, i - half)]).astype("float32")
    value = x[(*head, i)].astype("float32") * tirx.cos(angle) + other * tirx.sin(angle)
    return (value * tirx.const(rope.attention_factor, "float32")).astype(x.dtype)


def apply_rope(qkv: Tensor, positions: Tensor, rope: Rope, rotated_heads: int) -> Tensor:
    """Rotates the first ``rotated_heads`` heads (Q and K) of ``qkv [b, s, heads, d]`` at each token's
    position; the V heads pass through."""

    def compute(x: te.Tensor, pos: te.Tensor) -> te.Tensor:
        seq = x.shape[1]

        def rotate(b: Any, s: Any, h: Any, i: Any) -> Any:
            rotated = rotated_dim(x, (b, s, h), i, pos[b * seq + s], rope)
            return tirx.Select(h < rotated_heads, rotated, x[b, s, h, i])

        return te.compute(x.shape, rotate, name="rope")

    return op.tensor_expr_op(compute, "rope", [qkv, positions])


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig, scheme: QuantScheme, layer: int) -> None:
        self.num_q, self.num_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.rope, self.scale = cfg.rope_of(layer), cfg.softmax_scale
        qkv_rows = (self.num_q + 2 * self.num_kv) * self.head_dim
        self.qkv_proj = make_linear(cfg.hidden_size, qkv_rows, scheme)
        self.qkv_bias = nn.Parameter((qkv_rows,), scheme.model_dtype) if cfg.qkv_bias else None
        if cfg.qk_norm:
            self.q_norm = nn.RMSNorm(cfg.head_dim, -1, cfg.rms_norm_eps, bias=False, dtype=scheme.model_dtype)
            self.k_norm = nn.RMSNorm(cfg.head_dim, -1, cfg.rms_norm_eps, bias=False, dtype=scheme.model_dtype)
        self.qk_norm = cfg.qk_norm
        self.o_proj = make_linear(self.num_q * self.head_dim, cfg.hidden_size, scheme)

    def forward(self, x: Tensor, positions: Tensor | None, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        """``positions`` None: the KV cache's split kernel rotates Q and K (split_rope.py)."""
        b, s, _ = x.shape
        qkv = self.qkv_proj(x)
        if self.qkv_bias is not None:
            qkv = qkv + self.qkv_bias
        qkv = op.reshape(qkv, (b, s, self.num_q + 2 * self.num_kv, self.head_dim))
        if self.qk_norm:
            q, k, v = op.split(qkv, [self.num_q, self.num_q + self.num_kv], axis=2)
            qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)
        if positions is not None:
            qkv = apply_rope(qkv, positions, self.rope, self.num_q + self.num_kv)
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, self.num_q, sm_scale=self.scale)
        return self.o_proj(op.reshape(out, (b, s, self.num_q * self.head_dim)))


class GatedMLP(nn.Module):
    def __init__(self, cfg: DecoderConfig, scheme: QuantScheme) -> None:
        self.gate_up_proj = make_linear(cfg.hidden_size, 2 * cfg.intermediate_size, scheme)
        self.down_proj = make_linear(cfg.intermediate_size, cfg.hidden_size, scheme)
        self.activation = cfg.activation

    def forward(self, x: Tensor) -> Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        gate = op.gelu(gate, approximate="tanh") if self.activation == "gelu_tanh" else op.silu(gate)
        return self.down_proj(gate * up)


def _norm(cfg: DecoderConfig, scheme: QuantScheme) -> nn.RMSNorm:
    return nn.RMSNorm(cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=scheme.model_dtype)


class DecoderLayer(nn.Module):
    """Pre-norm residual blocks; with ``sandwich_norms`` the attention and MLP outputs are normed as well."""

    def __init__(self, cfg: DecoderConfig, scheme: QuantScheme, layer: int) -> None:
        self.input_layernorm = _norm(cfg, scheme)
        self.self_attn = Attention(cfg, scheme, layer)
        self.post_attention_layernorm = _norm(cfg, scheme)  # before the MLP, as Llama names it
        self.mlp = GatedMLP(cfg, scheme)
        if cfg.sandwich_norms:
            self.attn_output_norm = _norm(cfg, scheme)
            self.mlp_output_norm = _norm(cfg, scheme)
        self.sandwich = cfg.sandwich_norms

    def forward(self, x: Tensor, positions: Tensor | None, kv_cache: PagedKVCache, layer_id: int) -> Tensor:
        h = self.self_attn(self.input_layernorm(x), positions, kv_cache, layer_id)
        x = x + (self.attn_output_norm(h) if self.sandwich else h)
        h = self.mlp(self.post_attention_layernorm(x))
        return x + (self.mlp_output_norm(h) if self.sandwich else h)


class DecoderModel(nn.Module):
    def __init__(self, cfg: DecoderConfig, scheme: QuantScheme) -> None:
        self.embed_tokens = make_linear(cfg.hidden_size, cfg.vocab_size, scheme, "embedding")
        self.layers = nn.ModuleList([DecoderLayer(cfg, scheme, i) for i in range(cfg.num_hidden_layers)])
        self.norm = _norm(cfg, scheme)
        self.rope_in_blocks = cfg.shared_rope is None  # else in the KV cache's split kernel (split_rope.py)

    def forward(self, x: Tensor, kv_cache: PagedKVCache) -> Tensor:
        positions = kv_cache.get_query_positions(x.shape[0] * x.shape[1]) if self.rope_in_blocks else None
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, positions, kv_cache, layer_id)
        return x


def _last_position(x: Tensor) -> Tensor:
    def compute(x: te.Tensor) -> te.Tensor:
        b, s, h = x.shape
        return te.compute((b, 1, h), lambda i, _, k: x[i, s - 1, k], name="last_position")

    return op.tensor_expr_op(compute, "last_position", [x])


class CausalLM(nn.Module):
    """A decoder-only LM exposing the VM functions WebLLM looks up (ARTIFACTS.md) for one target."""

    def __init__(self, cfg: DecoderConfig, scheme: QuantScheme, target: Target) -> None:
        self.cfg, self.scheme, self.target = cfg, scheme, target
        self.model = DecoderModel(cfg, scheme)
        if not cfg.tie_word_embeddings:
            self.lm_head = make_linear(cfg.hidden_size, cfg.vocab_size, scheme, "head")

    def _head(self, hidden: Tensor) -> Tensor:
        """Final norm + LM head on the positions that need logits; logits are always float32."""
        hidden = self.model.norm(hidden)
        logits = self.model.embed_tokens(hidden) if self.cfg.tie_word_embeddings else self.lm_head(hidden)
        return logits if logits.dtype == "float32" else op.astype(logits, "float32")

    def _logits(self, hidden: Tensor) -> Tensor:
        return self._head(_last_position(hidden))

    def embed(self, input_ids: Tensor) -> Tensor:
        embeddings = self.model.embed_tokens.lookup(input_ids)
        if self.cfg.embedding_scale == 1.0:
            return embeddings
        # HF multiplies by the scale rounded to the model dtype (Gemma's sqrt(hidden_size)).
        return embeddings * self.cfg.embedding_scale

    def prefill(self, input_embed: Tensor, paged_kv_cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def decode(self, input_embed: Tensor, paged_kv_cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def batch_prefill(
        self, input_embeds: Tensor, logit_positions: Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[Tensor, PagedKVCache]:
        """Several sequences' new tokens concatenated [1, total, h]; logits at ``logit_positions`` (one per
        sequence, usually its last new token) -> [1, num_seq, vocab]."""
        hidden = self.model(input_embeds, paged_kv_cache)
        return self._head(op.take(hidden, logit_positions, axis=1)), paged_kv_cache

    def batch_decode(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        """One new token for each of ``batch`` sequences: [batch, 1, h] -> [batch, 1, vocab]."""
        return self._head(self.model(input_embeds, paged_kv_cache)), paged_kv_cache

    def batch_verify(self, input_embeds: Tensor, paged_kv_cache: PagedKVCache) -> tuple[Tensor, PagedKVCache]:
        """Logits at every new position [1, total, vocab]: teacher-forced scoring (``verify``)."""
        return self._head(self.model(input_embeds, paged_kv_cache)), paged_kv_cache

    def create_tir_paged_kv_cache(
        self,
        max_batch_size: tirx.Var,
        max_total_seq_len: tirx.Var,
        prefill_chunk_size: tirx.Var,
        page_size: tirx.Var,
        support_sliding_window: tirx.Var,
    ) -> PagedKVCache:
        cfg = self.cfg
        local = set(cfg.sliding_layers) if cfg.sliding_window else set()
        kinds = ["mha_sliding" if i in local else "mha" for i in range(cfg.num_hidden_layers)]
        # TVM 0.27's KV cache allocates the buffers every layer's fused QKV is split into only when some layer is
        # "mha" (paged_kv_cache.cc, temp_attn_q_device_): with every layer sliding (Phi-3) the first prefill fails
        # on a view of a null tensor. One more "mha" layer, which no block attends through, makes it allocate
        # them, for one layer's KV pages.
        if "mha" not in kinds:
            kinds.append("mha")
        return TIRPagedKVCache(
            attn_kind=kinds,
            layer_sliding_window_size=cfg.sliding_window or cfg.context_window_size,
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, len(kinds)]),
            num_hidden_layers=len(kinds),
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            qk_head_dim=cfg.head_dim,
            v_head_dim=cfg.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            # Our kernels rotate Q/K, the split kernel (split_rope.py) or the blocks (apply_rope): any scaling,
            # per-layer RoPE. NONE keeps TVM's attention kernels from rotating again.
            rope_mode=RopeMode.NONE,
            rope_scale=1,
            rope_theta=10000.0,
            rope_scaling={},
            rope_ext_factors=rx.prim_value(0),
            rotary_dim=cfg.head_dim,
            enable_disaggregation=False,
            dtype=self.scheme.model_dtype,
            target=self.target,
        )

    def export_spec(self) -> dict[str, Any]:
        hidden, dtype = self.cfg.hidden_size, self.scheme.model_dtype
        packed = {"param_mode": "packed", "effect_mode": "none"}
        kv = nn.spec.Object(object_type=PagedKVCache)
        return {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {
                "input_embed": nn.spec.Tensor([1, "seq_len", hidden], dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "decode": {"input_embed": nn.spec.Tensor([1, 1, hidden], dtype), "paged_kv_cache": kv, "$": packed},
            "batch_prefill": {
                "input_embeds": nn.spec.Tensor([1, "seq_len", hidden], dtype),
                "logit_positions": nn.spec.Tensor(["batch_size"], "int32"),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "batch_decode": {
                "input_embeds": nn.spec.Tensor(["batch_size", 1, hidden], dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "batch_verify": {
                "input_embeds": nn.spec.Tensor([1, "seq_len", hidden], dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "create_tir_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": {"param_mode": "none", "effect_mode": "none"},
            },
        }
