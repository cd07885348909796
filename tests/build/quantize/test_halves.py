"""float16 pairs in uint32 words (q4m/q8 scales): the numpy side, and the TIR decode for every half (through
the linear kernels too, in test_linear.py)."""

from __future__ import annotations

import numpy as np
import pytest

from webbuild.build.quantize.halves import half_at, pack_halves, unpack_halves


def test_value_i_sits_in_word_i_over_2_low_half_first() -> None:
    values = np.array([[1.0, -2.0, 0.5]], dtype=np.float16)
    words = pack_halves(values)
    assert words.dtype == np.uint32 and words.shape == (1, 2)
    assert int(words[0, 0]) == 0x3C00 | (0xC000 << 16)  # 1.0 low, -2.0 high
    assert int(words[0, 1]) == 0x3800  # 0.5, then zero padding
    np.testing.assert_array_equal(unpack_halves(words, 3), values)


def test_every_half_round_trips_bit_for_bit() -> None:
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    back = unpack_halves(pack_halves(every), 256)
    np.testing.assert_array_equal(back.view(np.uint16), every.view(np.uint16))


@pytest.mark.toolchain
def test_the_kernel_decode_gives_every_finite_half_exactly() -> None:
    """half_at, compiled for the CPU, against numpy's float16 -> float32 for all 63,488 finite halves (zeros,
    subnormals and both signs included)."""
    import tvm
    from tvm import te

    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    words = te.placeholder((256, 128), "uint32", name="words")
    out = te.compute((256, 256), lambda r, i: half_at(words, r, i), name="out")
    kernel = tvm.compile(te.create_prim_func([words, out]), target="llvm")
    got = tvm.runtime.tensor(np.zeros((256, 256), np.float32))
    kernel(tvm.runtime.tensor(pack_halves(every)), got)
    finite = np.isfinite(every)
    assert finite.sum() == 63488
    np.testing.assert_array_equal(got.numpy()[finite].view(np.uint32), every[finite].astype(np.float32).view(np.uint32))
