"""Architecture registry: the one place that maps a config's ``model_type`` to a model definition."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from webbuild.build.arch import llama
from webbuild.build.arch.blocks import DecoderConfig
from webbuild.errors import UnsupportedError


@dataclass(frozen=True)
class Architecture:
    name: str
    config_from_hf: Callable[[dict[str, Any], int, int], DecoderConfig]
    convert_weights: Callable[[dict[str, np.ndarray], DecoderConfig], Iterator[tuple[str, np.ndarray]]]


ARCHITECTURES: dict[str, Architecture] = {
    "llama": Architecture("llama", llama.config_from_hf, llama.convert_weights),
}


def get_architecture(model_type: str) -> Architecture:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise UnsupportedError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(ARCHITECTURES))}",
            tip="convert the model to one of the supported architectures or open an issue",
        ) from None
