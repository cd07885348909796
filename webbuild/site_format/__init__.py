"""The one owner of a site's on-disk format: ``manifest.json`` and its variants (manifest), and a variant's
weights, ``tensor-cache.json`` + ``params_shard_*.bin`` (tensor_cache). Everything that writes or reads a
site goes through these two modules; web_runtime/config.js is their counterpart in the browser."""

from webbuild.site_format.manifest import (
    CHAT_CONFIG_JSON,
    MANIFEST_JSON,
    MODEL_FILES,
    TENSOR_CACHE_JSON,
    TOKENIZER_CONFIG_JSON,
    TOKENIZER_JSON,
    FileRecord,
    Manifest,
    Variant,
    is_site,
    read_manifest,
    write_manifest,
)

__all__ = [
    "CHAT_CONFIG_JSON",
    "MANIFEST_JSON",
    "MODEL_FILES",
    "TENSOR_CACHE_JSON",
    "TOKENIZER_CONFIG_JSON",
    "TOKENIZER_JSON",
    "FileRecord",
    "Manifest",
    "Variant",
    "is_site",
    "read_manifest",
    "write_manifest",
]
