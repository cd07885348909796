"""``q4``: MLC LLM's symmetric int4 (``q4f16_1`` / ``q4f32_1``, ARTIFACTS.md): ``(code - 7) * scale``.

Codes 0..15 sit eight to a uint32 (element i at bits [4i, 4i+4)); one scale per group of 32, stored in the
model's float dtype: ``X.q_weight uint32[out, in/8]``, ``X.q_scale float16|float32 [out, in/32]``. No zero point.

From floats, each group keeps the scale with the least squared error among divisors of its largest |w|. A GGUF
Q4_0 group (``(q - 8) * d``) maps exactly with code ``15 - q`` and scale ``-d``; Q4_1 and Q8_0 do not fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webbuild.build.quantize.layout import GROUP, GroupCodes, GroupValue, Layout, code_at, pack_codes, unpack_codes

_MID = 7  # int4 codes 0..15 stand for (code - 7) * scale
# Scales tried for each group, as divisors of its largest |w|. 7 puts that weight exactly on code 0 or 14;
# a larger divisor gives a finer step and clips it (the positive side may use code 15), a smaller one a coarser
# step. Each group keeps the scale with the least squared error: on SmolLM2 that is 28 % less error than
# always dividing by 7 (and KL to the unquantized model 0.56 -> 0.43). 7 is tried first, so ties keep it.
_SCALE_DIVISORS = (7.0, 6.0, 6.25, 6.5, 6.75, 7.25, 7.5, 7.75, 8.0, 8.25, 8.5)
_CHUNK_ELEMS = 1 << 22  # rows are quantized in blocks of ~4M elements to bound temporaries


def quantize_q4(w: np.ndarray, scale_dtype: str | np.dtype = "float16") -> tuple[np.ndarray, np.ndarray]:
    """Quantizes ``w [out, in]`` (in % 32 == 0) to ``(q_weight uint32[out, in/8], q_scale [out, in/32])``.

    Codes are computed against the scale *after* rounding to ``scale_dtype``, the one dequantizing will use.
    All-zero groups get scale 0 and code 7.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[1] % GROUP:
        raise ValueError(f"quantize_q4 needs a 2-D array with a multiple of 32 columns, got {w.shape}")
    out, k = w.shape
    groups = k // GROUP
    sdt = np.dtype(scale_dtype)
    q_weight = np.empty((out, k // 8), dtype=np.uint32)
    q_scale = np.empty((out, groups), dtype=sdt)
    rows = max(1, _CHUNK_ELEMS // max(k, 1))
    for r0 in range(0, out, rows):
        block = np.asarray(w[r0 : r0 + rows], dtype=np.float32).reshape(-1, groups, GROUP)
        largest = np.abs(block).max(axis=-1)
        best_err = np.full(largest.shape, np.inf, dtype=np.float32)
        best_scale = np.zeros(largest.shape, dtype=sdt)
        best_codes = np.zeros(block.shape, dtype=np.uint8)
        for divisor in _SCALE_DIVISORS:
            scale = (largest / np.float32(divisor)).astype(sdt)
            codes, err = _codes_for(block, scale.astype(np.float32))
            better = err < best_err
            best_err[better], best_scale[better], best_codes[better] = err[better], scale[better], codes[better]
        q_scale[r0 : r0 + rows] = best_scale
        q_weight[r0 : r0 + rows] = pack_codes(best_codes.reshape(block.shape[0], k), 4)
    return q_weight, q_scale


def _codes_for(block: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest codes of ``block [rows, groups, 32]`` for per-group ``scale``, and each group's squared error."""
    # A zero scale only occurs for an all-zero group (or one below the scale dtype's range): dividing by 1
    # then yields code 7, i.e. exactly 0, instead of NaN.
    safe = np.where(scale == 0, np.float32(1), scale)[..., None]
    codes = block / safe
    codes += np.float32(_MID)
    np.rint(codes, out=codes)
    np.clip(codes, 0, 2 * _MID + 1, out=codes)
    err = (codes - np.float32(_MID)) * scale[..., None] - block
    return codes.astype(np.uint8), np.einsum("rgi,rgi->rg", err, err)


def dequantize_q4(q_weight: np.ndarray, q_scale: np.ndarray) -> np.ndarray:
    """Inverse of ``quantize_q4``: ``(q - 7) * scale`` as float32 ``[out, in]``."""
    codes = unpack_codes(q_weight, 4)
    if q_scale.shape != (codes.shape[0], codes.shape[1] // GROUP):
        raise ValueError(f"q_scale shape {q_scale.shape} does not match q_weight shape {q_weight.shape}")
    return GroupCodes(codes - _MID, np.asarray(q_scale)).dequantize()


class Q4(Layout):
    name = "q4"
    bits = 4
    fields = ("scale",)

    def stored(self, out: int, k: int, float_dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"q_weight": ((out, k // 8), "uint32"), "q_scale": ((out, k // GROUP), float_dtype)}

    def quantize(self, w: np.ndarray, float_dtype: str) -> dict[str, np.ndarray]:
        q_weight, q_scale = quantize_q4(w, float_dtype)
        return {"q_weight": q_weight, "q_scale": q_scale}

    def from_codes(self, codes: GroupCodes, float_dtype: str) -> dict[str, np.ndarray] | None:
        if codes.minimum is not None or not codes.fits(-8, 7):
            return None
        # (q - 8) * d == ((15 - q) - 7) * (-d): negating an f16 scale is exact in either float dtype.
        return {
            "q_weight": pack_codes(_MID - codes.codes, 4),
            "q_scale": (-codes.scale.astype(np.float32)).astype(float_dtype),
        }

    def dequantize(self, stored: dict[str, np.ndarray]) -> np.ndarray:
        return dequantize_q4(stored["q_weight"], stored["q_scale"])

    def group_value(self, field: str, params: dict[str, Any], row: Any, group: Any) -> Any:
        return params["q_scale"][row, group].astype("float32")

    def element(self, params: dict[str, Any], row: Any, col: Any, group: GroupValue) -> Any:
        code = code_at(params["q_weight"], row, col, 4) - _MID
        return code.astype("float32") * group("scale", row, col // GROUP)
