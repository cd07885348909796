"""Builds (and caches) the model library for the Python engine's devices: ``cpu`` (llvm) and ``cuda``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import tvm

from . import _log
from .arch.blocks import DecoderConfig
from .cache import cache_dir, digest
from .compile import compile_module, make_target
from .export import export_model
from .quantize import QuantScheme

_DEFINITION_FILES = ("arch/blocks.py", "export.py", "compile.py")


def _definition_digest() -> str:
    here = Path(__file__).parent
    return digest(*(here.joinpath(f).read_bytes() for f in _DEFINITION_FILES))


def build_native_library(cfg: DecoderConfig, scheme: QuantScheme, device: str) -> Path:
    """Returns the path of a shared library for ``device``, compiling it only when its inputs changed."""
    key = digest(tvm.__version__, json.dumps(cfg.as_json(), sort_keys=True), scheme.name, device, _definition_digest())
    path = cache_dir("libs", device) / f"{cfg.model_type}-{scheme.name}-{key}.so"
    if path.exists():
        return path
    with _log.timed(f"compiling the {scheme.name} model for {device} (cached afterwards)"):
        exported = export_model(cfg, scheme, make_target(device))
        executable = compile_module(exported.mod, make_target(device))
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        os.close(fd)
        try:
            executable.export_library(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path
