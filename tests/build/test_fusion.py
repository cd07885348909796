"""Producer folding (webbuild.build.fusion): decode launches fewer kernels on GPU targets, and computes what the
unfolded kernels compute (the browser on SwiftShader runs both over the same weights)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tiny_llama import tiny_llama_model, write_hf_dir

from webbuild.build.arch import get_architecture
from webbuild.build.compile import compile_module, make_target
from webbuild.build.export import export_model
from webbuild.build.quantize import get_scheme

pytestmark = pytest.mark.toolchain

# Kernels a decode step launches per layer once folded: RMSNorm + qkv, the KV cache's two on WebGPU (split with
# RoPE and the K/V append, arch/split_rope.py; attention), o_proj + residual, RMSNorm + gate_up, SiLU * up +
# down_proj + residual.
DECODE_KERNELS_PER_LAYER = 6


def decode_calls(script: str, function: str) -> Counter[str]:
    """The kernels a Relax function of the dumped module calls directly (the KV cache's run inside builtins)."""
    start = script.index(f"    def {function}(")
    end = script.find("\n    @R.function", start)
    return Counter(re.findall(r"cls\.([A-Za-z_0-9]+)\(", script[start:end]))


@pytest.fixture(scope="module")
def dumped(tmp_path_factory: pytest.TempPathFactory) -> str:
    tiny = tiny_llama_model()
    cfg = get_architecture("llama").config_from_hf(tiny.config, 128, 16)
    target = make_target("webgpu")
    out = tmp_path_factory.mktemp("ir")
    compile_module(export_model(cfg, get_scheme("q4f32_1"), target).mod, target, out)
    return (out / "webgpu.py").read_text()


def test_decode_folds_norms_and_the_mlp_activation_into_the_projections(dumped: str) -> None:
    folded, fallback = decode_calls(dumped, "decode"), decode_calls(dumped, "decode_fallback")
    layers = 2
    # Per layer two RMSNorm kernels and the SiLU * up kernel are gone (and here, with a vocabulary of a few
    # hundred, the final norm is folded into the LM head too).
    assert sum(fallback.values()) - sum(folded.values()) == 3 * layers + 1
    assert not any("silu" in name and "matmul" not in name for name in folded)
    assert not any(name.startswith("rms_norm") and "matmul" not in name for name in folded)
    # compute_symbolic_expr is host code; the attention builtin launches two kernels per layer.
    kernels = sum(n for name, n in folded.items() if name != "compute_symbolic_expr") + 2 * layers
    assert kernels - 1 <= DECODE_KERNELS_PER_LAYER * layers  # the LM head aside


def test_prefill_and_cpu_libraries_are_not_folded(dumped: str) -> None:
    assert not any(name.startswith("rms_norm") and "matmul" in name for name in decode_calls(dumped, "prefill"))
    tiny = tiny_llama_model()
    cfg = get_architecture("llama").config_from_hf(tiny.config, 128, 16)
    mod = export_model(cfg, get_scheme("q4f32_1"), make_target("cpu")).mod
    assert "decode_fallback" not in [gv.name_hint for gv in mod.get_global_vars()]


# ---- the browser: folded decode against the unfolded one, same weights, same tokens -------------------------


@pytest.fixture(scope="module")
def tab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from webbuild.browser import launch_chromium
    from webbuild.commands.package import PackageOptions, package
    from webbuild.serve.app import serving

    root = tmp_path_factory.mktemp("fusion")
    source = write_hf_dir(root / "tiny-hf", tiny_llama_model(seed=9))
    options = PackageOptions(
        str(source), out=root / "site", quantizations=["q4f32_1"], context_window_size=128, prefill_chunk_size=16
    )
    site = package(options).site
    with serving(site) as url, launch_chromium() as chromium:
        tab = chromium.open(url + "manifest.json")  # a tab of the site's origin; the model loads below
        tab.wait_for("document.readyState === 'complete'", timeout_s=60)
        yield tab


# Two pipelines over one site: one told its adapter is a GPU (so it decodes with the folded `decode`), one a
# fallback adapter (`decode_fallback`); each prefills the same prompt and decodes the same tokens.
_COMPARE_JS = """(async (ids) => {
  const { detectGpu, ModelPipeline } = await import("./runtime/pipeline.js");
  const { resolveModel } = await import("./runtime/config.js");
  const out = {};
  for (const fallback of [false, true]) {
    const gpu = await detectGpu();
    gpu.info = { ...gpu.info, isFallbackAdapter: fallback };
    const { record } = await resolveModel(new URL("manifest.json", location.href).href, { hasShaderF16: false });
    const pipeline = await ModelPipeline.load({ record, gpu, cacheType: "none" });
    const rows = [Array.from(await pipeline.prefill(ids.slice(0, 5)))];
    for (const id of ids.slice(5)) rows.push(Array.from(await pipeline.decode(id)));
    out[fallback ? "fallback" : "folded"] = rows;
    pipeline.dispose();
  }
  return out;
})"""


def test_folded_decode_computes_what_the_unfolded_one_does(tab: Any) -> None:
    ids = [5, 17, 40, 99, 123, 7, 77, 150, 3, 201]
    out = tab.evaluate(f"{_COMPARE_JS}({ids})")
    folded, fallback = np.array(out["folded"]), np.array(out["fallback"])
    assert folded.shape == (6, folded.shape[1]) and folded.shape[1] > 200
    assert np.array_equal(folded[0], fallback[0])  # prefill is the same code
    scale = np.abs(fallback).max()
    np.testing.assert_allclose(folded[1:], fallback[1:], rtol=0, atol=1e-4 * scale)
    assert np.array_equal(folded.argmax(-1), fallback.argmax(-1))
