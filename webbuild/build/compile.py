"""The pass pipeline per target: one Relax module in, one VM executable out."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl
from tvm.target import Target

from webbuild import _log
from webbuild.build.fusion import FoldedGEMV, FoldProducersIntoMatmul
from webbuild.build.quantize.cpu_schedule import LinearCPU
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


class _LinearMatmul(dl.gpu.Matmul):  # type: ignore[misc]
    """dlight's Matmul for the linear layers over many tokens (prefill chunks), with two choices of ours.

    CUDA: no tensor-core path. TVM 0.27's Tensorize segfaults (the whole process, so no rule can fall back) on
    our float16 matmuls whose 4-bit weights are dequantized inline; seen for every q4f16_1 prefill/batch
    projection on sm_90. The rule decides on the target's ``arch`` alone, so it is shown an arch below the
    tensor-core threshold; the kernel is still built for the real one.

    WebGPU: tiles of 16 tokens x 32 outputs, 16 of the reduction a step (dlight's default is 32 x 32, 8 a step).
    A chat prompt of a few dozen tokens then pads to fewer wasted rows and spreads over twice the workgroups,
    and the reduction waits on half the barriers: on an H200 the 37-token prefill of SmolLM2 takes 8.4 ms of GPU
    time instead of 12.6, and 391 tokens 47.7 instead of 48.6 (BENCHMARKS.md, "Prefill tiles").
    """

    def get_configs(self, target: Target) -> dl.gpu.Matmul.Config:
        if target.kind.name == "webgpu":
            return dl.gpu.Matmul.Config(micro_size_x=2, micro_size_k=16)
        return super().get_configs(target)

    def apply(self, func: tvm.tirx.PrimFunc, target: Target, tunable: bool) -> tvm.s_tir.Schedule | None:
        if target.kind.name == "cuda":
            target = Target({k: v for k, v in target.export().items() if k != "host"} | {"arch": "sm_60"})
        return super().apply(func, target, tunable)


def _is_gpu(target: Target) -> bool:
    return target.kind.name != "llvm"


def _passes(target: Target) -> list[tvm.transform.Pass]:
    phases: list[tvm.transform.Pass] = [
        # Phase 1: high-level ops -> TIR, then fuse elementwise chains into their producers.
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
    ]
    if _is_gpu(target):  # the gated MLP's SiLU * up into down_proj's reads (fusion.py)
        phases.append(FoldProducersIntoMatmul)
    phases += [relax.transform.FuseTIR(), relax.transform.DeadCodeElimination()]
    if _is_gpu(target):
        # Phase 2: thread bindings for every kernel (the linear layers' GEMV/Matmul inline their dequantize stages).
        phases.append(
            dl.ApplyDefaultSchedule(
                FoldedGEMV(),
                _LinearMatmul(),
                dl.gpu.GEMV(),
                dl.gpu.Reduction(),
                dl.gpu.GeneralReduction(),
                dl.gpu.Fallback(),
            )
        )
    else:
        # Phase 2 (CPU): the linear layers (decode and prefill, weights decoded once per group), vectorized,
        # multi-threaded GEMV for what else reduces; the rest stays plain loops.
        phases.append(dl.ApplyDefaultSchedule(LinearCPU(), dl.cpu.GEMV(), dl.cpu.Reduction()))
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


_FD_LOCK = threading.Lock()  # file descriptors are per process: one capture at a time


@contextlib.contextmanager
def _fd_output(into: list[str]) -> Iterator[None]:
    """Sends what is written to file descriptors 1 and 2 during the block to a temp file, appended to ``into``.

    TVM's C++ side and LLVM write warnings straight to the descriptors (``[12:00:00] transform.h:1261: Warning:
    Fast mode segfaults...``), past ``sys.stderr``. Output of other threads during the block lands there too.
    """
    with _FD_LOCK, tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            ctypes.CDLL(None).fflush(None)  # C stdio buffers (printf, std::cout) still bound for the temp file
            for fd, copy in enumerate(saved, start=1):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            into.append(sink.read().decode(errors="replace"))


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Keeps Ctrl-C meaning stop: raised inside one of TVM's Python callbacks, KeyboardInterrupt comes out of
    ``tvm.compile`` as a RuntimeError, or not at all when a schedule rule catches everything. Remembers it,
    and raises KeyboardInterrupt once compiling stops."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield  # only the main thread may set handlers; an ignored or custom SIGINT is left as it is
        return
    interrupted = False

    def on_sigint(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        raise KeyboardInterrupt


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
    output: list[str] = []  # TVM's own prints and warnings: shown with -v, and in the error when it fails
    try:
        with _fd_output(output), _interruptible():
            ex = tvm.compile(mod, target=target, relax_pipeline=pipeline)
    except Exception as exc:  # TVM raises many kinds; the user needs the message, not the class
        said = "".join(output).strip()
        message = f"TVM compile for {target.kind.name} failed: {exc}".strip()[:4000]
        raise BuildError(f"{message}\nTVM output:\n{said[-4000:]}" if said else message) from exc
    for line in "".join(output).splitlines():
        _log.detail(f"tvm: {line}")
    _log.detail(f"compiled for {target.kind.name} in {time.monotonic() - t0:.1f}s")
    return ex
