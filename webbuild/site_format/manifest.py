"""``manifest.json``: what a site holds, written by ``webbuild package`` and read by everything else.

A site holds one model in one or more *variants*: builds of the same weights in different quantizations, each
with its own model folder (``models/<variant id>/``) and WebGPU library (``libs/<variant id>-webgpu.wasm``).
The OpenAI ``model`` field names a variant by its id. web_runtime/config.js reads the same document.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from webbuild.errors import CorruptFileError, InputError

MANIFEST_JSON = "manifest.json"
INDEX_HTML = "index.html"
# Bumped when a reader of the previous format would misread this one.
FORMAT_VERSION = 2

# The files of a variant's model folder besides its weight shards (tensor-cache.json names those).
TENSOR_CACHE_JSON = "tensor-cache.json"
CHAT_CONFIG_JSON = "mlc-chat-config.json"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG_JSON = "tokenizer_config.json"
MODEL_FILES = (TENSOR_CACHE_JSON, CHAT_CONFIG_JSON, TOKENIZER_JSON, TOKENIZER_CONFIG_JSON)

_REBUILD = "Rebuild the site with `webbuild package`."


@dataclass(frozen=True)
class FileRecord:
    """One file of the site, relative to its root, with its size and sha256 (the browser checks both)."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Variant:
    """One build of the site's model: a quantization with its model folder and WebGPU library."""

    id: str  # "<model>-<quantization>", e.g. "smollm2-135m-instruct-q4f32_1"
    quantization: str
    needs_shader_f16: bool
    context_window_size: int
    files: list[FileRecord] = field(default_factory=list)
    # Layout per kind of weight ({"linear": "q4m", "embedding": "q8", "head": "q8"}, docs/quantization.md);
    # empty in manifests written before it was recorded.
    quantization_policy: dict[str, str] = field(default_factory=dict)

    @property
    def model_url(self) -> str:
        return f"models/{self.id}/"

    @property
    def model_lib(self) -> str:
        return f"libs/{self.id}-webgpu.wasm"


@dataclass(frozen=True)
class Manifest:
    name: str  # the model as the user named it to `webbuild package` (a preset name, or a path)
    created: str
    default_variant: str
    variants: list[Variant]
    files: list[FileRecord]  # page, assets and runtime

    def variant(self, quantization: str | None = None) -> Variant:
        """The variant of ``quantization``, else the default one."""
        if quantization is None:
            return next(v for v in self.variants if v.id == self.default_variant)
        for v in self.variants:
            if v.quantization == quantization:
                return v
        have = ", ".join(v.quantization for v in self.variants)
        raise InputError(f"{self.name}: the site has no {quantization} variant; it has {have}.", param="quantization")

    def portable_variant(self) -> Variant:
        """The default variant if it runs without ``shader-f16`` (missing on many adapters), else the first
        variant that does."""
        default = self.variant()
        if not default.needs_shader_f16:
            return default
        return next((v for v in self.variants if not v.needs_shader_f16), default)

    def all_files(self) -> Iterator[FileRecord]:
        yield from self.files
        for v in self.variants:
            yield from v.files

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "created": self.created,
            "default_variant": self.default_variant,
            "variants": [
                {**asdict(v), "model_url": v.model_url, "model_lib": v.model_lib, "files": [asdict(f) for f in v.files]}
                for v in self.variants
            ],
            "files": [asdict(f) for f in self.files],
        }

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        """Parses a manifest document; anything missing or mistyped is a CorruptFileError naming it."""
        if not isinstance(doc, dict):
            raise CorruptFileError(f"{MANIFEST_JSON} is not a JSON object.", tip=_REBUILD)
        version = doc.get("format_version")
        if version != FORMAT_VERSION:
            raise CorruptFileError(
                f"{MANIFEST_JSON} has format version {version!r}; this webbuild reads version {FORMAT_VERSION}.",
                tip=_REBUILD,
            )
        try:
            variants = [
                Variant(
                    id=str(v["id"]),
                    quantization=str(v["quantization"]),
                    needs_shader_f16=bool(v["needs_shader_f16"]),
                    context_window_size=int(v["context_window_size"]),
                    files=_records(v["files"]),
                    quantization_policy={str(k): str(x) for k, x in (v.get("quantization_policy") or {}).items()},
                )
                for v in doc["variants"]
            ]
            manifest = cls(
                name=str(doc["name"]),
                created=str(doc["created"]),
                default_variant=str(doc["default_variant"]),
                variants=variants,
                files=_records(doc["files"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptFileError(f"{MANIFEST_JSON} is malformed: {err!r}.", tip=_REBUILD) from err
        if not variants or manifest.default_variant not in {v.id for v in variants}:
            raise CorruptFileError(f"{MANIFEST_JSON}: default_variant names no listed variant.", tip=_REBUILD)
        return manifest


def _records(items: Any) -> list[FileRecord]:
    return [FileRecord(path=str(r["path"]), bytes=int(r["bytes"]), sha256=str(r["sha256"]).lower()) for r in items]


def is_site(path: str | Path) -> bool:
    """A folder ``webbuild package`` wrote: a page and a manifest (the manifest's content is not checked)."""
    path = Path(path)
    return (path / INDEX_HTML).is_file() and (path / MANIFEST_JSON).is_file()


def read_manifest(site: str | Path) -> Manifest:
    """The manifest of a site folder; InputError if the folder is not a site, CorruptFileError if unreadable."""
    site = Path(site)
    path = site / MANIFEST_JSON
    if not path.is_file():
        raise InputError(f"{site} is not a built site (no {MANIFEST_JSON}).", tip="Build one with `webbuild package`.")
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:
        raise CorruptFileError(f"{path} is not readable JSON: {err}.", tip=_REBUILD) from err
    return Manifest.from_json(doc)


def write_manifest(site: str | Path, manifest: Manifest) -> Path:
    path = Path(site) / MANIFEST_JSON
    path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return path
