"""Where downloads and heavy build products are cached: outside the repo, keyed by their inputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$WEBBUILD_CACHE`` or ``$XDG_CACHE_HOME/webbuild`` (default ``~/.cache/webbuild``), joined with parts."""
    base = os.environ.get("WEBBUILD_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "webbuild")
    path = Path(base, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def digest(*items: bytes | str) -> str:
    """A short stable key for cache entries."""
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode() if isinstance(item, str) else item)
        h.update(b"\0")
    return h.hexdigest()[:16]
