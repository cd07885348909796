"""q4 (MLC's symmetric int4): error bounds of the scale search, the exact packing layout, GGUF Q4_0 kept exactly."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from webbuild.build.quantize.gguf_blocks import QuantizedTensor
from webbuild.build.quantize.q4 import Q4, dequantize_q4, quantize_q4


def _weights(shape: tuple[int, int], seed: int = 0, std: float = 0.02) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


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


def test_gguf_q4_0_maps_exactly_with_a_negated_scale() -> None:
    """(q - 8) * d is ((15 - q) - 7) * (-d): a Q4_0 GGUF builds into MLC's layout without rounding again."""
    w = _weights((16, 96), seed=5, std=0.5)
    blocks = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q4_0)
    expected = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_0)
    codes = QuantizedTensor("Q4_0", blocks, 96).group_codes()
    for float_dtype in ("float32", "float16"):
        stored = Q4().from_codes(codes, float_dtype)
        assert stored["q_scale"].dtype == np.dtype(float_dtype)
        np.testing.assert_array_equal(Q4().dequantize(stored), expected)


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0"])
def test_groups_with_a_minimum_or_wider_codes_do_not_fit(qtype: str) -> None:
    t = gguf.GGMLQuantizationType[qtype]
    blocks = gguf.quants.quantize(_weights((4, 64), seed=6), t)
    assert Q4().from_codes(QuantizedTensor(qtype, blocks, 64).group_codes(), "float32") is None
