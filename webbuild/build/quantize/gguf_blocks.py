"""``QuantizedTensor``: what the GGUF reader hands on for a tensor that the file stores quantized.

It keeps the file's blocks and their type, so that a layout holding the same values (``q4m`` for Q4_0/Q4_1,
``q8`` for Q8_0/Q4_0, ``q4`` for Q4_0) stores them without a second rounding. Until then it behaves as the
float32 array it dequantizes to, with one difference: operations that only move or pick whole rows keep the
blocks. Rows are the leading axes and each row is a whole number of blocks, so the family files' row operations
(``np.concatenate``/``np.split`` on axis 0, ``reshape``/``swapaxes`` that leave the last axis alone, as in
llama.cpp's Q/K permutation, and indexing on leading axes) work on it unchanged. Anything else (arithmetic,
``np.asarray``) sees the dequantized float32 values, which are exact.
"""

from __future__ import annotations

import operator
from typing import Any

import gguf
import numpy as np

from webbuild.build.quantize.layout import GROUP, GroupCodes
from webbuild.errors import UnsupportedError

# GGUF types made of groups of 32 with a float16 scale (and minimum): the ones our layouts can hold exactly.
GROUP_TYPES = ("Q4_0", "Q4_1", "Q8_0")
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}


class QuantizedTensor:
    """GGUF blocks ``uint8 [*rows, row_bytes]`` of type ``ggml_type`` standing for float32 ``[*rows, cols]``."""

    __slots__ = ("ggml_type", "blocks", "cols")

    def __init__(self, ggml_type: str, blocks: np.ndarray, cols: int) -> None:
        self.ggml_type, self.blocks, self.cols = ggml_type, blocks, cols

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.blocks.shape[:-1], self.cols)

    @property
    def ndim(self) -> int:
        return self.blocks.ndim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"QuantizedTensor({self.ggml_type}, shape={self.shape})"

    def dequantize(self) -> np.ndarray:
        """The float32 values, as GGUF defines them (``gguf.quants``)."""
        try:
            qtype = gguf.GGMLQuantizationType[self.ggml_type]
            values = gguf.quants.dequantize(np.ascontiguousarray(self.blocks), qtype)
        except (KeyError, NotImplementedError) as e:
            raise UnsupportedError(f"GGUF type {self.ggml_type} cannot be dequantized") from e
        return np.asarray(values, dtype=np.float32).reshape(self.shape)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self.dequantize()
        return values if dtype is None else values.astype(dtype)

    def group_codes(self) -> GroupCodes | None:
        """Codes and float16 group floats of a 2-D Q4_0/Q4_1/Q8_0 tensor (None for other types)."""
        if self.ggml_type not in GROUP_TYPES or self.ndim != 2:
            return None
        rows, groups = self.shape[0], self.cols // GROUP
        b = np.ascontiguousarray(self.blocks).reshape(rows, groups, _BLOCK_BYTES[self.ggml_type])
        scale = b[..., 0:2].copy().view("<f2")[..., 0].astype(np.float16)
        if self.ggml_type == "Q8_0":
            codes = b[..., 2:].copy().view(np.int8).astype(np.int16)
            return GroupCodes(codes.reshape(rows, -1), scale)
        # Byte j of a 4-bit block holds element j in its low nibble and element j + 16 in its high one.
        packed = b[..., -16:]
        codes = np.concatenate([packed & 0xF, packed >> 4], axis=-1).astype(np.int16).reshape(rows, -1)
        if self.ggml_type == "Q4_0":
            return GroupCodes(codes - 8, scale)
        minimum = b[..., 2:4].copy().view("<f2")[..., 0].astype(np.float16)
        return GroupCodes(codes, scale, minimum)

    # -- row operations: the blocks move, the values are not touched ------------------------------------------
    def _rows(self, blocks: np.ndarray) -> QuantizedTensor:
        return QuantizedTensor(self.ggml_type, blocks, self.cols)

    def reshape(self, *shape: Any) -> QuantizedTensor | np.ndarray:
        dims = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple | list) else shape
        if not dims or dims[-1] != self.cols:
            return np.asarray(self).reshape(dims)
        return self._rows(self.blocks.reshape(*dims[:-1], self.blocks.shape[-1]))

    def swapaxes(self, a: int, b: int) -> QuantizedTensor | np.ndarray:
        a, b = (operator.index(x) % self.ndim for x in (a, b))
        if self.ndim - 1 in (a, b):
            return np.asarray(self).swapaxes(a, b)
        return self._rows(self.blocks.swapaxes(a, b))

    def __getitem__(self, index: Any) -> QuantizedTensor | np.ndarray:
        parts = index if isinstance(index, tuple) else (index,)
        rows_only = Ellipsis not in parts and None not in parts and len(parts) < self.ndim
        if not rows_only or any(isinstance(p, int | np.integer) for p in parts):
            return np.asarray(self)[index]
        return self._rows(self.blocks[parts])

    def __array_function__(self, func: Any, types: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if func is np.concatenate:
            joined = _concatenate(*args, **kwargs)
            if joined is not None:
                return joined
        elif func in (np.split, np.array_split) and _axis(kwargs.get("axis", 0)) == 0 and len(args) == 2:
            parts = func(np.arange(self.shape[0]), args[1])
            return [self._rows(self.blocks[p[0] : p[-1] + 1]) if len(p) else self._rows(self.blocks[:0]) for p in parts]
        return func(*_plain(args), **_plain(kwargs))


def _axis(axis: Any) -> int | None:
    return None if axis is None else operator.index(axis)


def _concatenate(arrays: Any, axis: Any = 0, **rest: Any) -> QuantizedTensor | None:
    """Row blocks of tensors of one type stacked on a leading axis; None when they cannot stay blocks."""
    arrays = list(arrays)
    first = arrays[0]
    same = all(
        isinstance(a, QuantizedTensor) and (a.ggml_type, a.cols, a.ndim) == (first.ggml_type, first.cols, first.ndim)
        for a in arrays
    )
    axis = _axis(axis)
    if rest or not same or axis is None or axis % first.ndim == first.ndim - 1:
        return None
    return first._rows(np.concatenate([a.blocks for a in arrays], axis=axis))


def _plain(value: Any) -> Any:
    """``value`` with every QuantizedTensor (also inside lists, tuples, dicts) replaced by its float32 values."""
    if isinstance(value, QuantizedTensor):
        return np.asarray(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
