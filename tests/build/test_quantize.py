"""Quantization schemes: error bounds, the exact int4 packing layout, and stored names/shapes/dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from webbuild.build.quantize import (
    QUANTIZATIONS,
    dequantize_q4,
    get_scheme,
    param_layout,
    quantize_params,
    quantize_q4,
)
from webbuild.errors import UnsupportedError


def _weights(shape: tuple[int, int], seed: int = 0, std: float = 0.02) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


def test_schemes_table() -> None:
    assert set(QUANTIZATIONS) == {"q4f16_1", "q4f32_1", "q0f16", "q0f32"}
    q4f16 = get_scheme("q4f16_1")
    assert (q4f16.bits, q4f16.group_size, q4f16.model_dtype) == (4, 32, "float16")
    assert q4f16.needs_shader_f16
    assert get_scheme("q4f32_1").model_dtype == "float32" and not get_scheme("q4f32_1").needs_shader_f16
    assert get_scheme("q0f16").bits is None and get_scheme("q0f32").model_dtype == "float32"


def test_unknown_scheme_lists_valid_ones() -> None:
    with pytest.raises(UnsupportedError) as err:
        get_scheme("q3f16_0")
    assert err.value.param == "quantization"
    for name in QUANTIZATIONS:
        assert name in err.value.message


def _group_errors(w: np.ndarray, q_weight: np.ndarray, q_scale: np.ndarray) -> np.ndarray:
    err = (dequantize_q4(q_weight, q_scale) - w).reshape(w.shape[0], -1, 32)
    return (err**2).sum(axis=-1)


@pytest.mark.parametrize("scale_dtype", ["float16", "float32"])
def test_each_group_errs_no_more_than_with_absmax_over_7(scale_dtype: str) -> None:
    w = _weights((96, 256), std=1.0)
    q_weight, q_scale = quantize_q4(w, scale_dtype)
    assert q_weight.shape == (96, 32) and q_weight.dtype == np.uint32
    assert q_scale.shape == (96, 8) and q_scale.dtype == np.dtype(scale_dtype)
    assert dequantize_q4(q_weight, q_scale).shape == w.shape
    # The plain symmetric scheme: scale max|w| / 7, every weight within half a step.
    plain_scale = (np.abs(w.reshape(96, 8, 32)).max(axis=-1) / 7).astype(scale_dtype)
    plain_codes = np.clip(np.rint(w.reshape(96, 8, 32) / plain_scale.astype(np.float32)[..., None] + 7), 0, 14)
    plain = ((plain_codes - 7) * plain_scale.astype(np.float32)[..., None] - w.reshape(96, 8, 32)) ** 2
    ours = _group_errors(w, q_weight, q_scale)
    assert np.all(ours <= plain.sum(axis=-1) * (1 + 1e-5))
    assert ours.sum() < 0.85 * plain.sum()  # and clearly less over the matrix


def test_scale_is_a_divisor_of_the_group_absmax() -> None:
    w = _weights((4, 64), seed=1)
    _, q_scale = quantize_q4(w, "float32")
    divisors = np.abs(w.reshape(4, 2, 32)).max(axis=-1) / q_scale
    assert np.all((divisors >= 6.0 - 1e-4) & (divisors <= 8.5 + 1e-4))


def test_packing_bit_layout_by_hand() -> None:
    # One group with scale 1 (max |w| = 7): codes are w + 7, so element i has code (i % 15).
    vals = np.array([(i % 15) - 7 for i in range(32)], dtype=np.float32)
    q_weight, q_scale = quantize_q4(vals[None, :], "float32")
    assert q_scale.tolist() == [[1.0]]
    # Word 0 holds codes 0..7 with element i at bits [4i, 4i+4): nibbles read right to left.
    assert int(q_weight[0, 0]) == 0x76543210
    assert int(q_weight[0, 1]) == 0xEDCBA98
    assert int(q_weight[0, 2]) == 0x87654321
    expected = [sum(((8 * word + i) % 15) << (4 * i) for i in range(8)) for word in range(4)]
    assert q_weight[0].tolist() == expected
    np.testing.assert_array_equal(dequantize_q4(q_weight, q_scale)[0], vals)


def test_codes_use_all_sixteen_levels() -> None:
    """Code 15 (+8 steps) is the format's too: a scale finer than max|w| / 7 may clip a large positive weight to it."""
    w = _weights((8, 128), seed=2, std=3.0)
    q_weight, _ = quantize_q4(w, "float16")
    nibbles = (q_weight[..., None] >> (4 * np.arange(8, dtype=np.uint32))) & 0xF
    assert nibbles.min() == 0 and nibbles.max() == 15


def test_all_zero_group_has_zero_scale_and_no_nan() -> None:
    w = _weights((2, 64), seed=3)
    w[0, :32] = 0.0
    q_weight, q_scale = quantize_q4(w, "float16")
    assert q_scale[0, 0] == 0
    assert int(q_weight[0, 0]) == 0x77777777  # every code is the midpoint 7
    deq = dequantize_q4(q_weight, q_scale)
    assert not np.isnan(deq).any()
    assert np.all(deq[0, :32] == 0)


def test_f16_scale_codes_use_the_rounded_scale() -> None:
    # The chosen scale is rarely representable in f16; the codes must be the nearest ones for the f16 scale
    # actually stored, or dequantizing would add the rounding error on top.
    w = np.linspace(-1.2345, 1.2345, 32, dtype=np.float32)[None, :]
    q_weight, q_scale = quantize_q4(w, "float16")
    scale16 = np.float32(q_scale[0, 0])
    codes = np.clip(np.rint(w / scale16 + 7), 0, 15).astype(np.uint32)
    expected = (codes.reshape(4, 8) << (4 * np.arange(8, dtype=np.uint32))).sum(axis=1)
    assert q_weight[0].tolist() == expected.tolist()


def test_large_matrix_is_chunked_consistently() -> None:
    # More rows than one internal block: results must equal quantizing row blocks separately.
    w = _weights((3000, 1536), seed=4)
    q_weight, q_scale = quantize_q4(w, "float16")
    q_part, s_part = quantize_q4(w[2900:], "float16")
    np.testing.assert_array_equal(q_weight[2900:], q_part)
    np.testing.assert_array_equal(q_scale[2900:], s_part)


def _tiny_model() -> dict[str, np.ndarray]:
    return {
        "model.embed_tokens.weight": _weights((100, 64), 5),
        "model.layers.0.input_layernorm.weight": np.ones(64, np.float32),
        "model.layers.0.self_attn.q_proj.weight": _weights((64, 64), 6),
        "model.layers.0.self_attn.q_proj.bias": _weights((1, 64), 7)[0],
        "model.layers.0.odd.weight": _weights((8, 40), 8),  # in % 32 != 0: stays float
        "model.norm.weight": np.ones(64, np.float32),
        "position_ids": np.arange(4, dtype=np.int32),
    }


def test_quantize_params_names_shapes_dtypes_q4f16() -> None:
    out = quantize_params(_tiny_model(), get_scheme("q4f16_1"))
    layout = {k: (v.shape, str(v.dtype)) for k, v in out.items()}
    assert list(layout) == [
        "model.embed_tokens.q_weight",
        "model.embed_tokens.q_scale",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.q_weight",
        "model.layers.0.self_attn.q_proj.q_scale",
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.odd.weight",
        "model.norm.weight",
        "position_ids",
    ]
    assert layout["model.embed_tokens.q_weight"] == ((100, 8), "uint32")
    assert layout["model.embed_tokens.q_scale"] == ((100, 2), "float16")
    assert layout["model.layers.0.input_layernorm.weight"] == ((64,), "float16")
    assert layout["model.layers.0.self_attn.q_proj.bias"] == ((64,), "float16")
    assert layout["model.layers.0.odd.weight"] == ((8, 40), "float16")
    assert layout["position_ids"] == ((4,), "int32")


def test_quantize_params_q4f32_keeps_f32() -> None:
    out = quantize_params(_tiny_model(), get_scheme("q4f32_1"))
    assert out["model.embed_tokens.q_scale"].dtype == np.float32
    assert out["model.norm.weight"].dtype == np.float32


@pytest.mark.parametrize(("name", "dtype"), [("q0f16", np.float16), ("q0f32", np.float32)])
def test_unquantized_schemes_keep_names(name: str, dtype: type) -> None:
    src = _tiny_model()
    out = quantize_params(src, get_scheme(name))
    assert list(out) == list(src)
    assert out["model.embed_tokens.weight"].dtype == dtype
    np.testing.assert_allclose(out["model.embed_tokens.weight"], src["model.embed_tokens.weight"], atol=1e-3)


def test_param_layout_matches_quantize_params() -> None:
    src = _tiny_model()
    for scheme in QUANTIZATIONS.values():
        out = quantize_params(src, scheme)
        expected = [e for n, a in src.items() for e in param_layout(n, a.shape, str(a.dtype), scheme)]
        assert [(n, a.shape, str(a.dtype)) for n, a in out.items()] == expected


def test_bfloat16_sources_are_floats() -> None:
    import ml_dtypes

    src = {
        "norm.weight": np.ones(64, dtype=ml_dtypes.bfloat16),
        "proj.weight": _weights((8, 64), 9).astype(ml_dtypes.bfloat16),
    }
    out = quantize_params(src, get_scheme("q4f32_1"))
    assert out["norm.weight"].dtype == np.float32
    assert out["proj.q_scale"].dtype == np.float32
    np.testing.assert_allclose(
        dequantize_q4(out["proj.q_weight"], out["proj.q_scale"]),
        src["proj.weight"].astype(np.float32),
        atol=0.01,
    )
