"""``q4m``: int4 with a scale and a minimum per group of 32: ``code * scale + minimum``, codes 0..15.

It holds GGUF's Q4_1 exactly (same formula, same float16 scale and minimum) and Q4_0 too (``(q - 8) * d`` is
``q * d + (-8 * d)``, and ``-8 * d`` is exact in float16). Storage: ``X.q_weight uint32[out, in/8]`` (eight codes
per word, element i at bits [4i, 4i+4)), ``X.q_scale`` and ``X.q_min`` as float16 pairs in ``uint32[out,
ceil(in/64)]`` (``halves``), so f16 and f32 models store the same bytes: 5 bits per weight, as ``q4f32_1``.

From floats (the zero-point option for unquantized sources), each group starts from its min/max range and
refits scale and minimum by least squares on its codes, keeping the best of a few rounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webbuild.build.quantize.halves import half_at, pack_halves, unpack_halves
from webbuild.build.quantize.layout import GROUP, GroupCodes, GroupValue, Layout, code_at, pack_codes, unpack_codes

_TOP = 15  # largest code
_REFITS = 3  # least-squares rounds after the min/max start; each keeps a group's floats only if its error drops
_CHUNK_ELEMS = 1 << 22


def quantize_q4m(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``w [out, in]`` -> (codes uint8 ``[out, in]``, scale float16 ``[out, in/32]``, minimum float16 ``[out, in/32]``),
    codes chosen against the float16 scale and minimum that dequantizing uses."""
    w = np.asarray(w)
    out, k = w.shape
    codes = np.empty((out, k), dtype=np.uint8)
    scale = np.empty((out, k // GROUP), dtype=np.float16)
    minimum = np.empty((out, k // GROUP), dtype=np.float16)
    rows = max(1, _CHUNK_ELEMS // max(k, 1))
    for r0 in range(0, out, rows):
        block = np.asarray(w[r0 : r0 + rows], dtype=np.float32).reshape(-1, k // GROUP, GROUP)
        lo, hi = block.min(axis=-1), block.max(axis=-1)
        best_s, best_m = ((hi - lo) / np.float32(_TOP)).astype(np.float16), lo.astype(np.float16)
        best_c, best_err = _codes_for(block, best_s, best_m)
        s, m, c = best_s, best_m, best_c
        for _ in range(_REFITS):
            s, m = _refit(block, c, s, m)
            c, err = _codes_for(block, s, m)
            better = err < best_err
            best_err[better], best_c[better] = err[better], c[better]
            best_s[better], best_m[better] = s[better], m[better]
        codes[r0 : r0 + rows] = best_c.reshape(-1, k)
        scale[r0 : r0 + rows], minimum[r0 : r0 + rows] = best_s, best_m
    return codes, scale, minimum


def _codes_for(block: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codes of ``block [rows, groups, 32]`` and each group's squared error (float16 floats)."""
    s, m = scale.astype(np.float32)[..., None], minimum.astype(np.float32)[..., None]
    codes = np.clip(np.rint((block - m) / np.where(s == 0, np.float32(1), s)), 0, _TOP)
    err = codes * s + m - block
    return codes.astype(np.uint8), np.einsum("rgi,rgi->rg", err, err)


def _refit(block: np.ndarray, codes: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> tuple[np.ndarray, ...]:
    """Least-squares scale and minimum for fixed codes (``code * s + m`` against the weights), as float16; groups
    whose codes are all equal keep theirs."""
    c = codes.astype(np.float32)
    n = np.float32(GROUP)
    sc, sw, scc, scw = c.sum(-1), block.sum(-1), (c * c).sum(-1), (c * block).sum(-1)
    det = n * scc - sc * sc
    ok = det > 0
    safe = np.where(ok, det, np.float32(1))
    s = np.where(ok, (n * scw - sc * sw) / safe, scale.astype(np.float32))
    m = np.where(ok, (sw - s * sc) / n, minimum.astype(np.float32))
    return s.astype(np.float16), m.astype(np.float16)


class Q4M(Layout):
    name = "q4m"
    bits = 4
    fields = ("scale", "minimum")

    def stored(self, out: int, k: int, float_dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
        halves = (out, (k // GROUP + 1) // 2)
        return {"q_weight": ((out, k // 8), "uint32"), "q_scale": (halves, "uint32"), "q_min": (halves, "uint32")}

    def quantize(self, w: np.ndarray, float_dtype: str) -> dict[str, np.ndarray]:
        codes, scale, minimum = quantize_q4m(w)
        return self._store(codes, scale, minimum)

    def from_codes(self, codes: GroupCodes, float_dtype: str) -> dict[str, np.ndarray] | None:
        if codes.minimum is not None:
            return self._store(codes.codes, codes.scale, codes.minimum) if codes.fits(0, _TOP) else None
        if not codes.fits(-8, 7):
            return None
        minimum = codes.scale * np.float16(-8)  # a power of two: exact unless it overflows
        if not np.isfinite(minimum).all():
            return None
        return self._store(codes.codes + 8, codes.scale, minimum)

    @staticmethod
    def _store(codes: np.ndarray, scale: np.ndarray, minimum: np.ndarray) -> dict[str, np.ndarray]:
        return {"q_weight": pack_codes(codes, 4), "q_scale": pack_halves(scale), "q_min": pack_halves(minimum)}

    def dequantize(self, stored: dict[str, np.ndarray]) -> np.ndarray:
        codes = unpack_codes(stored["q_weight"], 4)
        groups = codes.shape[1] // GROUP
        scale, minimum = unpack_halves(stored["q_scale"], groups), unpack_halves(stored["q_min"], groups)
        return GroupCodes(codes, scale, minimum).dequantize()

    def group_value(self, field: str, params: dict[str, Any], row: Any, group: Any) -> Any:
        return half_at(params["q_scale" if field == "scale" else "q_min"], row, group)

    def element(self, params: dict[str, Any], row: Any, col: Any, group: GroupValue) -> Any:
        code = code_at(params["q_weight"], row, col, 4).astype("float32")
        return code * group("scale", row, col // GROUP) + group("minimum", row, col // GROUP)
