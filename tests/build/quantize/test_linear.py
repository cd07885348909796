"""The linear layers' kernels, compiled for the CPU (llvm): each GGUF type's groups, stored in our layout, come back
out of the kernel as the same float32 bits (embedding rows), and the matmul is x @ those weights."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.relax.frontend import nn

from webbuild.build.compile import compile_module, make_target
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


@pytest.fixture(scope="module", params=[("q4", "float32"), ("q4m", "float32"), ("q8", "float32"), ("q4m", "float16")])
def kernels(request):
    """One compiled probe per layout and model dtype, shared by the tests below."""
    layout, dtype = request.param
    probe = _Probe(layout, dtype)
    packed = {"param_mode": "packed", "effect_mode": "none"}
    mod, params = probe.export_tvm(
        spec={
            "forward": {"x": nn.spec.Tensor([1, "n", IN], dtype), "$": packed},
            "lookup": {"ids": nn.spec.Tensor(["n"], "int32"), "$": packed},
        }
    )
    vm = relax.VirtualMachine(compile_module(mod, make_target("cpu")), tvm.cpu())
    return layout, dtype, [name.split(".")[-1] for name, _ in params], vm


def _source(qtype: str) -> tuple[QuantizedTensor, np.ndarray]:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((OUT, IN)).astype(np.float32) * 0.1
    w[5, 32:64] *= 1e-5  # a group whose float16 scale is subnormal
    w[6, :32] = -np.abs(w[6, :32]) - 0.5  # a group with a negative minimum
    blocks = gguf.quants.quantize(w, gguf.GGMLQuantizationType[qtype])
    return QuantizedTensor(qtype, blocks, IN), gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[qtype])


def _run(vm, function: str, arg: np.ndarray, stored: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    params = [tvm.runtime.tensor(stored[n], tvm.cpu()) for n in names]
    return vm[function](tvm.runtime.tensor(arg, tvm.cpu()), params).numpy()


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
    np.testing.assert_allclose(got, want, rtol=0, atol=(1e-5 if dtype == "float32" else 2e-2) * np.abs(want).max())
