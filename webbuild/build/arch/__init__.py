"""Architecture registry: the one place that maps a config's ``model_type`` (or a GGUF file's
``general.architecture``) to a family's definition. Adding a family is its file plus one line in ``_FAMILIES``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from webbuild.build.arch import gemma3, llama, phi3, qwen2, qwen3
from webbuild.build.arch.config import DecoderConfig
from webbuild.build.arch.weights import GGUFLayout, Tensors
from webbuild.errors import UnsupportedError


@dataclass(frozen=True)
class Architecture:
    name: str  # HF config.json model_type
    config_from_hf: Callable[[dict[str, Any], int, int], DecoderConfig]
    convert_weights: Callable[[Tensors, DecoderConfig], Iterator[tuple[str, np.ndarray]]]
    gguf: GGUFLayout

    def weights(self, tensors: dict[str, np.ndarray], cfg: DecoderConfig, origin: str) -> dict[str, np.ndarray]:
        """HF tensors -> the definition's parameters; refuses missing tensors and tensors it would not use."""
        source = Tensors(tensors, origin)
        converted = dict(self.convert_weights(source, cfg))
        source.check_all_used(self.name)
        return converted


def _family(module: ModuleType) -> Architecture:
    return Architecture(module.NAME, module.config_from_hf, module.convert_weights, module.GGUF)


_FAMILIES = [llama, qwen2, qwen3, phi3, gemma3]
ARCHITECTURES: dict[str, Architecture] = {m.NAME: _family(m) for m in _FAMILIES}
_BY_GGUF_ARCH = {a.gguf.arch: a for a in ARCHITECTURES.values()}


def get_architecture(model_type: str, where: str = "config.json") -> Architecture:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedError(
            f"{where}: architecture {model_type!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}",
            tip="convert the model to one of the supported architectures or open an issue",
        ) from None


def gguf_architecture(arch: str, where: str) -> Architecture:
    """The family stored under GGUF ``general.architecture`` = ``arch``."""
    try:
        return _BY_GGUF_ARCH[arch]
    except KeyError:
        raise UnsupportedError(
            f"{where}: architecture {arch!r} is not supported; supported: {', '.join(sorted(_BY_GGUF_ARCH))}",
            tip="convert the model to one of the supported architectures or open an issue",
        ) from None
