"""Weight quantization: schemes, their layouts (numpy and TVM sides) and the per-tensor decisions.

| scheme | linear layers | embedding + head | note |
|---|---|---|---|
| ``q4f32_m`` / ``q4f16_m`` | ``q4m``: int4, scale + minimum per 32 | ``q8`` | GGUF Q4_0/Q4_1/Q8_0 exactly |
| ``q8f32_s`` / ``q8f16_s`` | ``q8``: int8, scale per 32 | ``q8`` | GGUF Q8_0 exactly |
| ``q4f32_1`` / ``q4f16_1`` | ``q4``: MLC's symmetric int4 | ``q4`` | MLC LLM / WebLLM's format (ARTIFACTS.md) |
| ``q0f32`` / ``q0f16`` | unquantized | unquantized | |

One module per layout (``q4``, ``q4m``, ``q8``) holds its numpy and TVM sides; ``params`` decides per tensor;
``linear`` holds the TVM modules whose kernels dequantize inside the matmul; ``cpu_schedule`` schedules them
for the CPU. docs/quantization.md describes the stored tensors for readers of a bundle. This module imports no
TVM, so the CLI can check a scheme name cheaply.
"""

from __future__ import annotations

from webbuild.build.quantize.gguf_blocks import QuantizedTensor
from webbuild.build.quantize.params import QuantReport, default_quantization, param_layout, quantize_params
from webbuild.build.quantize.scheme import EMBEDDING_CHOICES, QUANTIZATIONS, QuantScheme, get_scheme

__all__ = [
    "EMBEDDING_CHOICES",
    "QUANTIZATIONS",
    "QuantReport",
    "QuantScheme",
    "QuantizedTensor",
    "default_quantization",
    "get_scheme",
    "param_layout",
    "quantize_params",
]
