"""Resolve what the user named (preset, .gguf file, Hugging Face directory) into one ``ModelSource``.

Everything after this step sees the same thing whatever the input was: an HF-style config, HF tokenizer
files and float32 tensors under HF names and layout.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from webbuild import _log
from webbuild.build.presets import fetch_weights, load_preset, preset_names
from webbuild.build.weights.gguf import load_gguf
from webbuild.build.weights.gguf_tokenizer import tokenizer_config_from_gguf, tokenizer_json_from_gguf
from webbuild.build.weights.safetensors import load_hf_dir
from webbuild.errors import InputError

GGUF_MAGIC = b"GGUF"


@dataclass
class ModelSource:
    """A model ready to quantize: HF config.json fields, tokenizer.json text, tokenizer_config (with the chat
    template), float32 tensors under their HF names and layout, the preset's defaults (quantization, sampling,
    context sizes) and a Hugging Face directory's generation_config.json ({} for a GGUF, whose end tokens
    ``config["eos_token_id"]`` lists)."""

    model_id: str
    config: dict[str, Any]
    tokenizer_json: str
    tokenizer_config: dict[str, Any]
    tensors: dict[str, np.ndarray]
    origin: str
    license: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    generation_config: dict[str, Any] = field(default_factory=dict)


def load_source(spec: str) -> ModelSource:
    """Load a preset name, a ``.gguf`` file or a Hugging Face model directory.

    An existing path wins over a preset of the same name, so a local copy is never shadowed.
    """
    path = Path(spec).expanduser()
    t0 = time.monotonic()
    if path.is_dir():
        source = _from_hf_dir(path)
    elif path.is_file():
        source = _from_file(path)
    elif spec in preset_names():
        source = _from_preset(spec)
    else:
        known = ", ".join(preset_names()) or "none installed"
        raise InputError(
            f"no such file or directory: {spec}; expected a preset name ({known}), "
            "a .gguf file or a Hugging Face model directory",
            param="model",
        )
    _log.detail(f"{source.model_id}: {len(source.tensors)} tensors loaded in {time.monotonic() - t0:.1f}s")
    return source


def slug(name: str) -> str:
    """A lowercase id for output paths; drops a trailing GGUF quantization tag (``.Q4_1``, ``-f16``)."""
    name = re.sub(r"[.\-_](q\d\w*|iq\d\w*|f16|f32|bf16)$", "", name, flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"


def _from_preset(name: str) -> ModelSource:
    preset = load_preset(name)
    _log.step(f"Resolving {preset.origin}")
    weights = fetch_weights(preset)
    source = _from_gguf(weights, model_id=preset.name, origin=preset.origin)
    source.license = preset.license or source.license
    source.defaults = dict(preset.defaults)
    return source


def _from_file(path: Path) -> ModelSource:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC and path.suffix.lower() != ".gguf":
        raise InputError(
            f"{path} is neither a GGUF file nor a directory",
            tip="pass a preset name, a .gguf file or a Hugging Face model directory "
            "(a directory holding config.json, tokenizer files and *.safetensors)",
            param="model",
        )
    return _from_gguf(path, model_id=slug(path.stem), origin=f"GGUF file {path}")


def _from_gguf(path: Path, *, model_id: str, origin: str) -> ModelSource:
    _log.step(f"Reading GGUF {path.name}")
    model = load_gguf(path)
    _log.step("Building the tokenizer from GGUF metadata")
    tokenizer_json = tokenizer_json_from_gguf(model.metadata)
    tokenizer_config = tokenizer_config_from_gguf(model.metadata)
    license_ = model.metadata.get("general.license")
    return ModelSource(
        model_id=model_id,
        config=model.config,
        tokenizer_json=tokenizer_json,
        tokenizer_config=tokenizer_config,
        tensors=model.tensors,
        origin=origin,
        license=license_ if isinstance(license_, str) else None,
    )


def _from_hf_dir(path: Path) -> ModelSource:
    _log.step(f"Reading Hugging Face model directory {path}")
    model = load_hf_dir(path)
    return ModelSource(
        model_id=slug(path.resolve().name),
        config=model.config,
        tokenizer_json=model.tokenizer_json,
        tokenizer_config=model.tokenizer_config,
        tensors=model.tensors,
        origin=f"Hugging Face directory {path}",
        generation_config=model.generation_config,
    )
