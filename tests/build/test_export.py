"""export_model: which VM functions each target's library gets. A webgpu library carries what a browser calls (our
runtime, and WebLLM on a kv_cache model) and not the Python engine's batch functions, whose kernels would only
add to what every visitor downloads and compiles."""

from __future__ import annotations

import pytest
from tiny_llama import tiny_llama_model

from webbuild.build.arch import get_architecture
from webbuild.build.compile import make_target
from webbuild.build.export import SERVER_ONLY_FUNCTIONS, export_model
from webbuild.build.quantize import get_scheme

# What web_runtime/src (pipeline.js, sampling.js) and WebLLM 0.2.86 (a kv_cache model) look up in a library.
BROWSER_FUNCTIONS = {
    "_metadata",
    "embed",
    "prefill",
    "decode",
    "decode_fallback",
    "batch_verify",
    "create_tir_paged_kv_cache",
    "softmax_with_temperature",
    "sample_with_top_p",
    "argsort_probs",
    "apply_penalty_inplace",
    "apply_logit_bias_inplace",
    "apply_bitmask_inplace",
}


def vm_functions(target: str) -> set[str]:
    tiny = tiny_llama_model()
    cfg = get_architecture("llama").config_from_hf(tiny.config, 128, 16)
    mod = export_model(cfg, get_scheme("q4f32_m"), make_target(target)).mod
    return {gv.name_hint for gv, func in mod.functions.items() if func.attrs and "global_symbol" in func.attrs}


@pytest.fixture(scope="module")
def webgpu() -> set[str]:
    return vm_functions("webgpu")


def test_a_webgpu_library_has_what_a_browser_calls(webgpu: set[str]) -> None:
    assert BROWSER_FUNCTIONS <= webgpu


def test_a_webgpu_library_leaves_out_the_python_engines_batch_functions(webgpu: set[str]) -> None:
    assert set(SERVER_ONLY_FUNCTIONS) == {"batch_prefill", "batch_decode"}
    assert not webgpu & set(SERVER_ONLY_FUNCTIONS)


def test_the_cpu_library_keeps_them_for_continuous_batching() -> None:
    cpu = vm_functions("cpu")
    assert set(SERVER_ONLY_FUNCTIONS) <= cpu
    assert (BROWSER_FUNCTIONS - {"decode_fallback"}) <= cpu
