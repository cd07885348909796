"""Weight quantization schemes (q4f16_1, q4f32_1, q0f16, q0f32) in numpy, in the MLC LLM / WebLLM layout.

q4 is symmetric int4 in groups of 32 along the input (K) axis: ``scale = max|w| / 7``,
``q = clamp(round(w / scale + 7), 0, 14)``, dequantized ``(q - 7) * scale``; eight 4-bit codes per
uint32, element i at bits [4i, 4i+4). A linear ``X.weight [out, in]`` becomes ``X.q_weight uint32[out, in/8]``
and ``X.q_scale float16|float32 [out, in/32]``. Which tensors are quantized is decided per tensor (2-D
``*.weight`` with ``in % 32 == 0``), never per architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from webbuild import _log
from webbuild.errors import UnsupportedError

_MID = 7  # int4 codes 0..15 stand for (code - 7) * scale
# Scales tried for each group of 32, as divisors of its largest |w|. 7 puts that weight exactly on code 0 or 14;
# a larger divisor gives a finer step and clips it (the positive side may use code 15), a smaller one a coarser
# step. Each group keeps the scale with the least squared error: on SmolLM2 that is 28 % less error than
# always dividing by 7 (and KL to the unquantized model 0.56 -> 0.43). 7 is tried first, so ties keep it.
_SCALE_DIVISORS = (7.0, 6.0, 6.25, 6.5, 6.75, 7.25, 7.5, 7.75, 8.0, 8.25, 8.5)
_PACK = 8  # 4-bit codes per uint32
_CHUNK_ELEMS = 1 << 22  # rows are quantized in blocks of ~4M elements to bound temporaries


@dataclass(frozen=True)
class QuantScheme:
    """A weight format: ``bits`` None means unquantized; ``model_dtype`` is the float/activation dtype."""

    name: str
    bits: int | None
    group_size: int
    model_dtype: str  # "float32" | "float16"

    @property
    def scale_dtype(self) -> str:
        """Scales are stored in the model's float dtype (f16 for q4f16_1, f32 for q4f32_1)."""
        return self.model_dtype

    @property
    def needs_shader_f16(self) -> bool:
        """f16 kernels need WebGPU's ``shader-f16`` feature, which many adapters lack."""
        return self.model_dtype == "float16"


QUANTIZATIONS: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme("q4f16_1", 4, 32, "float16"),
        QuantScheme("q4f32_1", 4, 32, "float32"),
        QuantScheme("q0f16", None, 32, "float16"),
        QuantScheme("q0f32", None, 32, "float32"),
    )
}


def get_scheme(name: str) -> QuantScheme:
    """Looks a scheme up by name; an unknown name is a user error that lists the valid ones."""
    try:
        return QUANTIZATIONS[name]
    except KeyError:
        valid = ", ".join(QUANTIZATIONS)
        raise UnsupportedError(
            f"Unknown quantization {name!r}; supported: {valid}.",
            tip="q4f32_1 runs on every WebGPU adapter; q4f16_1 needs shader-f16.",
            param="quantization",
        ) from None


def _quantizes(name: str, shape: tuple[int, ...], scheme: QuantScheme) -> bool:
    return (
        scheme.bits is not None and name.endswith(".weight") and len(shape) == 2 and shape[1] % scheme.group_size == 0
    )


def _is_float(dtype: str) -> bool:
    # ml_dtypes' bfloat16 is not a numpy floating subtype, but it is a float weight all the same.
    return dtype in ("bfloat16", "float16", "float32", "float64")


def param_layout(
    name: str, shape: tuple[int, ...], dtype: str, scheme: QuantScheme
) -> list[tuple[str, tuple[int, ...], str]]:
    """The stored tensors (name, shape, dtype) that one source tensor becomes under ``scheme``.

    Shared by ``quantize_params`` and the model export so the two cannot disagree on names or shapes.
    """
    shape = tuple(int(d) for d in shape)
    if _quantizes(name, shape, scheme):
        out, k = shape
        base = name[: -len(".weight")]
        return [
            (f"{base}.q_weight", (out, k // _PACK), "uint32"),
            (f"{base}.q_scale", (out, k // scheme.group_size), scheme.scale_dtype),
        ]
    if _is_float(dtype):
        return [(name, shape, scheme.model_dtype)]
    return [(name, shape, str(dtype))]


def quantize_q4(w: np.ndarray, scale_dtype: str | np.dtype = "float16") -> tuple[np.ndarray, np.ndarray]:
    """Quantizes ``w [out, in]`` (in % 32 == 0) to ``(q_weight uint32[out, in/8], q_scale [out, in/32])``.

    Each group's scale is the candidate of ``_SCALE_DIVISORS`` with the least squared error, and codes are
    computed against the scale *after* rounding to ``scale_dtype``, the one dequantizing will use. All-zero
    groups get scale 0 and code 7.
    """
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[1] % 32:
        raise ValueError(f"quantize_q4 needs a 2-D array with a multiple of 32 columns, got {w.shape}")
    out, k = w.shape
    groups = k // 32
    sdt = np.dtype(scale_dtype)
    q_weight = np.empty((out, k // _PACK), dtype=np.uint32)
    q_scale = np.empty((out, groups), dtype=sdt)
    rows = max(1, _CHUNK_ELEMS // max(k, 1))
    for r0 in range(0, out, rows):
        block = np.asarray(w[r0 : r0 + rows], dtype=np.float32).reshape(-1, groups, 32)
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
        q_weight[r0 : r0 + rows] = _pack_nibbles(best_codes.reshape(block.shape[0], k))
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


def _pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 codes [rows, k] -> uint32 [rows, k/8], element i of each 8 at bits [4i, 4i+4)."""
    pairs = codes.reshape(codes.shape[0], -1, 2)
    # Byte j holds elements 2j (low nibble) and 2j+1 (high nibble); four bytes read as one little-endian
    # uint32 put element i at bits [4i, 4i+4).
    packed = pairs[..., 0] | (pairs[..., 1] << 4)
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32, copy=False)


def dequantize_q4(q_weight: np.ndarray, q_scale: np.ndarray) -> np.ndarray:
    """Inverse of ``quantize_q4``: ``(q - 7) * scale`` as float32 ``[out, in]``."""
    q_weight = np.ascontiguousarray(q_weight, dtype=np.uint32)
    out, words = q_weight.shape
    k = words * _PACK
    groups = q_scale.shape[1]
    if q_scale.shape[0] != out or groups * 32 != k:
        raise ValueError(f"q_scale shape {q_scale.shape} does not match q_weight shape {q_weight.shape}")
    b = q_weight.astype("<u4", copy=False).view(np.uint8).reshape(out, -1)
    codes = np.empty((out, k), dtype=np.float32)
    codes[:, 0::2] = b & 0xF
    codes[:, 1::2] = b >> 4
    codes -= np.float32(_MID)
    deq = codes.reshape(out, groups, 32) * np.asarray(q_scale, dtype=np.float32)[..., None]
    return deq.reshape(out, k)


def quantize_params(tensors: dict[str, np.ndarray], scheme: QuantScheme) -> dict[str, np.ndarray]:
    """Converts source tensors (HF names) to the stored parameter set of ``scheme``, keeping order.

    2-D ``*.weight`` tensors with ``in % 32 == 0`` become ``*.q_weight``/``*.q_scale`` under q4 schemes;
    other float tensors are cast to the scheme's float dtype; integer tensors pass through. A tensor
    already in the target dtype is passed through without a copy.
    """
    result: dict[str, np.ndarray] = {}
    with _log.bar(len(tensors), f"quantize {scheme.name}", unit="tensor") as bar:
        for name, arr in tensors.items():
            layout = param_layout(name, arr.shape, str(arr.dtype), scheme)
            if len(layout) == 2:
                q_weight, q_scale = quantize_q4(arr, scheme.scale_dtype)
                result[layout[0][0]] = q_weight
                result[layout[1][0]] = q_scale
            else:
                ((out_name, _, out_dtype),) = layout
                result[out_name] = np.ascontiguousarray(arr, dtype=out_dtype)
            bar.update(1)
    return result
