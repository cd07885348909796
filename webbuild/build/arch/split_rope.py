"""The KV cache's split kernel rotating Q and K with our RoPE: one launch a layer fewer than rotating in the block.

Before attending, TVM 0.27's paged KV cache splits each layer's fused QKV into Q, K and V with its
``tir_split_rotary`` kernel (paged_kv_cache.cc, ``f_split_rotary``), which would also rotate if the cache's RoPE
mode were NORMAL, with TVM's own RoPE variants, none of ours (a ``Rope``'s frequencies and attention factor).
The cache is created with mode NONE (so TVM's attention kernels never rotate) and then calls the kernel with
``apply_rope`` 0; here the kernel is replaced by one of the same signature that splits and rotates with
``rotated_dim``, the blocks' arithmetic, at the same positions (the cache's query position map). The cache calls
it for every layer alike, so it serves models whose layers share one RoPE (``DecoderConfig.shared_rope``); the
blocks rotate for the others (Gemma 3's local layers).
"""

from __future__ import annotations

from tvm import IRModule, tirx
from tvm.script import tirx as T

from webbuild.build.arch.blocks import rotated_dim
from webbuild.build.arch.config import DecoderConfig
from webbuild.build.arch.rope import Rope
from webbuild.errors import BuildError

SPLIT_FUNCTION = "fused_rope"  # what TVM names the PrimFunc it adds as "tir_split_rotary"


def split_rope_kernel(rope: Rope, num_q: int, num_kv: int, head_dim: int, dtype: str) -> tirx.PrimFunc:
    """``qkv [n, q + 2 kv, d]`` -> Q and K rotated at ``position_map[token]``, V as it is. ``apply_rope`` is the
    cache's flag for its own RoPE, always 0 here (mode NONE): ours always rotates. Unscheduled, as TVM's is:
    GPU targets bind its threads with dlight's fallback rule."""
    heads = num_q + 2 * num_kv

    @T.prim_func(s_tir=True)
    def split_rope(
        var_qkv: T.handle,
        var_position_map: T.handle,
        var_q: T.handle,
        var_k: T.handle,
        var_v: T.handle,
        apply_rope: T.int64,
    ):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})
        n = T.int32()
        position_offset = T.int32()
        qkv = T.match_buffer(var_qkv, (n, heads, head_dim), dtype)
        q = T.match_buffer(var_q, (n, num_q, head_dim), dtype)
        k = T.match_buffer(var_k, (n, num_kv, head_dim), dtype)
        v = T.match_buffer(var_v, (n, num_kv, head_dim), dtype)
        position_map = T.match_buffer(var_position_map, (n,), "int32", elem_offset=position_offset)
        for token, head, i in T.grid(n, heads, head_dim):
            with T.sblock("split_rope"):
                s, h, d = T.axis.remap("SSS", [token, head, i])
                if h < num_q:
                    q[s, h, d] = rotated_dim(qkv, (s, h), d, position_map[s], rope)
                elif h < num_q + num_kv:
                    k[s, h - num_q, d] = rotated_dim(qkv, (s, h), d, position_map[s], rope)
                else:
                    v[s, h - num_q - num_kv, d] = qkv[s, h, d]

    return split_rope.with_attr("global_symbol", SPLIT_FUNCTION)


def rope_in_split(mod: IRModule, cfg: DecoderConfig, dtype: str) -> IRModule:
    """``mod`` with the KV cache's split kernel replaced by ours when every layer has the same RoPE (the blocks
    then leave Q and K unrotated, blocks.py); unchanged otherwise."""
    rope = cfg.shared_rope
    if rope is None:
        return mod
    if SPLIT_FUNCTION not in {gv.name_hint for gv in mod.get_global_vars()}:
        raise BuildError(f"the KV cache has no split kernel ({SPLIT_FUNCTION}) to rotate Q and K in")
    mod[SPLIT_FUNCTION] = split_rope_kernel(rope, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, dtype)
    return mod
