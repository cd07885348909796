"""Where downloads and heavy build products are cached: outside the repo, keyed by their inputs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from webbuild.errors import FileSystemError

CACHE_FIX = "set WEBBUILD_CACHE to a folder on a writable disk with free space"


def cache_root() -> Path:
    """``$WEBBUILD_CACHE`` or ``$XDG_CACHE_HOME/webbuild`` (default ``~/.cache/webbuild``); not created."""
    base = os.environ.get("WEBBUILD_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "webbuild")
    return Path(base)


def cache_dir(*parts: str) -> Path:
    """The cache root joined with parts, created; a FileSystemError names it when it cannot be."""
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileSystemError.from_os_error(exc, cache_root(), CACHE_FIX) from exc
    return path


def filesystem_error(exc: OSError) -> FileSystemError:
    """An OSError that escaped the command that caused it, for the user: a path under the cache gets the cache's
    fix (WEBBUILD_CACHE), any other the generic one."""
    error = FileSystemError.from_os_error(exc)
    root = cache_root().absolute()
    if error.path is not None and Path(error.path).absolute().is_relative_to(root):
        return FileSystemError.from_os_error(exc, root, CACHE_FIX)
    return error


def digest(*items: bytes | str) -> str:
    """A short stable key for cache entries."""
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode() if isinstance(item, str) else item)
        h.update(b"\0")
    return h.hexdigest()[:16]
