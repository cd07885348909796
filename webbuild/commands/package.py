"""``webbuild package``: model -> quantized weights + WebGPU library -> static chat site."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from webbuild import _log
from webbuild.build.library import build_library
from webbuild.build.prepare import prepare_model, write_model_files
from webbuild.build.quantize import default_quantization, get_scheme
from webbuild.build.resources import require_runtime
from webbuild.build.site import SiteVariant, assemble_site, check_replaceable
from webbuild.build.source import ModelSource, load_source
from webbuild.errors import FileSystemError
from webbuild.site_format import Variant


@dataclass
class PackageOptions:
    model: str
    out: Path | None = None
    quantizations: list[str] = field(default_factory=list)  # empty: the model's default
    context_window_size: int | None = None
    prefill_chunk_size: int | None = None
    dump_ir: Path | None = None
    embeddings: str | None = None  # layout of the embedding table and output head; None: the scheme's


@dataclass
class PackageResult:
    site: Path
    seconds: float
    parts: dict[str, int]  # bytes by part of the bundle
    # variant id -> how its weights were stored: the policy, then one line per kind of tensor
    quantization: dict[str, list[str]] = field(default_factory=dict)


def size_by_part(site: Path) -> dict[str, int]:
    parts: dict[str, int] = {}
    for f in site.rglob("*"):
        if f.is_file():
            rel = f.relative_to(site)
            part = "weights" if rel.parts[0] == "models" and "params_shard_" in f.name else rel.parts[0]
            part = "site" if len(rel.parts) == 1 else part
            parts[part] = parts.get(part, 0) + f.stat().st_size
    return parts


def package(opts: PackageOptions) -> PackageResult:
    t0 = time.monotonic()
    require_runtime()  # the site needs the built browser runtime: say so now, not after minutes of compiling
    for q in opts.quantizations:
        get_scheme(q, opts.embeddings)  # fail on a bad name before loading the model
    source = load_source(opts.model)
    quantizations = opts.quantizations or [source.defaults.get("quantization") or default_quantization(source.tensors)]
    out = opts.out or Path("dist") / source.model_id
    check_replaceable(out.absolute())  # before minutes of compiling, not at the end
    try:
        return _build_site(opts, source, quantizations, out, t0)
    except OSError as exc:
        named = exc.filename or exc.filename2
        elsewhere = named is not None and not Path(named).absolute().is_relative_to(out.absolute().parent)
        if elsewhere or isinstance(exc, shutil.Error):
            raise  # not the site's (the cache's, say): the CLI names it
        # The site's folder: its staging copy, or a write that names no file (a full disk).
        raise FileSystemError.from_os_error(exc, out, "choose another folder with --out") from exc


def _build_site(
    opts: PackageOptions, source: ModelSource, quantizations: list[str], out: Path, t0: float
) -> PackageResult:
    """Writes the variants to a staging folder beside ``out``, then assembles the site there."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".webbuild-", dir=out.parent) as tmp:
        variants, summary = [], {}
        for q in quantizations:
            _log.step(f"preparing {source.model_id} as {q}")
            prepared = prepare_model(source, q, opts.context_window_size, opts.prefill_chunk_size, opts.embeddings)
            policy = ", ".join(f"{kind} {layout}" for kind, layout in prepared.scheme.policy.items())
            report = prepared.quant_report.lines() if prepared.quant_report else []
            summary[prepared.variant_id] = [f"{q}: {policy}", *report]
            model_dir = Path(tmp, prepared.variant_id)
            with _log.timed(f"writing weights to tensor-cache shards ({q})"):
                write_model_files(prepared, model_dir)
            library = build_library(prepared.cfg, prepared.scheme, "webgpu", opts.dump_ir)
            variant = Variant(
                id=prepared.variant_id,
                quantization=q,
                needs_shader_f16=prepared.scheme.needs_shader_f16,
                context_window_size=prepared.cfg.context_window_size,
                quantization_policy=prepared.scheme.policy,
            )
            variants.append(SiteVariant(variant, model_dir, library))
            del prepared
        with _log.timed(f"assembling the site in {out}"):
            assemble_site(out, name=source.model_id, variants=variants)
    return PackageResult(site=out, seconds=time.monotonic() - t0, parts=size_by_part(out), quantization=summary)
