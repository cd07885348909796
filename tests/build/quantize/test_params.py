"""Per-tensor decisions: already-quantized GGUF groups are re-packed exactly where the scheme's layout holds them,
quantized again (and reported) where it does not, refused for types no layout holds; names, shapes, dtypes."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from webbuild.build.quantize import QUANTIZATIONS, QuantizedTensor, get_scheme, param_layout, quantize_params
from webbuild.build.quantize.params import EXACT, QUANTIZED, REQUANTIZED, default_quantization, logical_param_count
from webbuild.errors import UnsupportedError

T = gguf.GGMLQuantizationType


def _weights(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.05).astype(np.float32)


def _gguf(qtype: str, shape: tuple[int, int], seed: int = 0) -> QuantizedTensor:
    return QuantizedTensor(qtype, gguf.quants.quantize(_weights(shape, seed), T[qtype]), shape[1])


def _k_quant(qtype: str, rows: int, cols: int) -> QuantizedTensor:
    """Blocks of a k-quant type (gguf-py cannot write them): bytes of the right size."""
    block, size = gguf.GGML_QUANT_SIZES[T[qtype]]
    raw = np.random.default_rng(1).integers(0, 256, (rows, cols // block * size), dtype=np.uint8)
    return QuantizedTensor(qtype, raw, cols)


def _gguf_model(linear: str = "Q4_1") -> dict[str, object]:
    """As the GGUF reader gives a tiny SmolLM2-like file: 4-bit linears, Q8_0 embedding, float32 norms."""
    return {
        "model.embed_tokens.weight": _gguf("Q8_0", (100, 64), 1),
        "model.layers.0.input_layernorm.weight": np.ones(64, np.float32),
        "model.layers.0.self_attn.qkv_proj.weight": _gguf(linear, (96, 64), 2),
        "model.layers.0.mlp.down_proj.weight": _gguf(linear, (64, 128), 3),
        "model.norm.weight": np.ones(64, np.float32),
    }


def test_a_q4_1_gguf_is_kept_exactly_by_q4f32_m() -> None:
    source = _gguf_model()
    stored, report = quantize_params(source, get_scheme("q4f32_m"))
    assert [(n, a.shape, str(a.dtype)) for n, a in stored.items()] == [
        ("model.embed_tokens.q_weight", (100, 16), "uint32"),
        ("model.embed_tokens.q_scale", (100, 1), "uint32"),
        ("model.layers.0.input_layernorm.weight", (64,), "float32"),
        ("model.layers.0.self_attn.qkv_proj.q_weight", (96, 8), "uint32"),
        ("model.layers.0.self_attn.qkv_proj.q_scale", (96, 1), "uint32"),
        ("model.layers.0.self_attn.qkv_proj.q_min", (96, 1), "uint32"),
        ("model.layers.0.mlp.down_proj.q_weight", (64, 16), "uint32"),
        ("model.layers.0.mlp.down_proj.q_scale", (64, 2), "uint32"),
        ("model.layers.0.mlp.down_proj.q_min", (64, 2), "uint32"),
        ("model.norm.weight", (64,), "float32"),
    ]
    assert dict(report.counts) == {
        ("embedding", "Q8_0", "q8", EXACT): 1,
        ("other", "float32", "float32", EXACT): 2,
        ("linear", "Q4_1", "q4m", EXACT): 2,
    }
    assert report.requantized == []
    scheme = get_scheme("q4f32_m")
    down = {s: stored[f"model.layers.0.mlp.down_proj.{s}"] for s in ("q_weight", "q_scale", "q_min")}
    np.testing.assert_array_equal(
        scheme.layout("linear").dequantize(down), np.asarray(source["model.layers.0.mlp.down_proj.weight"])
    )


def test_where_the_layout_cannot_hold_the_groups_they_are_quantized_again_and_reported() -> None:
    _, report = quantize_params(_gguf_model(), get_scheme("q4f32_1"))
    assert report.counts[("linear", "Q4_1", "q4", REQUANTIZED)] == 2
    assert report.counts[("embedding", "Q8_0", "q4", REQUANTIZED)] == 1
    assert report.requantized == ["embedding", "linear"]
    assert any("linear" in line and "re-quantized from dequantized values" in line for line in report.lines())
    _, report = quantize_params(_gguf_model("Q4_0"), get_scheme("q4f32_1"))  # Q4_0 fits MLC's layout
    assert report.requantized == ["embedding"]


def test_the_embeddings_override_applies_to_embedding_and_head() -> None:
    source = _gguf_model() | {"lm_head.weight": _gguf("Q8_0", (100, 64), 4)}
    stored, report = quantize_params(source, get_scheme("q4f32_m", "float"))
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert stored[name].dtype == np.float32
        np.testing.assert_array_equal(stored[name], np.asarray(source[name]))
    assert report.counts[("head", "Q8_0", "float32", EXACT)] == 1


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "Q5_K", "Q2_K"])
def test_k_quants_are_refused_naming_what_works(qtype: str) -> None:
    source = _gguf_model() | {"model.layers.0.mlp.down_proj.weight": _k_quant(qtype, 64, 256)}
    for scheme in ("q4f32_m", "q8f32_s", "q4f16_1"):
        with pytest.raises(UnsupportedError) as err:
            quantize_params(source, get_scheme(scheme))
        message = err.value.message + (err.value.tip or "")
        assert qtype in message and err.value.param == "quantization"
        for alternative in ("Q4_0", "Q4_1", "Q8_0", "safetensors", "q0f32"):
            assert alternative in message


def test_q5_0_is_refused_too_but_unquantized_schemes_keep_its_values() -> None:
    source = _gguf_model("Q5_0")
    with pytest.raises(UnsupportedError, match="2 Q5_0"):
        quantize_params(source, get_scheme("q4f32_m"))
    stored, report = quantize_params(source, get_scheme("q0f32"))
    np.testing.assert_array_equal(
        stored["model.layers.0.mlp.down_proj.weight"], np.asarray(source["model.layers.0.mlp.down_proj.weight"])
    )
    assert report.counts[("linear", "Q5_0", "float32", EXACT)] == 2


def test_float_sources_are_quantized_and_reported_as_such() -> None:
    source = {"model.layers.0.mlp.down_proj.weight": _weights((8, 64)), "x.bias": _weights((8,))}
    stored, report = quantize_params(source, get_scheme("q4f16_m"))
    assert report.counts[("linear", "float32", "q4m", QUANTIZED)] == 1
    assert stored["x.bias"].dtype == np.float16 and report.counts[("other", "float32", "float16", "rounded")] == 1


def test_default_scheme_keeps_what_the_source_has() -> None:
    assert default_quantization(_gguf_model()) == "q4f32_m"
    assert default_quantization({"w": _gguf("Q8_0", (4, 32)), "n": np.ones(4, np.float32)}) == "q8f32_s"
    assert default_quantization({"w": _weights((4, 32))}) == "q4f32_m"


def test_logical_param_count() -> None:
    source = _gguf_model()
    for name in ("q4f32_m", "q8f32_s", "q4f32_1", "q0f16"):
        stored, _ = quantize_params(source, get_scheme(name))
        assert logical_param_count(stored, get_scheme(name)) == sum(np.prod(t.shape) for t in source.values())


def test_param_layout_matches_quantize_params() -> None:
    src = {
        "model.embed_tokens.weight": _weights((100, 64), 5),
        "model.layers.0.self_attn.q_proj.weight": _weights((64, 64), 6),
        "model.layers.0.self_attn.q_proj.bias": _weights((64,), 7),
        "model.layers.0.odd.weight": _weights((8, 40), 8),  # in % 32 != 0: stays float
        "lm_head.weight": _weights((100, 64), 9),
        "position_ids": np.arange(4, dtype=np.int32),
    }
    for scheme in QUANTIZATIONS.values():
        out, _ = quantize_params(src, scheme)
        expected = [e for n, a in src.items() for e in param_layout(n, a.shape, str(a.dtype), scheme)]
        assert [(n, a.shape, str(a.dtype)) for n, a in out.items()] == expected
        assert out["position_ids"].dtype == np.int32
        assert out["model.layers.0.odd.weight"].dtype == np.dtype(scheme.model_dtype)


def test_bfloat16_sources_are_floats() -> None:
    import ml_dtypes

    src = {
        "norm.weight": np.ones(64, dtype=ml_dtypes.bfloat16),
        "proj.weight": _weights((8, 64), 9).astype(ml_dtypes.bfloat16),
    }
    out, _ = quantize_params(src, get_scheme("q4f32_m"))
    assert out["norm.weight"].dtype == np.float32
    deq = (
        get_scheme("q4f32_m").layout("linear").dequantize({k[5:]: v for k, v in out.items() if k.startswith("proj.q")})
    )
    np.testing.assert_allclose(deq, src["proj.weight"].astype(np.float32), atol=0.01)
