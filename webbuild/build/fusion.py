"""Fusion beyond TVM's FuseOps, for fewer kernel launches per decode step (GPU targets).

FuseOps fuses elementwise work into the *output* of a matmul-like kernel (the residual add after ``o_proj`` and
``down_proj``) but never a producer into its *input*: each RMSNorm is a kernel before its projection, and the
gated MLP's split + SiLU + multiply a kernel between ``gate_up_proj`` and ``down_proj``. After FuseOps,
``FoldProducersIntoMatmul`` merges such a producer into its only consumer when that consumer is a one-token
matmul (static shapes: decode) and the producer is injective or reduces only to one value (RMSNorm's sum of
squares); FuseTIR then makes one PrimFunc of both.

dlight's GEMV rule cannot schedule the result (its analysis wants one reduction, and each input read at one
place; SiLU * up reads the gate_up output twice), so ``FoldedGEMV`` does: producers and the weights'
dequantization are inlined into the reduction, which runs as a cross-thread reduction per output row (the
norm's sum of squares likewise, recomputed by every row group: a few hundred values), with the residual add as
its epilogue. The activation is computed where it is read and never stored.
"""

from __future__ import annotations

import tvm
from tvm import IRModule, relax, s_tir, tirx
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.s_tir import dlight as dl
from tvm.target import Target

_INJECTIVE = 2  # TVM's OpPatternKind: elementwise 0, broadcast 1, injective 2, reduce 3, matmul-like 4
_OUT_ELEMWISE_FUSABLE = 4
_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
FOLD_ATTR = "webbuild.fold_producers"  # set by the export on the functions to fold (decode)
_MAX_ROWS_PER_INPUT = 8  # a reduction producer (RMSNorm) is recomputed per output row: not for the LM head


def _is_primitive(func: object) -> bool:
    return isinstance(func, relax.Function) and bool(func.attrs) and bool(func.attrs.get("Primitive", False))


def _reductions(prim: tirx.PrimFunc) -> list[s_tir.SBlock]:
    """The reduction blocks of an unscheduled PrimFunc (all its blocks sit under the root block)."""
    sch = s_tir.Schedule(prim)
    blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    return [b for b in blocks if any(v.iter_type == tirx.IterVar.CommReduce for v in b.iter_vars)]


def _one_value(block: s_tir.SBlock) -> bool:
    """Whether a block's result is a single value (RMSNorm's sum of squares for one token)."""
    shape = block.writes[0].source.shape
    return all(isinstance(d, tirx.IntImm) and int(d) == 1 for d in shape)


@mutator
class _Folder(PyExprMutator):  # type: ignore[misc]
    def __init__(self, mod: IRModule) -> None:
        super().__init__(mod)
        self.mod = mod
        self.merged: dict[tuple[str, str, int], relax.GlobalVar] = {}
        self.folded: dict[relax.Var, relax.Call] = {}  # consumer binding -> the merged call replacing it
        self.dropped: set[relax.Var] = set()  # producer bindings folded into their consumer

    def group(self, expr: relax.Expr) -> tuple[relax.Function, list[relax.Expr]] | None:
        """A call of a primitive function, or a bare call_tir seen as one: (function, arguments)."""
        if not isinstance(expr, relax.Call):
            return None
        if isinstance(expr.op, relax.GlobalVar) and _is_primitive(self.mod[expr.op]):
            return self.mod[expr.op], list(expr.args)
        bare = expr.op.same_as(_CALL_TIR) and len(expr.args) == 2 and isinstance(expr.args[1], relax.Tuple)
        if bare and isinstance(expr.ty, relax.TensorType):
            args = list(expr.args[1].fields)
            params = [relax.Var(f"arg{i}", a.ty) for i, a in enumerate(args)]
            out = relax.Var("out", expr.ty)
            call = relax.call_tir(expr.args[0], relax.Tuple(params), expr.ty)
            body = relax.SeqExpr([relax.DataflowBlock([relax.VarBinding(out, call)])], out)
            return relax.Function(params, body, expr.ty, True).with_attr("Primitive", True), args
        return None

    def prims(self, func: relax.Function) -> list[tirx.PrimFunc] | None:
        """The PrimFuncs a group calls; None when it does anything else."""
        body = func.body
        bindings = list(body.blocks[0].bindings) if body.blocks else []
        values = [b.value for b in bindings] + ([body.body] if isinstance(body.body, relax.Call) else [])
        out = []
        for value in values:
            if isinstance(value, relax.Call) and value.op.same_as(_CALL_TIR):
                out.append(self.mod[value.args[0]])
            elif not isinstance(value, relax.TupleGetItem | relax.Tuple | relax.Var):
                return None
        return out

    def is_producer(self, func: relax.Function, out: relax.Type, given: relax.Type) -> bool:
        """Injective, or reducing only to single values (then recomputed per output row of the consumer, so
        only for consumers of not many more rows than the producer gives inputs)."""
        prims = self.prims(func) or []
        patterns = [int(p.attrs["op_pattern"]) if p.attrs and "op_pattern" in p.attrs else 99 for p in prims]
        if not patterns or max(patterns) > _OUT_ELEMWISE_FUSABLE:
            return False
        if max(patterns) <= _INJECTIVE:
            return True
        rows, inputs = int(out.shape.values[-1]), int(given.shape.values[-1])
        scalar = all(_one_value(r) for p in prims for r in _reductions(p))
        return scalar and rows <= _MAX_ROWS_PER_INPUT * inputs

    def is_consumer(self, expr: relax.Call, func: relax.Function) -> bool:
        """A matmul-like group with static shapes: one of its reductions yields more than one value."""
        static = isinstance(expr.ty, relax.TensorType) and all(isinstance(d, tirx.IntImm) for d in expr.ty.shape.values)
        return static and any(not _one_value(r) for p in self.prims(func) or [] for r in _reductions(p))

    def visit_dataflow_block_(self, block: relax.DataflowBlock) -> relax.DataflowBlock:
        uses: dict[relax.Var, int] = {}
        for binding in block.bindings:
            for var in relax.analysis.free_vars(binding.value):
                uses[var] = uses.get(var, 0) + 1
        values = {b.var: b.value for b in block.bindings}
        for binding in block.bindings:
            consumer = self.group(binding.value)
            if consumer is None or not self.is_consumer(binding.value, consumer[0]):
                continue
            for i, arg in enumerate(consumer[1]):
                if not isinstance(arg, relax.DataflowVar) or uses.get(arg) != 1 or arg in self.dropped:
                    continue
                if arg in self.folded:  # one fold per kernel
                    continue
                producer = self.group(values[arg]) if arg in values else None
                if producer is None or not self.is_producer(producer[0], binding.value.ty, arg.ty):
                    continue
                key = (_callee(values[arg]), _callee(binding.value), i)
                gv = self.merge(key, producer[0], consumer[0], i)
                self.folded[binding.var] = relax.Call(gv, [*producer[1], *consumer[1][:i], *consumer[1][i + 1 :]])
                self.dropped.add(arg)
                break
        return super().visit_dataflow_block_(block)

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        if binding.var in self.dropped:
            return  # computed inside its consumer now
        if binding.var in self.folded:
            binding = relax.VarBinding(binding.var, self.folded[binding.var])
        super().visit_var_binding_(binding)

    def merge(
        self, key: tuple[str, str, int], producer: relax.Function, consumer: relax.Function, index: int
    ) -> relax.GlobalVar:
        """One primitive function: the producer's bindings, then the consumer's, its ``index``-th parameter
        bound to the producer's result; parameters: the producer's, then the consumer's others."""
        if key in self.merged:
            return self.merged[key]
        first, second = (relax.utils.copy_with_new_vars(f) for f in (producer, consumer))
        second = second.bind_params({second.params[index]: first.body.body})
        params = list(first.params) + list(second.params)
        bindings = [b for f in (first, second) if f.body.blocks for b in f.body.blocks[0].bindings]
        func = relax.Function(params, relax.SeqExpr([relax.DataflowBlock(bindings)], second.body.body), second.ret_ty)
        func = func.with_attr("Primitive", True)
        gv = self.builder_.add_func(func, f"{key[0]}_{key[1]}")
        self.merged[key] = gv
        return gv


@tvm.transform.module_pass(opt_level=0, name="FoldProducersIntoMatmul")
def FoldProducersIntoMatmul(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:  # noqa: N802
    """After FuseOps, before FuseTIR: see the module docstring."""
    folder = _Folder(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function) and func.attrs and func.attrs.get(FOLD_ATTR, False):
            folder.builder_.update_func(gv, folder.visit_expr(func.without_attr(FOLD_ATTR)))
    # A producer's result was its function's output (a Var): CanonicalizeBindings makes it a DataflowVar again,
    # so that FuseTIR keeps it inside the kernel instead of writing it out.
    passes = [relax.transform.CanonicalizeBindings(), relax.transform.DeadCodeElimination()]
    return tvm.transform.Sequential(passes)(folder.builder_.get())


_THREADS = 64  # threads of one output row's reduction (a workgroup), as dlight's GEMV
_VECTOR = 8  # consecutive inputs per thread and step: one packed word of 4-bit weights


class FoldedGEMV(dl.ScheduleRule):
    """GPU schedule of a one-token matmul whose input comes from folded producers (FoldProducersIntoMatmul);
    None for anything else, which dlight's rules take. One workgroup per output row; each thread takes runs of
    ``_VECTOR`` inputs, then a cross-thread sum."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name == "llvm":
            return None
        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in blocks if _reductions_in(sch, b)]
        if not reductions:
            return None
        matmul, scalars = reductions[-1], reductions[:-1]
        if not all(_one_value(sch.get(b)) for b in scalars):
            return None
        before, later = blocks[: blocks.index(matmul)], blocks[blocks.index(matmul) + 1 :]
        try:
            for block in before:
                if block not in scalars:
                    sch.compute_inline(block)
            if not scalars and not _reads_a_range(sch.get(matmul)):
                return None  # a plain GEMV: dlight's
            *rows, k = sch.get_loops(matmul)
            if any(not isinstance(sch.get(loop).extent, tirx.IntImm) for loop in (*rows, k)):
                return None
            for block in later[:-1]:
                sch.compute_inline(block)
            row = sch.fuse(*rows)
            outer, thread, vector = sch.split(k, [None, _THREADS, _VECTOR])
            sch.reorder(row, outer, thread, vector)
            sch.bind(row, "blockIdx.x")
            sch.bind(thread, "threadIdx.x")
            sch.unroll(vector)
            for scalar in scalars:  # each row sums the norm's squares itself, across its threads
                sch.compute_at(scalar, row)
                *_, reduce_loop = sch.get_loops(scalar)
                _, inner = sch.split(reduce_loop, [None, _THREADS])
                sch.bind(inner, "threadIdx.x")
                # The cross-thread sum is written back by one thread: shared memory makes it every thread's.
                sch.set_scope(scalar, 0, "shared")
            if later:
                sch.reverse_compute_at(later[-1], row)
                sch.set_scope(matmul, 0, "local")
        except s_tir.ScheduleError:
            return None
        return sch


def _reductions_in(sch: s_tir.Schedule, block: s_tir.SBlockRV) -> bool:
    return any(v.iter_type == tirx.IterVar.CommReduce for v in sch.get(block).iter_vars)


def _callee(call: relax.Call) -> str:
    """The name of what a group calls: its primitive function, or a bare call_tir's PrimFunc."""
    return str(call.op.name_hint if isinstance(call.op, relax.GlobalVar) else call.args[0].name_hint)


def _reads_a_range(block: s_tir.SBlock) -> bool:
    """Whether the block reads some buffer over more than one element per iteration (a folded producer)."""
    return any(
        not (isinstance(r.extent, tirx.IntImm) and int(r.extent) == 1) for read in block.reads for r in read.region
    )
