"""The linear layers' kernels, compiled for the CPU (llvm), and for CUDA where a GPU is present: each GGUF type's
groups, stored in our layout, come back out of the kernel as the same float32 bits (embedding rows), and the
matmul is x @ those weights; and the WebGPU kernels of a tiny model decode weights in straight-line code."""

from __future__ import annotations

import re

import gguf
import numpy as np
import pytest
import tvm
from tiny_llama import tiny_llama_model
from tvm import relax
from tvm.relax.frontend import nn

from webbuild.build.arch import get_architecture
from webbuild.build.compile import compile_module, make_target
from webbuild.build.export import export_model
from webbuild.build.quantize import get_scheme
from webbuild.build.quantize.gguf_blocks import QuantizedTensor
from webbuild.build.quantize.linear import QuantLinear
from webbuild.build.quantize.scheme import LAYOUTS

pytestmark = pytest.mark.toolchain

OUT, IN = 48, 96  # three groups per row: the last scale word of q4m/q8 is half padding
# layout -> the GGUF types it holds exactly
EXACT = {"q4": ["Q4_0"], "q4m": ["Q4_0", "Q4_1"], "q8": ["Q8_0", "Q4_0"]}


class _Probe(nn.Module):
    def __init__(self, layout: str, dtype: str) -> None:
        self.linear = QuantLinear(IN, OUT, LAYOUTS[layout], dtype)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.linear(x)

    def lookup(self, ids: nn.Tensor) -> nn.Tensor:
        return self.linear.lookup(ids)


_CUDA = [pytest.mark.gpu, pytest.mark.skipif(not tvm.cuda(0).exist, reason="no CUDA GPU on this machine")]
PROBES = [
    ("q4", "float32", "cpu"),
    ("q4m", "float32", "cpu"),
    ("q8", "float32", "cpu"),
    ("q4m", "float16", "cpu"),
    *(pytest.param((layout, dtype, "cuda"), marks=_CUDA) for layout in LAYOUTS for dtype in ("float32", "float16")),
]


@pytest.fixture(scope="module", params=PROBES)
def kernels(request):
    """One compiled probe per layout, model dtype and target, shared by the tests below."""
    layout, dtype, target = request.param
    probe = _Probe(layout, dtype)
    packed = {"param_mode": "packed", "effect_mode": "none"}
    mod, params = probe.export_tvm(
        spec={
            "forward": {"x": nn.spec.Tensor([1, "n", IN], dtype), "$": packed},
            "lookup": {"ids": nn.spec.Tensor(["n"], "int32"), "$": packed},
        }
    )
    device = tvm.cuda() if target == "cuda" else tvm.cpu()
    vm = relax.VirtualMachine(compile_module(mod, make_target(target)), device)
    return layout, dtype, [name.split(".")[-1] for name, _ in params], (vm, device)


def _source(qtype: str) -> tuple[QuantizedTensor, np.ndarray]:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((OUT, IN)).astype(np.float32) * 0.1
    w[5, 32:64] *= 1e-5  # a group whose float16 scale is subnormal
    w[6, :32] = -np.abs(w[6, :32]) - 0.5  # a group with a negative minimum
    blocks = gguf.quants.quantize(w, gguf.GGMLQuantizationType[qtype])
    return QuantizedTensor(qtype, blocks, IN), gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[qtype])


def _run(probe, function: str, arg: np.ndarray, stored: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    vm, device = probe
    params = [tvm.runtime.tensor(stored[n], device) for n in names]
    return vm[function](tvm.runtime.tensor(arg, device), params).numpy()


def test_gguf_groups_come_out_of_the_kernel_bit_for_bit(kernels) -> None:
    layout, dtype, names, vm = kernels
    for qtype in EXACT[layout]:
        tensor, expected = _source(qtype)
        stored = LAYOUTS[layout].from_codes(tensor.group_codes(), dtype)
        rows = _run(vm, "lookup", np.arange(OUT, dtype=np.int32), stored, names)
        assert rows.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(rows, expected.astype(dtype), err_msg=f"{qtype} in {layout} ({dtype})")


def test_the_matmul_uses_those_weights(kernels) -> None:
    layout, dtype, names, vm = kernels
    tensor, expected = _source(EXACT[layout][0])
    stored = LAYOUTS[layout].from_codes(tensor.group_codes(), dtype)
    x = np.random.default_rng(8).standard_normal((1, 5, IN)).astype(dtype)
    got = _run(vm, "forward", x, stored, names)
    want = x.astype(np.float64) @ expected.astype(dtype).astype(np.float64).T
    # f16 activations and sums (and, on a GPU, another order of the sums): a tolerance, not the bits
    np.testing.assert_allclose(got, want, rtol=0, atol=(1e-5 if dtype == "float32" else 2e-2) * np.abs(want).max())


def _wgsl(executable: relax.VMExecutable) -> str:
    modules, found = [executable.mod], []  # the webgpu module hangs under the wasm host module
    while modules:
        module = modules.pop()
        modules += list(module.imports)
        found += [module.inspect_source()] if module.kind == "webgpu" else []
    return "\n".join(found)


def test_webgpu_kernels_decode_weights_without_branches() -> None:
    """A branch on a weight's bits per element (float16 scales rebuilt through if/else, as TVM lowers a Select
    whose arms read memory) made SwiftShader spend minutes compiling SmolLM2's decode MLP kernel until
    Chromium's GPU watchdog killed the GPU process. Every kernel of a tiny model's WebGPU library, the folded
    decode kernels included, must read scales, minimums and codes in straight-line code."""
    tiny = tiny_llama_model()
    cfg = get_architecture("llama").config_from_hf(tiny.config, 128, 16)
    target = make_target("webgpu")
    source = _wgsl(compile_module(export_model(cfg, get_scheme("q4f32_m"), target).mod, target))
    assert re.search(r"_q_min\d*_ptr", source) and re.search(r"q8_matmul", source)  # both layouts are there
    branches = [line.strip() for line in source.splitlines() if re.match(r"\s*(\} else )?if \(", line)]
    assert branches
    on_weights = [line for line in branches if re.search(r"_q_(weight|scale|min)\d*_ptr", line)]
    assert not on_weights, on_weights[:3]
