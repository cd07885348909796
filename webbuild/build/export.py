"""Architecture + config + quantization -> a Relax IRModule with the VM functions WebLLM looks up (a webgpu
library: those a browser calls)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import IRModule, relax
from tvm.target import Target

from webbuild.build.arch.attention_merge import replace_merge_kernel
from webbuild.build.arch.blocks import CausalLM
from webbuild.build.arch.config import DecoderConfig
from webbuild.build.arch.cpu_prefill_fix import fix_cpu_prefill
from webbuild.build.arch.decode_threads import fit_decode_threads
from webbuild.build.arch.split_rope import replace_split_kernel
from webbuild.build.fusion import FOLD_ATTR
from webbuild.build.quantize import QuantScheme
from webbuild.build.sampling import add_sampling_functions


@dataclass(frozen=True)
class ParamSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass
class ExportedModel:
    mod: IRModule
    params: list[ParamSpec]
    metadata: dict[str, Any]


# The Python engine's continuous batching (engine/scheduler.py) runs these; a browser runs one sequence, which our
# runtime and WebLLM (a kv_cache model with prefill and decode) step with prefill and decode. In a webgpu library
# their kernels, with the batch size symbolic, cost 13 of 67 WGSL kernels and a quarter of the VM bytecode (0.6 MiB
# of SmolLM2's 5.9), each kernel also compiled at every page load: left out there.
SERVER_ONLY_FUNCTIONS = ("batch_prefill", "batch_decode")


def export_model(cfg: DecoderConfig, scheme: QuantScheme, target: Target) -> ExportedModel:
    """The KV-cache kernels depend on the target, so each target gets its own export. The library also gets
    the sampling functions (sampling.py) that choose a token on the device, and ``decode`` is marked for
    fusion.py's producer folding (fewer launches a step)."""
    model = CausalLM(cfg, scheme, target)
    spec = model.export_spec()
    if target.kind.name == "webgpu":
        spec = {name: s for name, s in spec.items() if name not in SERVER_ONLY_FUNCTIONS}
    mod, named_params = model.export_tvm(spec=spec)
    mod = replace_merge_kernel(mod, cfg.num_attention_heads, scheme.model_dtype, target)
    mod = fix_cpu_prefill(mod)
    mod = fit_decode_threads(mod, cfg, scheme.model_dtype, target)
    mod = replace_split_kernel(mod, cfg, scheme.model_dtype, target)
    mod = add_sampling_functions(mod, cfg.vocab_size, target)
    mod = _mark_decode(mod, target)
    params = [ParamSpec(name, tuple(int(d) for d in p.shape), p.dtype) for name, p in named_params]
    metadata = {
        "model_type": cfg.model_type,
        "quantization": scheme.name,
        "context_window_size": cfg.context_window_size,
        "prefill_chunk_size": cfg.prefill_chunk_size,
        "sliding_window_size": -1,
        "attention_sink_size": -1,
        "tensor_parallel_shards": 1,
        "kv_state_kind": "kv_cache",
        "params": [{"name": p.name, "shape": list(p.shape), "dtype": p.dtype} for p in params],
    }
    mod["_metadata"] = relax.Function(
        [], tvm.ir.StringImm(json.dumps(metadata)), tvm.ir.StringType(), is_pure=True
    ).with_attr("global_symbol", "_metadata")
    return ExportedModel(mod, params, metadata)


def _mark_decode(mod: IRModule, target: Target) -> IRModule:
    """``decode`` gets its norms and activations folded into the projections (fusion.py): fewer, larger kernels
    for a GPU. A software WebGPU adapter (SwiftShader) runs such kernels slower than many small ones, so a
    webgpu library also keeps an unfolded copy, ``decode_fallback``, which the runtime picks for fallback
    adapters. Same parameters, so one set of weights serves both."""
    decode = mod["decode"]
    mod["decode"] = decode.with_attr(FOLD_ATTR, True)
    if target.kind.name == "webgpu":
        fallback = relax.utils.copy_with_new_vars(decode).with_attr("global_symbol", "decode_fallback")
        mod[relax.GlobalVar("decode_fallback")] = fallback
    return mod
