"""q8 (int8 with a scale per group): GGUF Q8_0 (and Q4_0) kept exactly, signed byte packing, error from floats."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from webbuild.build.quantize.gguf_blocks import QuantizedTensor
from webbuild.build.quantize.halves import unpack_halves
from webbuild.build.quantize.q8 import Q8

LAYOUT = Q8()


def _weights(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_gguf_groups_dequantize_to_the_same_bits(qtype: str) -> None:
    t = gguf.GGMLQuantizationType[qtype]
    w = _weights((24, 96), seed=1)
    w[3, :32] *= 1e-6  # a group whose float16 scale is subnormal
    blocks = gguf.quants.quantize(w, t)
    stored = LAYOUT.from_codes(QuantizedTensor(qtype, blocks, 96).group_codes(), "float32")
    assert stored["q_weight"].shape == (24, 24) and stored["q_scale"].shape == (24, 2)
    np.testing.assert_array_equal(LAYOUT.dequantize(stored), gguf.quants.dequantize(blocks, t))


def test_q4_1_groups_do_not_fit() -> None:
    blocks = gguf.quants.quantize(_weights((4, 64)), gguf.GGMLQuantizationType.Q4_1)
    assert LAYOUT.from_codes(QuantizedTensor("Q4_1", blocks, 64).group_codes(), "float16") is None


def test_signed_bytes_by_hand() -> None:
    row = np.array([[1, -1, 127, -127, *([0] * 28)]], dtype=np.float32)
    stored = LAYOUT.quantize(row, "float32")
    assert unpack_halves(stored["q_scale"], 1).tolist() == [[1.0]]
    assert int(stored["q_weight"][0, 0]) == 0x817F_FF01  # element i at bits [8i, 8i+8), two's complement
    np.testing.assert_array_equal(LAYOUT.dequantize(stored), row)


def test_from_floats_is_within_half_a_step() -> None:
    w = _weights((32, 128), seed=2)
    step = np.abs(w.reshape(32, 4, 32)).max(-1, keepdims=True) / 127
    err = np.abs(LAYOUT.dequantize(LAYOUT.quantize(w, "float32")) - w).reshape(32, 4, 32)
    assert np.all(err <= step * 0.5 * (1 + 1e-2))
