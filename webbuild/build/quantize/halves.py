"""float16 values two to a ``uint32`` word: how the ``q4m`` and ``q8`` layouts store per-group scales and minimums.

WGSL has no 16-bit type without ``shader-f16`` (missing on many adapters, always on the software one), so an
f32 model cannot read a ``float16`` buffer; it reads the words and rebuilds each half with integer operations,
exactly. Value ``i`` of a row sits in word ``i // 2``, bits ``[16 * (i % 2), 16 * (i % 2) + 16)``; an odd count
pads the last word with zero. Keeping halves (not f32) costs nothing for GGUF sources, whose scales are f16.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pack_halves(values: np.ndarray) -> np.ndarray:
    """float16 ``[rows, n]`` -> uint32 ``[rows, ceil(n / 2)]``."""
    values = np.asarray(values, dtype=np.float16)
    rows, n = values.shape
    padded = np.zeros((rows, n + n % 2), dtype="<f2")
    padded[:, :n] = values
    return padded.view("<u4").astype(np.uint32, copy=False)


def unpack_halves(words: np.ndarray, n: int) -> np.ndarray:
    """The inverse of ``pack_halves``: the first ``n`` float16 values of each row."""
    words = np.ascontiguousarray(words, dtype="<u4")
    return words.view("<f2")[:, :n].astype(np.float16)


def half_at(words: Any, row: Any, i: Any) -> Any:
    """TIR: value ``i`` of ``row`` in a ``pack_halves`` tensor, as an exact float32, with integer operations only.

    Normal halves move their exponent from bias 15 to bias 127; subnormals (exponent 0, e.g. the scale of a
    group of tiny embedding values) are ``mantissa * 2**-24``, computed as such so that no f32 subnormal appears
    (GPUs may flush those to zero).
    """
    from tvm import tirx

    def u32(v: int) -> Any:
        return tirx.const(v, "uint32")

    bits = (words[row, i // 2] >> ((i % 2) * 16).astype("uint32")) & u32(0xFFFF)
    exponent = (bits >> u32(10)) & u32(0x1F)
    normal = tirx.reinterpret("float32", ((bits & u32(0x7FFF)) << u32(13)) + u32((127 - 15) << 23))
    subnormal = (bits & u32(0x3FF)).astype("float32") * tirx.const(2.0**-24, "float32")
    magnitude = tirx.Select(exponent == u32(0), subnormal, normal)
    return tirx.Select((bits & u32(0x8000)) != u32(0), -magnitude, magnitude)
