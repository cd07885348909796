"""float16 pairs in uint32 words (q4m/q8 scales): the numpy side. The TIR decode is checked through compiled
kernels in test_linear.py."""

from __future__ import annotations

import numpy as np

from webbuild.build.quantize.halves import pack_halves, unpack_halves


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
