"""QuantizedTensor: the GGUF reader's form of quantized tensors. Row operations keep the blocks (and give what the
same operation gives on the dequantized values); everything else sees the exact float32 values."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from webbuild.build.arch.weights import permute_qk, split_rows, unpermute_qk
from webbuild.build.quantize.gguf_blocks import QuantizedTensor

T = gguf.GGMLQuantizationType


def quantized(qtype: str, rows: int = 16, cols: int = 64, seed: int = 0) -> QuantizedTensor:
    w = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    return QuantizedTensor(qtype, gguf.quants.quantize(w, T[qtype]), cols)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0", "Q5_0"])
def test_it_reads_as_the_dequantized_float32_values(qtype: str) -> None:
    t = quantized(qtype)
    expected = gguf.quants.dequantize(t.blocks, T[qtype])
    assert t.shape == (16, 64) and t.dtype == np.float32 and len(t) == 16 and t.ndim == 2
    np.testing.assert_array_equal(np.asarray(t), expected)
    np.testing.assert_array_equal(np.ascontiguousarray(t, dtype=np.float64), expected.astype(np.float64))
    codes = t.group_codes()
    assert (codes is None) == (qtype == "Q5_0")  # only Q4_0/Q4_1/Q8_0 groups have codes our layouts hold
    if codes is not None:
        np.testing.assert_array_equal(codes.dequantize(), expected)


def test_row_operations_keep_the_blocks() -> None:
    a, b = quantized("Q4_1", seed=1), quantized("Q4_1", rows=8, seed=2)
    fa, fb = np.asarray(a), np.asarray(b)
    fused = np.concatenate([a, b], axis=0)
    assert isinstance(fused, QuantizedTensor) and fused.ggml_type == "Q4_1" and fused.shape == (24, 64)
    np.testing.assert_array_equal(np.asarray(fused), np.concatenate([fa, fb]))
    parts = split_rows(fused, 16, 8)
    assert all(isinstance(p, QuantizedTensor) for p in parts)
    np.testing.assert_array_equal(np.asarray(parts[1]), fb)
    # llama.cpp's Q/K permutation: reshape and swapaxes on the leading axes, last axis untouched
    permuted = unpermute_qk(a, 2)
    assert isinstance(permuted, QuantizedTensor)
    np.testing.assert_array_equal(np.asarray(permuted), unpermute_qk(fa, 2))
    np.testing.assert_array_equal(np.asarray(permute_qk(permuted, 2)), fa)
    assert isinstance(a[2:5], QuantizedTensor) and isinstance(a[[3, 1]], QuantizedTensor)
    np.testing.assert_array_equal(np.asarray(a[[3, 1]]), fa[[3, 1]])


def test_other_operations_see_floats() -> None:
    a = quantized("Q8_0", seed=3)
    fa = np.asarray(a)
    assert np.mean(a) == np.mean(fa)
    np.testing.assert_array_equal(a[:, :5], fa[:, :5])  # columns cut through blocks
    np.testing.assert_array_equal(a[1], fa[1])
    np.testing.assert_array_equal(a.reshape(-1), fa.reshape(-1))
    mixed = np.concatenate([a, quantized("Q4_1", seed=4)], axis=0)  # no one layout holds both
    assert isinstance(mixed, np.ndarray) and mixed.dtype == np.float32
    np.testing.assert_array_equal(mixed[:16], fa)
