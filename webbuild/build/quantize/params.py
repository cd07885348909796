"""Source tensors -> the stored parameters of a scheme, deciding per tensor, and a report of what was kept.

For each 2-D weight, the scheme's layout for its kind (linear, embedding, head) is tried on the source's own
quantized groups first: a GGUF Q4_0/Q4_1/Q8_0 tensor whose values the layout holds is re-packed, not rounded
again. Otherwise the weight is quantized from its float values, which for an already-quantized tensor is a second
rounding: the report says so per kind of tensor. GGUF types whose groups no layout holds (k-quants, Q5_*, IQ*)
are refused rather than rounded again, except into unquantized schemes, where they dequantize exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webbuild import _log
from webbuild.build.quantize.gguf_blocks import GROUP_TYPES, QuantizedTensor
from webbuild.build.quantize.layout import Layout
from webbuild.build.quantize.scheme import DEFAULT_QUANTIZATION, QuantScheme
from webbuild.errors import UnsupportedError

# Our parameter names of the weights that are not linear layers (the definition's names, every family).
_ROLE_BY_NAME = {"model.embed_tokens.weight": "embedding", "lm_head.weight": "head"}

EXACT, QUANTIZED, REQUANTIZED, ROUNDED = "exact", "quantized", "re-quantized from dequantized values", "rounded"


def role_of(name: str, shape: tuple[int, ...]) -> str:
    """``embedding``, ``head``, ``linear`` (any other 2-D ``*.weight``) or ``other`` (norms, biases)."""
    if name in _ROLE_BY_NAME:
        return _ROLE_BY_NAME[name]
    return "linear" if name.endswith(".weight") and len(shape) == 2 else "other"


def _stored_layout(name: str, shape: tuple[int, ...], scheme: QuantScheme) -> Layout | None:
    """The layout a source tensor is stored in, or None when it stays unquantized."""
    role = role_of(name, shape)
    layout = scheme.layout(role) if role != "other" else None
    return layout if layout is not None and layout.fits(shape) else None


def _is_float(dtype: str) -> bool:
    # ml_dtypes' bfloat16 is not a numpy floating subtype, but it is a float weight all the same.
    return dtype in ("bfloat16", "float16", "float32", "float64")


def param_layout(
    name: str, shape: tuple[int, ...], dtype: str, scheme: QuantScheme
) -> list[tuple[str, tuple[int, ...], str]]:
    """The stored tensors (name, shape, dtype) that one source tensor becomes under ``scheme``."""
    shape = tuple(int(d) for d in shape)
    layout = _stored_layout(name, shape, scheme)
    if layout is not None:
        base = name[: -len(".weight")]
        return [(f"{base}.{suffix}", s, d) for suffix, (s, d) in layout.stored(*shape, scheme.model_dtype).items()]
    return [(name, shape, scheme.model_dtype if _is_float(dtype) else dtype)]


@dataclass
class QuantReport:
    """How each source tensor was stored: ``(kind, source type, stored as, how)`` -> count, in first-seen order."""

    counts: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)

    def add(self, kind: str, source: str, stored: str, how: str) -> None:
        self.counts[(kind, source, stored, how)] += 1

    @property
    def requantized(self) -> list[str]:
        """Kinds of tensor that an already-quantized source had rounded a second time."""
        return list(dict.fromkeys(kind for kind, _, _, how in self.counts if how == REQUANTIZED))

    def lines(self) -> list[str]:
        """One line per kind of tensor, for the build summary."""
        return [
            f"{kind:<9} {n:>4} x {source:<8} -> {stored:<8} {how}"
            for (kind, source, stored, how), n in self.counts.items()
        ]

    def as_json(self) -> list[dict[str, Any]]:
        keys = ("kind", "source", "stored", "how")
        return [dict(zip(keys, entry, strict=True)) | {"tensors": n} for entry, n in self.counts.items()]


def logical_param_count(params: Mapping[str, np.ndarray], scheme: QuantScheme) -> int:
    """Weights of the source model that stored ``params`` stand for (``BitsPerParam`` in the tensor cache):
    a ``q_weight`` word holds ``32 / bits`` of them, scales and minimums none."""
    count = 0
    for name, array in params.items():
        base, _, suffix = name.rpartition(".")
        if suffix == "q_weight":
            layout = scheme.layout(role_of(f"{base}.weight", array.shape))
            count += array.size * (32 // layout.bits) if layout is not None else array.size
        elif suffix not in ("q_scale", "q_min"):
            count += array.size
    return count


def default_quantization(tensors: Mapping[str, Any]) -> str:
    """The scheme that keeps what a source has: ``q8f32_s`` for a GGUF whose weights are all Q8_0 (nothing
    4-bit), else ``q4f32_m``."""
    types = {t.ggml_type for t in tensors.values() if isinstance(t, QuantizedTensor)}
    return "q8f32_s" if types == {"Q8_0"} else DEFAULT_QUANTIZATION


def _check_mappable(tensors: Mapping[str, Any], scheme: QuantScheme) -> None:
    """Refuses, before any work, quantized tensors that a layout would have to round a second time."""
    refused = Counter(
        t.ggml_type
        for name, t in tensors.items()
        if isinstance(t, QuantizedTensor)
        and t.ggml_type not in GROUP_TYPES
        and _stored_layout(name, tuple(t.shape), scheme) is not None
    )
    if refused:
        kinds = ", ".join(f"{n} {k}" for k, n in refused.most_common())
        raise UnsupportedError(
            f"the model stores tensors as GGUF types that {scheme.name} cannot hold exactly ({kinds}); webbuild "
            "does not round already-quantized weights a second time",
            tip="use a GGUF of this model with Q4_0, Q4_1 or Q8_0 (or F16/BF16/F32) weights, or its Hugging Face "
            "safetensors folder; or build with --quantization q0f32 / q0f16, which keep these values "
            "(about 4-8x larger)",
            param="quantization",
        )


def quantize_params(tensors: Mapping[str, Any], scheme: QuantScheme) -> tuple[dict[str, np.ndarray], QuantReport]:
    """Converts source tensors (float arrays or ``QuantizedTensor``) to the stored parameters of ``scheme``, in
    order: 2-D weights whose kind the scheme quantizes become ``*.q_weight``/``*.q_scale`` (``*.q_min``); other
    float tensors are cast to the model dtype; integer tensors pass through."""
    _check_mappable(tensors, scheme)
    report = QuantReport()
    result: dict[str, np.ndarray] = {}
    with _log.bar(len(tensors), f"quantize {scheme.name}", unit="tensor") as bar:
        for name, value in tensors.items():
            shape = tuple(int(d) for d in value.shape)
            source = value.ggml_type if isinstance(value, QuantizedTensor) else str(value.dtype)
            kind = role_of(name, shape)
            layout = _stored_layout(name, shape, scheme)
            if layout is None:
                ((out_name, _, out_dtype),) = param_layout(name, shape, str(value.dtype), scheme)
                result[out_name] = np.ascontiguousarray(value, dtype=out_dtype)
                report.add(kind, source, out_dtype, EXACT if out_dtype in ("float32", source) else ROUNDED)
            else:
                codes = value.group_codes() if isinstance(value, QuantizedTensor) else None
                stored = layout.from_codes(codes, scheme.model_dtype) if codes is not None else None
                how = EXACT if stored is not None else REQUANTIZED if codes is not None else QUANTIZED
                if stored is None:
                    stored = layout.quantize(np.asarray(value, dtype=np.float32), scheme.model_dtype)
                base = name[: -len(".weight")]
                result.update({f"{base}.{suffix}": array for suffix, array in stored.items()})
                report.add(kind, source, layout.name, how)
            bar.update(1)
    return result, report
