"""q4m (int4 with scale and minimum per group): GGUF Q4_0/Q4_1 kept exactly, the packing layout, and the error of
quantizing from floats (the zero-point option for unquantized sources)."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from webbuild.build.quantize.gguf_blocks import QuantizedTensor
from webbuild.build.quantize.halves import unpack_halves
from webbuild.build.quantize.q4 import dequantize_q4, quantize_q4
from webbuild.build.quantize.q4m import Q4M

LAYOUT = Q4M()


def _weights(shape: tuple[int, int], seed: int = 0, std: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("float_dtype", ["float32", "float16"])
def test_gguf_4bit_groups_dequantize_to_the_same_bits(qtype: str, float_dtype: str) -> None:
    t = gguf.GGMLQuantizationType[qtype]
    blocks = gguf.quants.quantize(_weights((24, 160), seed=1), t)
    stored = LAYOUT.from_codes(QuantizedTensor(qtype, blocks, 160).group_codes(), float_dtype)
    assert {k: (v.shape, v.dtype) for k, v in stored.items()} == {
        "q_weight": ((24, 20), np.uint32),
        "q_scale": ((24, 3), np.uint32),  # 5 groups: 3 words of two float16 values, the last one padded
        "q_min": ((24, 3), np.uint32),
    }
    np.testing.assert_array_equal(LAYOUT.dequantize(stored), gguf.quants.dequantize(blocks, t))


def test_q8_0_groups_do_not_fit() -> None:
    blocks = gguf.quants.quantize(_weights((4, 64)), gguf.GGMLQuantizationType.Q8_0)
    assert LAYOUT.from_codes(QuantizedTensor("Q8_0", blocks, 64).group_codes(), "float32") is None


def test_packing_by_hand() -> None:
    """Codes 0..15 then 15..0; with min/max quantization that is scale 1, minimum -8, exactly."""
    row = np.array([*range(16), *range(15, -1, -1)], dtype=np.float32) - 8
    stored = LAYOUT.quantize(row[None, :], "float32")
    assert stored["q_weight"][0].tolist() == [0x76543210, 0xFEDCBA98, 0x89ABCDEF, 0x01234567]
    assert unpack_halves(stored["q_scale"], 1).tolist() == [[1.0]]
    assert unpack_halves(stored["q_min"], 1).tolist() == [[-8.0]]
    np.testing.assert_array_equal(LAYOUT.dequantize(stored)[0], row)


def test_from_floats_beats_min_max_in_every_group_and_symmetric_overall() -> None:
    w = _weights((96, 256), seed=2)
    groups = w.reshape(96, 8, 32)
    lo, hi = groups.min(-1), groups.max(-1)
    scale, minimum = ((hi - lo) / 15).astype(np.float16), lo.astype(np.float16)
    s, m = scale.astype(np.float32)[..., None], minimum.astype(np.float32)[..., None]
    plain = ((np.clip(np.rint((groups - m) / s), 0, 15) * s + m - groups) ** 2).sum(-1)
    ours = ((LAYOUT.dequantize(LAYOUT.quantize(w, "float32")) - w).reshape(96, 8, 32) ** 2).sum(-1)
    assert np.all(ours <= plain * (1 + 1e-5)) and ours.sum() < 0.9 * plain.sum()
    symmetric = ((dequantize_q4(*quantize_q4(w, "float32")) - w) ** 2).sum()
    assert ours.sum() < 0.8 * symmetric


def test_a_constant_group_is_exact_and_finite() -> None:
    w = _weights((2, 64), seed=3)
    w[0, :32] = 0.25
    deq = LAYOUT.dequantize(LAYOUT.quantize(w, "float16"))
    assert np.isfinite(deq).all()
    np.testing.assert_array_equal(deq[0, :32], 0.25)
