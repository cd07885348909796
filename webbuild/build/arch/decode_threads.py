"""A thread block CUDA and WebGPU accept for TVM 0.27's GPU decode-attention kernel at small head sizes.

TVM sizes the kernel's block as (head_dim / 4) x group x z threads, z filling 512 threads, and checks z against
the limit of 64 (CUDA's maxBlockDimZ, WebGPU's maxComputeWorkgroupSizeZ) on WebGPU only. A head
size of 16 without grouped queries (the tiny Phi-3 test model) asks for 128 along z: CUDA refuses every decode
launch (CUDA_ERROR_INVALID_VALUE, block=(4,1,128)); WebGPU, at 256 threads a block, stays at 64. Here those kernels
are generated again under a thread limit that keeps z at 64. At head size 32 and above (every released model)
TVM's kernels stay.
"""

from __future__ import annotations

from tvm import IRModule
from tvm.relax.frontend.nn.llm._decode_kernels import _attention_decode
from tvm.target import Target

from webbuild.build.arch.config import DecoderConfig

# The KV cache's decode kernels and whether each is the sliding-window one.
DECODE_FUNCTIONS = {"batch_decode_paged_kv": False, "batch_decode_paged_kv_sliding_window": True}
_THREADS, _MAX_Z, _VEC = 512, 64, 4  # TVM's thread limit for the kernel, the z limit, values per thread along x


def fit_decode_threads(mod: IRModule, cfg: DecoderConfig, dtype: str, target: Target) -> IRModule:
    if target.kind.name == "llvm":
        return mod
    per_z = cfg.head_dim // _VEC * (cfg.num_attention_heads // cfg.num_key_value_heads)
    if min(_THREADS, int(target.attrs["max_num_threads"])) // per_z <= _MAX_Z:
        return mod
    capped = Target({**target.export(), "max_num_threads": _MAX_Z * per_z}, host=target.host)
    present = {gv.name_hint for gv in mod.get_global_vars()}
    for name, sliding in DECODE_FUNCTIONS.items():
        if name in present:
            kernel = _attention_decode(
                cfg.num_key_value_heads, cfg.num_attention_heads, cfg.head_dim, dtype, sliding, {}, capped
            )
            mod[name] = kernel.with_attr("global_symbol", name)
    return mod
