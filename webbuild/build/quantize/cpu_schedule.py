"""The CPU schedule of the linear layers (``linear`` module): vectors of output rows, weights decoded per group.

For each chunk of output rows (one thread each) and each group of 32 inputs, the group's scales and minimums are
decoded once. With several tokens (prefill, batches) the group's weights are dequantized into a small tile that
every token reads; a single token (decode) reads each weight once, so it dequantizes in the inner loop, with no
tile to write and read back (2x faster there). The products of one output are added in input order, the order
of the plain loop, for quantized and float weights alike. dlight's CPU GEMV instead decodes every element's
group floats for every output, and leaves prefill unscheduled: each weight dequantized once per token.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.target import Target

from webbuild.build.quantize.layout import GROUP
from webbuild.build.quantize.linear import GROUP_PREFIX, MATMUL, WEIGHT

_LANES = 16  # output rows per vector (two AVX2 registers of float32)


def _lanes(out_features: int) -> int:
    return next(v for v in (_LANES, 8, 4, 2, 1) if out_features % v == 0)


class LinearCPU(dl.ScheduleRule):
    """Schedules kernels holding a ``linear_matmul`` block; returns None for anything else, leaving it to the
    next rule. Blocks fused before or after the matmul (reshapes, casts, residual adds) stay plain loops."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = {sch.get(b).name_hint: b for b in sch.get_child_blocks(sch.get_sblock("root"))}
        if MATMUL not in blocks:
            return None
        matmul = blocks[MATMUL]
        # The weight tile first, then the group floats it reads (a stage moves next to its placed consumer).
        stages = [blocks[WEIGHT]] if WEIGHT in blocks else []
        stages += [blocks[n] for n in blocks if n.startswith(GROUP_PREFIX) and n not in (MATMUL, WEIGHT)]
        try:
            *rows, out, k = sch.get_loops(matmul)
            single = all(isinstance(sch.get(r).extent, tirx.IntImm) and int(sch.get(r).extent) == 1 for r in rows)
            out_features, in_features = (int(sch.get(loop).extent) for loop in (out, k))
            token = sch.fuse(*rows) if len(rows) > 1 else rows[0]
            chunk, lane = sch.split(out, [None, _lanes(out_features)])
            group, inner = sch.split(k, [None, GROUP if in_features % GROUP == 0 else in_features])
            sch.reorder(chunk, group, token, inner, lane)
            sch.parallel(chunk)
            sch.vectorize(lane)
            for stage in stages:
                if single and sch.get(stage).name_hint == WEIGHT:
                    sch.compute_inline(stage)
                    continue
                sch.compute_at(stage, group)
                sch.set_scope(stage, 0, "local")
            sch.decompose_reduction(matmul, group)
        except s_tir.ScheduleError:  # a kernel shape this rule does not know: the next rule's
            return None
        return sch
