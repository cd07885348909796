"""Builds and caches the compiled model library for a target: ``webgpu`` (.wasm), ``cpu`` or ``cuda`` (.so).

Compiling SmolLM2 takes minutes, so libraries are cached under ``cache_dir("libs")`` keyed by everything
that goes into them: TVM version, config, quantization, target and the source of the model definition.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import tvm

from webbuild import _log
from webbuild.build.arch.config import DecoderConfig
from webbuild.build.compile import compile_module, make_target
from webbuild.build.export import export_model
from webbuild.build.quantize import QuantScheme
from webbuild.cache import cache_dir, digest

# Everything that decides what a library computes: every file of the model definition (arch/, whatever
# family a model is; quantize/, the linear layers and their layouts) and the export, compile and link steps.
# A changed block is never served stale.
_DEFINITION_FILES = ("export.py", "sampling.py", "fusion.py", "compile.py", "link.py", "runtime_patch.py")


def _definition_sources() -> list[Path]:
    here = Path(__file__).parent
    definition = sorted((here / "arch").glob("*.py")) + sorted((here / "quantize").glob("*.py"))
    return definition + [here / f for f in _DEFINITION_FILES]


def _definition_digest() -> str:
    return digest(*(part for f in _definition_sources() for part in (f.name, f.read_bytes())))


def library_key(cfg: DecoderConfig, scheme: QuantScheme, target: str) -> str:
    config = json.dumps(cfg.as_json(), sort_keys=True)
    policy = json.dumps(scheme.policy, sort_keys=True)  # a per-build override changes the layouts
    return digest(tvm.__version__, config, scheme.name, policy, str(make_target(target)), _definition_digest())


def build_library(cfg: DecoderConfig, scheme: QuantScheme, target: str, dump_ir: Path | None = None) -> Path:
    """Returns the path of the cached library for ``target``, compiling it only when its inputs changed."""
    suffix = ".wasm" if target == "webgpu" else ".so"
    path = cache_dir("libs", target) / f"{cfg.model_type}-{scheme.name}-{library_key(cfg, scheme, target)}{suffix}"
    if path.exists():
        _log.detail(f"{target} library from cache: {path}")
        return path
    if target == "webgpu":
        from webbuild.build.link import find_emcc

        find_emcc()  # fail before minutes of compiling, not after
    with _log.timed(f"compiling {cfg.model_type} {scheme.name} for {target} (cached afterwards)"):
        exported = export_model(cfg, scheme, make_target(target))
        executable = compile_module(exported.mod, make_target(target), dump_ir)
    if target == "webgpu":
        from webbuild.build.link import link_model_library

        with _log.timed("linking the WebGPU model library with emscripten"):
            return link_model_library(executable, path)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        executable.export_library(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
