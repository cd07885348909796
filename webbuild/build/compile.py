"""The pass pipeline per target: one Relax module in, one VM executable out."""

from __future__ import annotations

import time
from pathlib import Path

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl
from tvm.target import Target

from webbuild import _log
from webbuild.errors import BuildError, UnsupportedError

WASM_HOST = {"kind": "llvm", "mtriple": "wasm32-unknown-unknown-wasm"}
TARGET_NAMES = ("webgpu", "cpu", "cuda")


def make_target(name: str) -> Target:
    if name == "webgpu":
        return Target({"kind": "webgpu"}, host=WASM_HOST)
    if name == "cpu":
        # This machine's CPU: without it LLVM targets baseline x86-64 (no AVX, no F16C, so f16 is emulated in
        # software and q4f16_1 runs ~10x slower). The library cache key includes it.
        return Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    if name == "cuda":
        return Target({"kind": "cuda", "arch": "sm_90", "max_shared_memory_per_block": 49152}, host={"kind": "llvm"})
    raise UnsupportedError(f"unknown target {name!r}; choose one of {', '.join(TARGET_NAMES)}")


def _is_gpu(target: Target) -> bool:
    return target.kind.name != "llvm"


def _passes(target: Target) -> list[tvm.transform.Pass]:
    phases: list[tvm.transform.Pass] = [
        # Phase 1: high-level ops -> TIR, then fuse elementwise chains into their producers.
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]
    if _is_gpu(target):
        # Phase 2: thread bindings for every kernel (the q4 GEMV/Matmul inline their dequantize stage).
        phases.append(
            dl.ApplyDefaultSchedule(
                dl.gpu.Matmul(),
                dl.gpu.GEMV(),
                dl.gpu.Reduction(),
                dl.gpu.GeneralReduction(),
                dl.gpu.Fallback(),
            )
        )
    else:
        # Phase 2 (CPU): vectorized, multi-threaded GEMV for decode; the rest stays plain loops.
        phases.append(dl.ApplyDefaultSchedule(dl.cpu.GEMV(), dl.cpu.Reduction()))
    if target.kind.name == "webgpu":
        # WGSL has no 64-bit integers.
        phases.append(tvm.tirx.transform.ForceNarrowIndexToInt32())
    phases += [
        # Phase 3: dataflow -> VM instructions, with static memory planning.
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]
    return phases


def compile_module(mod: tvm.IRModule, target: Target, dump_ir: Path | None = None) -> relax.VMExecutable:
    """Compile with our pipeline; ``dump_ir`` writes the module before codegen for debugging."""

    @tvm.transform.module_pass(opt_level=0, name="webbuild_pipeline")
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            mod = tvm.transform.Sequential(_passes(target))(mod)
        if dump_ir is not None:
            dump_ir.mkdir(parents=True, exist_ok=True)
            (dump_ir / f"{target.kind.name}.py").write_text(mod.script(show_meta=False))
        return mod

    t0 = time.monotonic()
    try:
        ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    except Exception as exc:  # TVM raises many kinds; the user needs the message, not the class
        raise BuildError(f"TVM compile for {target.kind.name} failed: {exc}".strip()[:4000]) from exc
    _log.detail(f"compiled for {target.kind.name} in {time.monotonic() - t0:.1f}s")
    return ex
