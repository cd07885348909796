"""What every weight layout provides, and the integer codes they share.

A *layout* is how one 2-D weight ``[out, in]`` is stored and read back: a few named tensors (``q_weight``,
``q_scale``, ``q_min``) with groups of 32 consecutive inputs (one row, 32 columns) sharing their per-group
floats. Each layout module (``q4``, ``q4m``, ``q8``) holds both sides of one format: numpy (quantize from floats,
map already-quantized groups exactly, dequantize) and TVM (the value of one element, for the fused kernels).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

GROUP = 32  # inputs per group, in every layout (and in GGUF's Q4_0, Q4_1 and Q8_0 blocks)


@dataclass(frozen=True)
class GroupCodes:
    """Integer codes of an already-quantized weight and the float16 floats of each group of 32: element
    ``[r, c]`` is exactly ``codes[r, c] * scale[r, c // 32] (+ minimum[r, c // 32])`` in float32, as GGUF's
    Q4_0 (codes -8..7), Q4_1 (codes 0..15, with minimum) and Q8_0 (codes -128..127) define it."""

    codes: np.ndarray  # int16 [rows, in]
    scale: np.ndarray  # float16 (a q4 scale may be float32) [rows, in / 32]
    minimum: np.ndarray | None = None  # float16 [rows, in / 32]

    def fits(self, low: int, high: int) -> bool:
        return bool(self.codes.min(initial=0) >= low and self.codes.max(initial=0) <= high)

    def dequantize(self) -> np.ndarray:
        rows, k = self.codes.shape
        value = self.codes.reshape(rows, -1, GROUP).astype(np.float32) * self.scale.astype(np.float32)[..., None]
        if self.minimum is not None:
            value += self.minimum.astype(np.float32)[..., None]
        return value.reshape(rows, k)


# The value of a per-group float: (field name, row, group) -> TIR float32 expression.
GroupValue = Callable[[str, Any, Any], Any]


class Layout(ABC):
    """One storage format of a 2-D weight, both its numpy and its TVM side."""

    name: ClassVar[str]  # as the quantization policy names it: "q4", "q4m", "q8"
    bits: ClassVar[int]
    fields: ClassVar[tuple[str, ...]]  # per-group floats the element formula reads ("scale", "minimum")

    def fits(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 2 and shape[1] % GROUP == 0

    @abstractmethod
    def stored(self, out: int, k: int, float_dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
        """Suffix (``q_weight`` ...) -> (shape, dtype) of each stored tensor, in order."""

    @abstractmethod
    def quantize(self, w: np.ndarray, float_dtype: str) -> dict[str, np.ndarray]:
        """Stored tensors for float weights ``w [out, in]`` (rounding happens here)."""

    @abstractmethod
    def from_codes(self, codes: GroupCodes, float_dtype: str) -> dict[str, np.ndarray] | None:
        """Stored tensors that dequantize to exactly ``codes.dequantize()``, or None when this layout cannot
        hold those values."""

    @abstractmethod
    def dequantize(self, stored: dict[str, np.ndarray]) -> np.ndarray:
        """float32 ``[out, in]``, as the kernels compute each element."""

    @abstractmethod
    def group_value(self, field: str, params: dict[str, Any], row: Any, group: Any) -> Any:
        """TIR float32 value of per-group ``field`` (decoding it from storage)."""

    @abstractmethod
    def element(self, params: dict[str, Any], row: Any, col: Any, group: GroupValue) -> Any:
        """TIR float32 value of weight ``[row, col]``; per-group floats come from ``group`` so that a kernel may
        decode them once per group (CPU) or inline (GPU)."""


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``bits``-bit codes ``[rows, k]`` -> uint32 ``[rows, k * bits / 32]``, element i of each word
    at bits ``[bits * i, bits * (i + 1))``."""
    codes = np.asarray(codes).astype(np.uint32) & np.uint32((1 << bits) - 1)
    per_word = 32 // bits
    rows, k = codes.shape
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)[None, None, :]
    return np.bitwise_or.reduce(codes.reshape(rows, k // per_word, per_word) << shifts, axis=-1).astype(np.uint32)


def unpack_codes(words: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of ``pack_codes``: unsigned codes as int16 ``[rows, k]``."""
    words = np.asarray(words, dtype=np.uint32)
    per_word = 32 // bits
    shifts = (np.arange(per_word, dtype=np.uint32) * bits)[None, None, :]
    codes = (words[..., None] >> shifts) & np.uint32((1 << bits) - 1)
    return codes.reshape(words.shape[0], -1).astype(np.int16)


def code_at(words: Any, row: Any, col: Any, bits: int, *, signed: bool = False) -> Any:
    """TIR: code ``col`` of ``row`` in a ``pack_codes`` tensor, as int32 (two's complement when ``signed``)."""
    from tvm import tirx

    per_word = 32 // bits
    code = (words[row, col // per_word] >> (col % per_word * bits).astype("uint32")) & tirx.const(
        (1 << bits) - 1, "uint32"
    )
    if signed:  # the code's sign bit to bit 31, then an arithmetic shift back: sign extension
        return tirx.reinterpret("int32", code << tirx.const(32 - bits, "uint32")) >> tirx.const(32 - bits, "int32")
    return code.astype("int32")
