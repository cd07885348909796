"""The quantization schemes a build can ask for, and the per-tensor policy each one applies.

A scheme names the model's float dtype (its ``f16``/``f32`` part: the browser picks f32 builds for adapters
without ``shader-f16``) and a layout per kind of weight: the linear layers, and the embedding table with the
output head, which dominate the loss of small models. ``embeddings`` overrides the second per build
(``webbuild package --embeddings``); the policy is written to mlc-chat-config.json and the site manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from webbuild.build.quantize.layout import Layout
from webbuild.build.quantize.q4 import Q4
from webbuild.build.quantize.q4m import Q4M
from webbuild.build.quantize.q8 import Q8
from webbuild.errors import UnsupportedError

FLOAT = "float"  # a policy entry meaning: stored unquantized, in the model's float dtype
LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (Q4(), Q4M(), Q8())}
EMBEDDING_CHOICES = (*LAYOUTS, FLOAT)
ROLES = ("linear", "embedding", "head")


@dataclass(frozen=True)
class QuantScheme:
    """A weight format: ``linear`` and ``embeddings`` name layouts (or ``float``); ``model_dtype`` is the dtype of
    activations and unquantized tensors."""

    name: str
    model_dtype: str  # "float32" | "float16"
    linear: str
    embeddings: str  # the embedding table and the output head (tied or not)

    @property
    def needs_shader_f16(self) -> bool:
        """f16 kernels need WebGPU's ``shader-f16`` feature, which many adapters lack."""
        return self.model_dtype == "float16"

    @property
    def quantized(self) -> bool:
        return self.linear != FLOAT

    @property
    def policy(self) -> dict[str, str]:
        """Layout per kind of weight, as written to mlc-chat-config.json (``quantization_policy``)."""
        return {"linear": self.linear, "embedding": self.embeddings, "head": self.embeddings}

    def layout(self, role: str) -> Layout | None:
        """The layout of a weight of ``role`` (one of ``ROLES``); None means unquantized."""
        choice = self.linear if role == "linear" else self.embeddings
        return None if choice == FLOAT else LAYOUTS[choice]

    def with_policy(self, policy: Mapping[str, str] | None) -> QuantScheme:
        """This scheme with ``policy``'s embedding/head entry (a dict as ``policy`` returns, or None)."""
        if not policy:
            return self
        if policy.get("linear", self.linear) != self.linear or policy.get("head") != policy.get("embedding"):
            raise UnsupportedError(f"quantization policy {dict(policy)} does not fit {self.name}")
        return self.with_embeddings(policy.get("embedding"))

    def with_embeddings(self, choice: str | None) -> QuantScheme:
        if choice is None or choice == self.embeddings:
            return self
        if choice not in EMBEDDING_CHOICES:
            raise UnsupportedError(
                f"unknown embedding layout {choice!r}; choose among {', '.join(EMBEDDING_CHOICES)}",
                param="embeddings",
            )
        return dataclasses.replace(self, embeddings=choice)


QUANTIZATIONS: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        # GGUF-faithful: 4-bit groups with scale and minimum (Q4_0/Q4_1 exactly), 8-bit embeddings (Q8_0 exactly)
        QuantScheme("q4f32_m", "float32", "q4m", "q8"),
        QuantScheme("q4f16_m", "float16", "q4m", "q8"),
        # 8-bit everywhere (a Q8_0 GGUF exactly)
        QuantScheme("q8f32_s", "float32", "q8", "q8"),
        QuantScheme("q8f16_s", "float16", "q8", "q8"),
        # MLC LLM / WebLLM's formats (ARTIFACTS.md): symmetric int4 everywhere, embeddings included
        QuantScheme("q4f32_1", "float32", "q4", "q4"),
        QuantScheme("q4f16_1", "float16", "q4", "q4"),
        QuantScheme("q0f32", "float32", FLOAT, FLOAT),
        QuantScheme("q0f16", "float16", FLOAT, FLOAT),
    )
}
DEFAULT_QUANTIZATION = "q4f32_m"


def get_scheme(name: str, embeddings: str | None = None) -> QuantScheme:
    """Looks a scheme up by name (an unknown one is a user error listing the valid ones), with the embedding
    and head layout replaced when ``embeddings`` is given."""
    try:
        scheme = QUANTIZATIONS[name]
    except KeyError:
        valid = ", ".join(QUANTIZATIONS)
        raise UnsupportedError(
            f"Unknown quantization {name!r}; supported: {valid}.",
            tip="q4f32_m runs on every WebGPU adapter and keeps a GGUF's Q4_0/Q4_1/Q8_0 weights exactly; "
            "f16 schemes need shader-f16.",
            param="quantization",
        ) from None
    return scheme.with_embeddings(embeddings)
