"""The KV cache's split kernel: rotating Q and K with our RoPE, and on WebGPU also appending K and V to the cache's
pages; each a launch a layer fewer.

Before attending, TVM 0.27's paged KV cache splits each layer's fused QKV into Q, K and V with its
``tir_split_rotary`` kernel (paged_kv_cache.cc, ``f_split_rotary``), which would also rotate if the cache's RoPE
mode were NORMAL, with TVM's own RoPE variants, none of ours (a ``Rope``'s frequencies and attention factor), and
then appends K and V to the pages with ``f_transpose_append``. The cache is created with mode NONE (so TVM's
attention kernels never rotate) and calls the split with ``apply_rope`` 0; here the kernel is replaced by one
that splits and rotates with ``rotated_dim``, the blocks' arithmetic, at the same positions (the cache's query
position map). The cache calls it for every layer alike, so it rotates for models whose layers share one RoPE
(``DecoderConfig.shared_rope``); the blocks rotate for the others (Gemma 3's local layers).

In a WebGPU library the split also appends: the browser's runtime (runtime_patch.py, ``SPLIT_APPENDS``) hands it
the layer's pages, the append position map and whether the step appends before attending (a decode step), in
which case it writes K and V into the pages as ``tir_kv_cache_transpose_append`` would and the runtime skips that
launch; prefill chunks still append after attending, through the cache's own kernel.
"""

from __future__ import annotations

from tvm import IRModule, tirx
from tvm.script import tirx as T
from tvm.target import Target

from webbuild.build.arch.blocks import rotated_dim
from webbuild.build.arch.config import DecoderConfig
from webbuild.build.arch.rope import Rope
from webbuild.errors import BuildError

SPLIT_FUNCTION = "fused_rope"  # what TVM names the PrimFunc it adds as "tir_split_rotary"


PAGE_SIZE = 16  # tokens a KV page holds: what TVM's transpose-append kernel is built for and the runtimes ask


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


def split_append_kernel(rope: Rope | None, num_q: int, num_kv: int, head_dim: int, dtype: str) -> tirx.PrimFunc:
    """The split as ``split_rope_kernel`` (rotating only with a ``rope``), taking also the layer's ``pages
    [num_pages, 2, kv, PAGE_SIZE, d]``, the cache's append position map (``-1``: a token not kept) and
    ``append``: when 1, K and V also go to their pages, as ``tir_kv_cache_transpose_append`` writes them."""
    heads = num_q + 2 * num_kv

    def q_or_k(qkv: T.Buffer, s: tirx.PrimExpr, h: tirx.PrimExpr, d: tirx.PrimExpr, position: tirx.PrimExpr):
        return qkv[s, h, d] if rope is None else rotated_dim(qkv, (s, h), d, position, rope)

    @T.prim_func(s_tir=True)
    def split_append(
        var_qkv: T.handle,
        var_position_map: T.handle,
        var_q: T.handle,
        var_k: T.handle,
        var_v: T.handle,
        apply_rope: T.int64,
        var_pages: T.handle,
        var_append_map: T.handle,
        append: T.int64,
    ):
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})
        n = T.int32()
        position_offset = T.int32()
        append_offset = T.int32()
        num_pages = T.int64()
        pages_offset = T.int64()
        qkv = T.match_buffer(var_qkv, (n, heads, head_dim), dtype)
        q = T.match_buffer(var_q, (n, num_q, head_dim), dtype)
        k = T.match_buffer(var_k, (n, num_kv, head_dim), dtype)
        v = T.match_buffer(var_v, (n, num_kv, head_dim), dtype)
        position_map = T.match_buffer(var_position_map, (n,), "int32", elem_offset=position_offset)
        pages = T.match_buffer(var_pages, (num_pages, 2, num_kv, PAGE_SIZE, head_dim), dtype, elem_offset=pages_offset)
        append_map = T.match_buffer(var_append_map, (n,), "int32", elem_offset=append_offset)
        for token, head, i in T.grid(n, heads, head_dim):
            with T.sblock("split_append"):
                s, h, d = T.axis.remap("SSS", [token, head, i])
                if h < num_q:
                    q[s, h, d] = q_or_k(qkv, s, h, d, position_map[s])
                elif h < num_q + num_kv:
                    k[s, h - num_q, d] = q_or_k(qkv, s, h, d, position_map[s])
                    if append == T.int64(1) and append_map[s] != -1:
                        pages[
                            T.floordiv(append_map[s], PAGE_SIZE), 0, h - num_q, T.floormod(append_map[s], PAGE_SIZE), d
                        ] = q_or_k(qkv, s, h, d, position_map[s])
                else:
                    v[s, h - num_q - num_kv, d] = qkv[s, h, d]
                    if append == T.int64(1) and append_map[s] != -1:
                        pages[
                            T.floordiv(append_map[s], PAGE_SIZE),
                            1,
                            h - num_q - num_kv,
                            T.floormod(append_map[s], PAGE_SIZE),
                            d,
                        ] = qkv[s, h, d]

    return split_append.with_attr("global_symbol", SPLIT_FUNCTION)


def replace_split_kernel(mod: IRModule, cfg: DecoderConfig, dtype: str, target: Target) -> IRModule:
    """``mod`` with the KV cache's split kernel replaced: on WebGPU always by the appending one (the patched
    runtime calls every library's split that way), rotating when every layer has the same RoPE; elsewhere by the
    rotating one when every layer has the same RoPE (the blocks then leave Q and K unrotated, blocks.py), and
    left as it is otherwise."""
    rope = cfg.shared_rope
    heads = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, dtype)
    if target.kind.name == "webgpu":
        kernel = split_append_kernel(rope, *heads)
    elif rope is not None:
        kernel = split_rope_kernel(rope, *heads)
    else:
        return mod
    if SPLIT_FUNCTION not in {gv.name_hint for gv in mod.get_global_vars()}:
        raise BuildError(f"the KV cache has no split kernel ({SPLIT_FUNCTION}) to replace")
    mod[SPLIT_FUNCTION] = kernel
    return mod
