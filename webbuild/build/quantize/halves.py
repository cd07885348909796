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

    A half is ``(-1)**sign * m * 2**(e - 25)`` with ``m = mantissa + 1024`` and ``e = exponent`` when normal,
    ``m = mantissa`` and ``e = 1`` when subnormal (exponent 0, e.g. the scale of a group of tiny embedding
    values). ``m`` and the power of two are both exact, normal float32 values (no f32 subnormal appears, which
    GPUs may flush to zero), so their product is exact. Branch-free on purpose: a ``Select`` whose arms read
    memory becomes an ``if``/``else`` (TVM's RewriteUnsafeSelect), and SwiftShader took minutes to compile a
    matmul whose every weight carried two such nested branches, until Chromium's GPU watchdog killed the GPU
    process ("A valid external Instance reference no longer exists").
    """
    from tvm import tirx

    def u32(v: int) -> Any:
        return tirx.const(v, "uint32")

    bits = (words[row, i // 2] >> ((i % 2) * 16).astype("uint32")) & u32(0xFFFF)
    exponent = (bits >> u32(10)) & u32(0x1F)
    mantissa = (bits & u32(0x3FF)) | (tirx.min(exponent, u32(1)) << u32(10))
    power = tirx.reinterpret("float32", (tirx.max(exponent, u32(1)) + u32(127 - 25)) << u32(23))
    sign = tirx.reinterpret("float32", ((bits & u32(0x8000)) << u32(16)) | u32(0x3F800000))  # +1.0 or -1.0
    return mantissa.astype("float32") * power * sign
