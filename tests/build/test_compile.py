"""compile_module: TVM's own output (written to file descriptors 1/2, past sys.stderr) reaches the user only as
-v details or inside a build error, and Ctrl-C during a compile stops it however TVM hands the interrupt back."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import tvm
from tvm.script import ir as I
from tvm.script import relax as R

from webbuild import _log
from webbuild.build.compile import compile_module, make_target
from webbuild.errors import BuildError


@I.ir_module
class Take:
    @R.function
    def main(x: R.Tensor((8, 4), "float32"), i: R.Tensor((2,), "int32")) -> R.Tensor((2, 4), "float32"):
        # Lowering take in "fast" mode makes TVM's C++ side log a warning straight to stderr.
        return R.take(x, i, axis=0, mode="fast")


@pytest.mark.toolchain
@pytest.mark.parametrize("verbose", [False, True])
def test_tvm_warnings_become_details(capfd: pytest.CaptureFixture[str], verbose: bool) -> None:
    with _log.reporting(_log.Reporter(enabled=True, verbose=verbose)):
        compile_module(Take, make_target("cpu"))
    err = capfd.readouterr().err
    assert not [line for line in err.splitlines() if "Fast mode" in line and not line.startswith("  tvm: ")]
    assert ("Fast mode segfaults" in err) is verbose


def test_tvm_output_of_a_failed_compile_is_in_the_error(capfd: pytest.CaptureFixture[str], monkeypatch) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        os.write(2, b"[12:00:00] codegen.cc:1: Warning: what led up to it\n")
        raise RuntimeError("InternalError: the failure")

    monkeypatch.setattr(tvm, "compile", failing)
    with pytest.raises(BuildError) as info:
        compile_module(Take, make_target("cpu"))
    assert "the failure" in info.value.message and "what led up to it" in info.value.message
    assert capfd.readouterr().err == ""


def _interrupt_swallowed(*args: Any, **kwargs: Any) -> str:
    try:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while TVM runs one of its Python callbacks...
    except KeyboardInterrupt:
        pass  # ...caught there (a schedule rule with a bare except): TVM goes on compiling
    os.write(2, b"[12:00:00] pass.cc:1: Warning: half done\n")
    return "executable"


def _interrupt_converted(*args: Any, **kwargs: Any) -> str:
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        raise RuntimeError("") from None  # how tvm-ffi hands a callback's KeyboardInterrupt back
    return "executable"


@pytest.mark.parametrize("tvm_compile", [_interrupt_swallowed, _interrupt_converted])
def test_ctrl_c_during_a_compile_stops_it(capfd: pytest.CaptureFixture[str], monkeypatch, tvm_compile) -> None:
    monkeypatch.setattr(tvm, "compile", tvm_compile)
    with pytest.raises(KeyboardInterrupt):
        compile_module(Take, make_target("cpu"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    os.write(2, b"after\n")  # stderr is the terminal's again
    assert capfd.readouterr().err == "after\n"


@pytest.mark.toolchain
def test_a_q4f16_1_library_compiles_for_cuda() -> None:
    """TVM's tensor-core Tensorize segfaulted on the float16 q4 projections (dlight's Matmul picks it for sm_70+);
    the compile runs in a child process so that a crash fails this test instead of ending the run."""
    import subprocess
    import sys

    script = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from tiny_llama import tiny_llama_model\n"
        "from webbuild.build.arch import get_architecture\n"
        "from webbuild.build.compile import compile_module, make_target\n"
        "from webbuild.build.export import export_model\n"
        "from webbuild.build.quantize import get_scheme\n"
        # Wider than the tiny model: dlight tensorizes only matmuls whose dimensions all exceed 64.
        "hf = tiny_llama_model().config | {'hidden_size': 256, 'intermediate_size': 512}\n"
        "cfg = get_architecture('llama').config_from_hf(hf, 128, 16)\n"
        "target = make_target('cuda')\n"
        "compile_module(export_model(cfg, get_scheme('q4f16_1'), target).mod, target)\n"
        "print('compiled')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-2000:]
