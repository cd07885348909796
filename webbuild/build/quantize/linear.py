"""The linear layers of the model definition: ``y = x @ W.T`` with ``W`` stored in a scheme's layout.

A quantized layer is one TE function: per-group floats (``linear_scale``/``linear_minimum``), the weight
(``linear_weight``) and the reduction (``linear_matmul``) are stages of one kernel, never separate passes. The GPU
schedules (dlight GEMV/Matmul) inline the stages into the reduction; the CPU rule (``cpu_schedule``) decodes each
group once into a small tile. Unquantized layers use the same reduction, so a quantized build and a float build of
its dequantized weights add the same products in the same order and give the same logits on the CPU.
"""

from __future__ import annotations

from typing import Any

from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import Tensor, op

from webbuild.build.quantize.layout import GROUP, Layout
from webbuild.build.quantize.scheme import QuantScheme

# Block names the CPU schedule rule recognizes.
MATMUL, WEIGHT, GROUP_PREFIX = "linear_matmul", "linear_weight", "linear_"


def _matmul(x: te.Tensor, weight: te.Tensor) -> te.Tensor:
    out_features, in_features = weight.shape
    k = te.reduce_axis((0, in_features), name="k")
    return te.compute(
        (*x.shape[:-1], out_features),
        lambda *idx: te.sum(x[(*idx[:-1], k)] * weight[idx[-1], k], axis=k),
        name=MATMUL,
    )


class FloatLinear(nn.Module):
    """``y = x @ W.T`` with an unquantized weight [out, in]."""

    def __init__(self, in_features: int, out_features: int, dtype: str) -> None:
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter((out_features, in_features), dtype)

    def forward(self, x: Tensor) -> Tensor:
        return op.tensor_expr_op(_matmul, "matmul", [x, self.weight])

    def lookup(self, ids: Tensor) -> Tensor:
        """Rows of W: an embedding table is a linear read by rows (and, tied, reused as the LM head)."""
        return op.take(self.weight, ids, axis=0)


class QuantLinear(nn.Module):
    """``y = x @ dequant(W).T`` for a weight stored in ``layout`` (``q_weight``, ``q_scale``[, ``q_min``])."""

    def __init__(self, in_features: int, out_features: int, layout: Layout, dtype: str) -> None:
        if in_features % GROUP:
            raise ValueError(f"in_features {in_features} is not a multiple of the group size {GROUP}")
        self.in_features, self.out_features, self.layout, self.dtype = in_features, out_features, layout, dtype
        self.suffixes = list(layout.stored(out_features, in_features, dtype))
        for suffix, (shape, stored_dtype) in layout.stored(out_features, in_features, dtype).items():
            setattr(self, suffix, nn.Parameter(shape, stored_dtype))

    def _stored(self) -> list[nn.Parameter]:
        return [getattr(self, suffix) for suffix in self.suffixes]

    def _group_stage(self, field: str, params: dict[str, te.Tensor]) -> te.Tensor:
        """Per-group ``field`` decoded into its own stage, which a schedule may compute once per group."""
        return te.compute(
            (self.out_features, self.in_features // GROUP),
            lambda o, g: self.layout.group_value(field, params, o, g),
            name=f"{GROUP_PREFIX}{field}",
        )

    def forward(self, x: Tensor) -> Tensor:
        def compute(x: te.Tensor, *stored: te.Tensor) -> te.Tensor:
            params = dict(zip(self.suffixes, stored, strict=True))
            groups = {f: self._group_stage(f, params) for f in self.layout.fields}
            weight = te.compute(
                (self.out_features, self.in_features),
                lambda o, i: self.layout.element(params, o, i, lambda f, r, g: groups[f][r, g]).astype(self.dtype),
                name=WEIGHT,
            )
            return _matmul(x, weight)

        return op.tensor_expr_op(compute, f"{self.layout.name}_matmul", [x, *self._stored()])

    def lookup(self, ids: Tensor) -> Tensor:
        """Dequantized rows of W, for embedding tables."""

        def compute(ids: te.Tensor, *stored: te.Tensor) -> te.Tensor:
            params = dict(zip(self.suffixes, stored, strict=True))

            def group(f: str, row: Any, g: Any) -> Any:
                return self.layout.group_value(f, params, row, g)

            return te.compute(
                (ids.shape[0], self.in_features),
                lambda s, j: self.layout.element(params, ids[s], j, group).astype(self.dtype),
                name="embed",
            )

        return op.tensor_expr_op(compute, f"{self.layout.name}_embed", [ids, *self._stored()])


def make_linear(in_features: int, out_features: int, scheme: QuantScheme, role: str = "linear") -> nn.Module:
    """The layer for a weight of ``role`` (``linear``, ``embedding`` or ``head``) under ``scheme``'s policy."""
    layout = scheme.layout(role)
    if layout is None or not layout.fits((out_features, in_features)):
        return FloatLinear(in_features, out_features, scheme.model_dtype)
    return QuantLinear(in_features, out_features, layout, scheme.model_dtype)
