"""``q8``: int8 with a scale per group of 32: ``code * scale``, codes -128..127 — GGUF's Q8_0, exactly.

Storage: ``X.q_weight uint32[out, in/4]`` (four two's-complement bytes per word, element i at bits [8i, 8i+8))
and ``X.q_scale`` as float16 pairs in ``uint32[out, ceil(in/64)]`` (``halves``): 8.5 bits per weight. GGUF Q4_0
groups fit too (codes -8..7). From floats: ``scale = max|w| / 127`` rounded to float16, nearest codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webbuild.build.quantize.halves import half_at, pack_halves, unpack_halves
from webbuild.build.quantize.layout import GROUP, GroupCodes, GroupValue, Layout, code_at, pack_codes, unpack_codes

_LIMIT = 127


class Q8(Layout):
    name = "q8"
    bits = 8
    fields = ("scale",)

    def stored(self, out: int, k: int, float_dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"q_weight": ((out, k // 4), "uint32"), "q_scale": ((out, (k // GROUP + 1) // 2), "uint32")}

    def quantize(self, w: np.ndarray, float_dtype: str) -> dict[str, np.ndarray]:
        w = np.asarray(w, dtype=np.float32)
        out, k = w.shape
        block = w.reshape(out, -1, GROUP)
        scale = (np.abs(block).max(axis=-1) / np.float32(_LIMIT)).astype(np.float16)
        s = scale.astype(np.float32)[..., None]
        codes = np.clip(np.rint(block / np.where(s == 0, np.float32(1), s)), -_LIMIT, _LIMIT)
        return self._store(codes.astype(np.int16).reshape(out, k), scale)

    def from_codes(self, codes: GroupCodes, float_dtype: str) -> dict[str, np.ndarray] | None:
        if codes.minimum is not None or not codes.fits(-128, 127):
            return None
        return self._store(codes.codes, codes.scale)

    @staticmethod
    def _store(codes: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
        return {"q_weight": pack_codes(codes, 8), "q_scale": pack_halves(scale)}

    def dequantize(self, stored: dict[str, np.ndarray]) -> np.ndarray:
        codes = unpack_codes(stored["q_weight"], 8).astype(np.uint8).view(np.int8).astype(np.int16)
        return GroupCodes(codes, unpack_halves(stored["q_scale"], codes.shape[1] // GROUP)).dequantize()

    def group_value(self, field: str, params: dict[str, Any], row: Any, group: Any) -> Any:
        return half_at(params["q_scale"], row, group)

    def element(self, params: dict[str, Any], row: Any, col: Any, group: GroupValue) -> Any:
        code = code_at(params["q_weight"], row, col, 8, signed=True)
        return code.astype("float32") * group("scale", row, col // GROUP)
