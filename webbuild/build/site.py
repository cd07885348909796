"""Assemble the static chat site: page, browser runtime, model files and libraries, and manifest.json.

The site is built in a temporary directory beside ``out_dir`` and renamed into place at the end, so a
failure leaves no partial site and an existing site is replaced only when the new one is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from webbuild import _log
from webbuild.errors import CorruptFileError, InputError, ToolchainError

REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_DIR = REPO_ROOT / "web_runtime"
TEMPLATE_DIR = REPO_ROOT / "site_template"

# Files the browser runtime needs from each model directory (tensor-cache.json names the shards).
MODEL_FILES = ("tensor-cache.json", "mlc-chat-config.json", "tokenizer.json", "tokenizer_config.json")

# runtime/vendor/<name> <- web_runtime/node_modules/<package>/<file>: ES modules (or, for tvmjs, a UMD
# bundle that defines globalThis.tvmjs) with no bare imports, so the browser loads them without a bundler.
# web_runtime/vendor.js imports exactly these names.
VENDOR_FILES: dict[str, tuple[str, str]] = {
    "tokenizers.mjs": ("@huggingface/tokenizers", "dist/tokenizers.mjs"),
    "jinja.js": ("@huggingface/jinja", "dist/index.js"),
    "tvmjs.js": ("@mlc-ai/web-runtime", "lib/index.js"),
}
# Licences travel with the code we redistribute (tvmjs's bundle inlines tslib helpers).
VENDOR_LICENSES: dict[str, tuple[str, str]] = {
    "LICENSE.tokenizers.txt": ("@huggingface/tokenizers", "LICENSE"),
    "LICENSE.jinja.txt": ("@huggingface/jinja", "LICENSE"),
    "LICENSE.tvmjs.txt": ("@mlc-ai/web-runtime", "LICENSE"),
    "NOTICE.tvmjs.txt": ("@mlc-ai/web-runtime", "NOTICE"),
    "LICENSE.tslib.txt": ("tslib", "LICENSE.txt"),
}

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SiteModel:
    """One built model variant to put on the site.

    ``model_dir`` holds tensor-cache.json, its params_shard_*.bin, mlc-chat-config.json, tokenizer.json and
    tokenizer_config.json; ``library`` is the WebGPU model library (.wasm) for the same build.
    """

    id: str  # "<model_id>-<quantization>", e.g. "smollm2-135m-instruct-q4f32_1"
    quantization: str
    model_dir: Path
    library: Path
    needs_shader_f16: bool
    context_window_size: int


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
    models: Sequence[SiteModel],
    default_model: str | None = None,
    title: str | None = None,
    runtime_dir: Path = RUNTIME_DIR,
    template_dir: Path = TEMPLATE_DIR,
) -> Path:
    """Write the site for ``models`` to ``out_dir`` (replacing a previous site there) and return its path.

    Layout: index.html, assets/, runtime/ (+ runtime/vendor/), models/<id>/, libs/<id>-webgpu.wasm and
    manifest.json listing every model file with its size and sha256.
    """
    out_dir = Path(out_dir).absolute()
    default_model = _check_models(models, default_model)
    _check_replaceable(out_dir)
    _log.step(f"Assembling site {out_dir}")

    model_entries = {m.id: _model_entries(m) for m in models}
    page = _render_page(template_dir, name=name, title=title or name, models=models, default_model=default_model)
    site_entries = [
        _Entry("index.html", data=page.encode()),
        *_asset_entries(template_dir),
        *_runtime_entries(runtime_dir),
    ]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        total = sum(e.src.stat().st_size for es in model_entries.values() for e in es if e.src is not None)
        with _log.bar(total, "copy model files", unit="B", unit_scale=True) as bar:
            site_files = [_write(tmp, e) for e in site_entries]
            model_files = {mid: [_write(tmp, e, bar.update) for e in es] for mid, es in model_entries.items()}
        manifest = _manifest(name, models, default_model, model_files, site_files)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log.detail(f"{len(models)} model(s), {total / 2**20:.1f} MiB of model files")
    return out_dir


def vendor_sources(runtime_dir: Path = RUNTIME_DIR) -> dict[str, Path]:
    """runtime/vendor/ file name -> source path in node_modules (licences included)."""
    modules = runtime_dir / "node_modules"
    return {name: modules / pkg / rel for name, (pkg, rel) in {**VENDOR_FILES, **VENDOR_LICENSES}.items()}


# ---- inputs ---------------------------------------------------------------------------------------------


def _check_models(models: Sequence[SiteModel], default_model: str | None) -> str:
    if not models:
        raise InputError("No model variants to put on the site.")
    ids = [m.id for m in models]
    for m in models:
        if not _ID_RE.match(m.id):
            raise InputError(f"Model id {m.id!r} is not usable in a URL.", tip="Use letters, digits, '.', '_', '-'.")
        if m.context_window_size <= 0:
            raise InputError(f"Model {m.id}: context_window_size must be positive, got {m.context_window_size}.")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"Model ids must be unique; repeated: {', '.join(dupes)}.")
    default = default_model or ids[0]
    if default not in ids:
        raise InputError(f"default_model {default!r} is not among the models: {', '.join(ids)}.")
    return default


def _model_entries(m: SiteModel) -> list[_Entry]:
    """The files of one variant, checked against its tensor-cache.json before anything is written."""
    model_dir = Path(m.model_dir)
    for fname in MODEL_FILES:
        if not (model_dir / fname).is_file():
            raise InputError(f"Model {m.id}: {model_dir / fname} is missing.", tip="Re-run the weight conversion.")
    if not Path(m.library).is_file():
        raise InputError(f"Model {m.id}: model library {m.library} is missing.", tip="Re-run the compile/link step.")
    index_path = model_dir / "tensor-cache.json"
    try:
        index = json.loads(index_path.read_text())
        shards = [(rec["dataPath"], int(rec["nbytes"])) for rec in index["records"]]
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"{index_path} is not a valid tensor cache index: {err}") from err
    entries = [_Entry(f"models/{m.id}/{f}", src=model_dir / f) for f in MODEL_FILES]
    for data_path, nbytes in shards:
        shard = model_dir / data_path
        if Path(data_path).is_absolute() or ".." in Path(data_path).parts:
            raise CorruptFileError(f"{index_path} names a shard outside its directory: {data_path!r}.")
        if not shard.is_file():
            raise CorruptFileError(f"Model {m.id}: shard {shard} listed in tensor-cache.json is missing.")
        if shard.stat().st_size != nbytes:
            raise CorruptFileError(
                f"Model {m.id}: shard {shard} has {shard.stat().st_size} bytes; tensor-cache.json says {nbytes}.",
                tip="The weights were written incompletely; re-run the weight conversion.",
            )
        entries.append(_Entry(f"models/{m.id}/{data_path}", src=shard))
    entries.append(_Entry(f"libs/{m.id}-webgpu.wasm", src=Path(m.library)))
    return entries


def _runtime_entries(runtime_dir: Path) -> list[_Entry]:
    scripts = sorted(p for p in runtime_dir.glob("*.js") if p.is_file())
    if not scripts:
        raise ToolchainError(f"No browser runtime found in {runtime_dir}.")
    entries = [_Entry(f"runtime/{p.name}", src=p) for p in scripts]
    for name, src in vendor_sources(runtime_dir).items():
        if not src.is_file():
            raise ToolchainError(
                f"Vendored browser dependency {src} is missing.",
                tip="Run scripts/setup.sh (or `npm ci` in web_runtime/).",
            )
        entries.append(_Entry(f"runtime/vendor/{name}", src=src))
    return entries


def _asset_entries(template_dir: Path) -> list[_Entry]:
    assets = template_dir / "assets"
    if not assets.is_dir():
        return []
    return [
        _Entry(f"assets/{p.relative_to(assets).as_posix()}", src=p) for p in sorted(assets.rglob("*")) if p.is_file()
    ]


def _render_page(template_dir: Path, *, name: str, title: str, models: Sequence[SiteModel], default_model: str) -> str:
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
    variants = [{"id": m.id, "quantization": m.quantization, "needs_shader_f16": m.needs_shader_f16} for m in models]
    return template.render(name=name, title=title, models=variants, default_model=default_model)


def _check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a directory that is not a site we wrote (it may be the user's files)."""
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file())
    ):
        raise InputError(
            f"{out_dir} exists and is not a webbuild site (no manifest.json); not replacing it.",
            tip="Choose another output directory or remove this one.",
        )


# ---- output ---------------------------------------------------------------------------------------------


def _write(root: Path, entry: _Entry, progress: Any = None) -> dict[str, Any]:
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
    return {"path": entry.dest, "bytes": size, "sha256": digest.hexdigest()}


def _manifest(
    name: str,
    models: Sequence[SiteModel],
    default_model: str,
    model_files: dict[str, list[dict[str, Any]]],
    site_files: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "default_model": default_model,
        "models": [
            {
                "id": m.id,
                "quantization": m.quantization,
                "model_url": f"models/{m.id}/",
                "model_lib": f"libs/{m.id}-webgpu.wasm",
                "needs_shader_f16": m.needs_shader_f16,
                "context_window_size": m.context_window_size,
                "files": model_files[m.id],
            }
            for m in models
        ],
        "files": site_files,
    }


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
