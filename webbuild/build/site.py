"""Assemble the static chat site: page, browser runtime, model files and libraries, and manifest.json.

The site is built in a temporary directory beside ``out_dir`` and renamed into place at the end, so a
failure leaves no partial site and an existing site is replaced only when the new one is complete.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from webbuild import _log
from webbuild.build.resources import RUNTIME_DIR, TEMPLATE_DIR, require_runtime
from webbuild.errors import InputError, ToolchainError
from webbuild.site_format import MANIFEST_JSON, MODEL_FILES, FileRecord, Manifest, Variant, write_manifest
from webbuild.site_format.tensor_cache import shard_files

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SiteVariant:
    """One built variant to put on the site: its manifest entry (``files`` are filled in when written) and
    where its files are now. ``model_dir`` holds tensor-cache.json, its params_shard_*.bin,
    mlc-chat-config.json, tokenizer.json and tokenizer_config.json; ``library`` is its WebGPU model library."""

    variant: Variant
    model_dir: Path
    library: Path

    @property
    def id(self) -> str:
        return self.variant.id


@dataclass(frozen=True)
class _Entry:
    """One file of the site: where it comes from (a path, or bytes to write) and where it goes."""

    dest: str  # path relative to the site root, with "/"
    src: Path | None = None
    data: bytes | None = None


def assemble_site(
    out_dir: Path,
    *,
    name: str,
    variants: Sequence[SiteVariant],
    default_variant: str | None = None,
    title: str | None = None,
    runtime_dir: Path = RUNTIME_DIR,
    template_dir: Path = TEMPLATE_DIR,
) -> Path:
    """Write the site for ``variants`` to ``out_dir`` (replacing a previous site there) and return its path.

    Layout: index.html, assets/, runtime/ (+ runtime/vendor/), models/<id>/, libs/<id>-webgpu.wasm and
    manifest.json listing every model file with its size and sha256.
    """
    out_dir = Path(out_dir).absolute()
    default_variant = _check_variants(variants, default_variant)
    check_replaceable(out_dir)
    _log.step(f"Assembling site {out_dir}")

    model_entries = {v.id: _model_entries(v) for v in variants}
    page = _render_page(
        template_dir, name=name, title=title or name, variants=variants, default_variant=default_variant
    )
    site_entries = [
        _Entry("index.html", data=page.encode()),
        *_folder_entries(template_dir / "assets", "assets"),
        *_folder_entries(require_runtime(runtime_dir), "runtime"),
    ]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        total = sum(e.src.stat().st_size for es in model_entries.values() for e in es if e.src is not None)
        with _log.bar(total, "copy model files", unit="B", unit_scale=True) as bar:
            site_files = [_write(tmp, e) for e in site_entries]
            model_files = {mid: [_write(tmp, e, bar.update) for e in es] for mid, es in model_entries.items()}
        manifest = Manifest(
            name=name,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            default_variant=default_variant,
            variants=[replace(v.variant, files=model_files[v.id]) for v in variants],
            files=site_files,
        )
        write_manifest(tmp, manifest)
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log.detail(f"{len(variants)} variant(s), {total / 2**20:.1f} MiB of model files")
    return out_dir


# ---- inputs ---------------------------------------------------------------------------------------------


def _check_variants(variants: Sequence[SiteVariant], default_variant: str | None) -> str:
    if not variants:
        raise InputError("No model variants to put on the site.")
    ids = [v.id for v in variants]
    for v in variants:
        if not _ID_RE.match(v.id):
            raise InputError(f"Variant id {v.id!r} is not usable in a URL.", tip="Use letters, digits, '.', '_', '-'.")
        if v.variant.context_window_size <= 0:
            raise InputError(
                f"Variant {v.id}: context_window_size must be positive, got {v.variant.context_window_size}."
            )
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"Variant ids must be unique; repeated: {', '.join(dupes)}.")
    default = default_variant or ids[0]
    if default not in ids:
        raise InputError(f"default_variant {default!r} is not among the variants: {', '.join(ids)}.")
    return default


def _model_entries(v: SiteVariant) -> list[_Entry]:
    """The files of one variant, checked against its tensor-cache.json before anything is written."""
    model_dir = Path(v.model_dir)
    for fname in MODEL_FILES:
        if not (model_dir / fname).is_file():
            raise InputError(f"Variant {v.id}: {model_dir / fname} is missing.", tip="Re-run the weight conversion.")
    if not Path(v.library).is_file():
        raise InputError(f"Variant {v.id}: model library {v.library} is missing.", tip="Re-run the compile/link step.")
    files = [model_dir / f for f in MODEL_FILES] + shard_files(model_dir)
    entries = [_Entry(f"{v.variant.model_url}{f.relative_to(model_dir).as_posix()}", src=f) for f in files]
    entries.append(_Entry(v.variant.model_lib, src=Path(v.library)))
    return entries


def _folder_entries(folder: Path, dest: str) -> list[_Entry]:
    """Every file under ``folder``, copied as it is to ``dest/`` (the template's assets, the built runtime)."""
    return [
        _Entry(f"{dest}/{p.relative_to(folder).as_posix()}", src=p) for p in sorted(folder.rglob("*")) if p.is_file()
    ]


def _render_page(
    template_dir: Path, *, name: str, title: str, variants: Sequence[SiteVariant], default_variant: str
) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(template_dir),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    try:
        template = env.get_template("index.html.j2")
    except jinja2.TemplateNotFound as err:
        raise ToolchainError(f"Site template {template_dir / 'index.html.j2'} is missing.") from err
    listed = [asdict(v.variant) for v in variants]
    return template.render(name=name, title=title, variants=listed, default_variant=default_variant)


def check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a directory that is not a site we wrote (it may be the user's files)."""
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / MANIFEST_JSON).is_file())
    ):
        raise InputError(
            f"{out_dir} exists and is not a webbuild site (no manifest.json); not replacing it.",
            tip="Choose another output directory or remove this one.",
        )


# ---- output ---------------------------------------------------------------------------------------------


def _write(root: Path, entry: _Entry, progress: Any = None) -> FileRecord:
    """Writes one file under ``root``, hashing it on the way; returns its manifest record."""
    dest = root / entry.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        if entry.data is not None:
            out.write(entry.data)
            digest.update(entry.data)
            size = len(entry.data)
        else:
            assert entry.src is not None
            with open(entry.src, "rb") as src:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(len(chunk))
    return FileRecord(entry.dest, size, digest.hexdigest())


def _replace(tmp: Path, out_dir: Path) -> None:
    """Moves the finished site into place; the previous site is removed only after the swap."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    old.rmdir()
    os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
