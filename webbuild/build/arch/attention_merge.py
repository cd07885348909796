"""A race-free replacement for TVM's GPU attention-state merge kernel.

The paged KV cache attends a prefill chunk to the cached prefix and to itself separately, then merges the two
partial results with their log-sum-exp ``S``. TVM 0.27's GPU merge kernel spreads one head's vector over several
threads, and every one of them reads ``S[token, head]`` and later overwrites it with no barrier in between. On
hardware that runs those threads in one lockstep group that happens to work; where they are scheduled apart (the
software WebGPU adapter at head size 64, and CUDA's independent thread scheduling in principle) a thread can read
the already-merged value, so every chunk after the first gets wrong attention. Here each head is merged by exactly
one thread, which reads and writes its own ``S`` entry.
"""

from __future__ import annotations

from tvm import IRModule, tirx
from tvm.script import tirx as T
from tvm.target import Target

MERGE_FUNCTION = "tir_attention_merge_state"


def merge_state_kernel(num_heads: int, v_dtype: str, max_threads: int) -> tirx.PrimFunc:
    """``V, S <- merge((V, S), (V_other, S_other))`` in place; one thread per head, one block per token."""
    if num_heads > max_threads:
        raise ValueError(f"{num_heads} attention heads exceed the target's {max_threads} threads per block")

    @T.prim_func(s_tir=True)
    def merge_state(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True})
        n = T.int32()
        d = T.int32()
        V = T.match_buffer(v, (n, num_heads, d), v_dtype)
        S = T.match_buffer(s, (n, num_heads), "float32")
        V_other = T.match_buffer(v_other, (n, num_heads, d), v_dtype)
        S_other = T.match_buffer(s_other, (n, num_heads), "float32")
        for token in T.thread_binding(n, thread="blockIdx.x"):
            for head in T.thread_binding(num_heads, thread="threadIdx.x"):
                with T.sblock("merge"):
                    lse = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    other_lse = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    weight = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    other_weight = T.sblock_alloc_buffer((1,), "float32", scope="local")
                    lse[0] = S[token, head]
                    other_lse[0] = S_other[token, head]
                    # Both weights relative to the larger log-sum-exp, so neither exp2 overflows.
                    weight[0] = T.exp2(lse[0] - T.max(lse[0], other_lse[0]))
                    other_weight[0] = T.exp2(other_lse[0] - T.max(lse[0], other_lse[0]))
                    for i in T.serial(d):
                        V[token, head, i] = T.Cast(
                            v_dtype,
                            (
                                T.Cast("float32", V[token, head, i]) * weight[0]
                                + T.Cast("float32", V_other[token, head, i]) * other_weight[0]
                            )
                            / (weight[0] + other_weight[0]),
                        )
                    S[token, head] = T.log2(weight[0] + other_weight[0]) + T.max(lse[0], other_lse[0])

    return merge_state


def replace_merge_kernel(mod: IRModule, num_heads: int, v_dtype: str, target: Target) -> IRModule:
    """Swap the KV cache's GPU merge kernel for ours; CPU modules use TVM's serial one, which has no race."""
    if target.kind.name == "llvm" or MERGE_FUNCTION not in [gv.name_hint for gv in mod.get_global_vars()]:
        return mod
    max_threads = int(target.attrs["max_num_threads"])
    kernel = merge_state_kernel(num_heads, v_dtype, max_threads).with_attr("global_symbol", MERGE_FUNCTION)
    mod[MERGE_FUNCTION] = kernel
    return mod
