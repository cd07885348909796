"""The static site's files over HTTP: MIME types, caching policy, gzip, byte ranges, cross-origin isolation.

Starlette's StaticFiles already refuses paths outside the folder and answers ``Range`` (206/416); this adds
what a model site needs on top:

- fixed MIME types (module workers and ``WebAssembly.instantiateStreaming`` refuse anything else);
- ``Cache-Control``: ``immutable`` for a year only when the URL itself names the content (see ``HashIndex``),
  ``no-cache`` (revalidate with the ETag) for everything else, so a rebuilt site never mixes with stale files;
- ETags from the manifest's sha256 where the file still has it: equal on every replica and after a copy;
- gzip for text and wasm (weight shards hardly compress and are fetched with ranges, so they are left alone);
- a Content-Security-Policy fitted to the page (security.SITE_CSP);
- optional COOP/COEP headers, which the page needs for ``SharedArrayBuffer`` (threaded wasm);
- dot-files (``.git``, ``.env``) are never served.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Receive, Scope, Send

from webbuild.errors import WebbuildError
from webbuild.serve.security import SITE_CSP
from webbuild.site_format import MANIFEST_JSON, read_manifest

# Set explicitly rather than trusting the platform's mimetypes table: module workers refuse scripts that
# are not JavaScript, and WebAssembly.instantiateStreaming refuses wasm that is not application/wasm.
MEDIA_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".bin": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# Text compresses 3-5x and a TVM wasm module about 3x; quantized weights barely shrink and are large.
COMPRESSIBLE = frozenset({".html", ".js", ".mjs", ".css", ".json", ".txt", ".svg", ".wasm"})
MIN_GZIP_BYTES = 1024
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CROSS_ORIGIN_ISOLATION = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}
# A URL names its content when it carries at least this many hex digits of the file's sha256.
_MIN_HASH_DIGITS = 8
_HEX_RUN = re.compile(r"[0-9a-f]{8,64}")
_CHUNK = 1 << 20


class HashIndex:
    """The sha256 of every file manifest.json lists, checked against the bytes on disk once per file version.

    A URL may be cached for a year only if it changes whenever the content does: a file whose *name* holds a
    prefix of its sha256 (``params_shard_0.3f2a9c1e.bin``), or a request whose query says which content it
    wants (``params_shard_0.bin?v=3f2a9c1e``) and gets exactly that. Plain names like ``params_shard_0.bin``
    are rewritten in place by the next build, so they only revalidate. A file edited after the build no longer
    hashes to its manifest entry and is treated like any unlisted file.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._manifest_key: tuple[int, int] | None = None
        self._listed: dict[str, tuple[str, int]] = {}  # path -> (sha256, bytes)
        self._verified: dict[tuple[str, int, int, int], bool] = {}  # (path, inode, size, mtime) -> hash matches

    def _listing(self) -> dict[str, tuple[str, int]]:
        """The manifest's entries, re-read when manifest.json changes (a rebuild replaces the folder)."""
        manifest = self.root / MANIFEST_JSON
        try:
            st = os.stat(manifest)
        except OSError:
            return {}
        key = (st.st_ino, st.st_mtime_ns)
        with self._lock:
            if key == self._manifest_key:
                return self._listed
        try:
            listed = {f.path: (f.sha256, f.bytes) for f in read_manifest(self.root).all_files()}
        except WebbuildError:
            listed = {}  # an unreadable manifest makes nothing immutable; serving goes on
        with self._lock:
            self._manifest_key, self._listed, self._verified = key, listed, {}
        return listed

    def sha256(self, rel_path: str, full_path: str, st: os.stat_result) -> str | None:
        """The manifest's sha256 of ``rel_path`` if the file still has it (hashes the file once; blocking)."""
        listed = self._listing().get(rel_path)
        if listed is None or listed[1] != st.st_size:
            return None
        key = (rel_path, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            ok = self._verified.get(key)
        if ok is None:
            digest = hashlib.sha256()
            with open(full_path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
            ok = digest.hexdigest() == listed[0]
            with self._lock:
                self._verified[key] = ok
        return listed[0] if ok else None

    @staticmethod
    def url_names(sha: str, rel_path: str, query: Mapping[str, str]) -> bool:
        """Whether the URL (file name or ``?v=``/``?sha256=``) carries a prefix of ``sha``."""
        wanted = query.get("v") or query.get("sha256")
        if wanted is not None:
            return len(wanted) >= _MIN_HASH_DIGITS and sha.startswith(wanted.lower())
        name = rel_path.rsplit("/", 1)[-1].lower()
        return any(sha.startswith(run) for run in _HEX_RUN.findall(name))


class GzipCache:
    """Compressed copies of recently served files, keyed by path, size and mtime; bounded in total bytes."""

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, path: str, st: os.stat_result) -> bytes:
        key = (path, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with open(path, "rb") as f:
            data = gzip.compress(f.read(), compresslevel=6, mtime=0)
        with self._lock:
            if key not in self._items and len(data) <= self.max_bytes:
                self._items[key] = data
                self._size += len(data)
                while self._size > self.max_bytes:
                    _, dropped = self._items.popitem(last=False)
                    self._size -= len(dropped)
        return data


def _accepts_gzip(headers: Headers) -> bool:
    for item in headers.get("accept-encoding", "").lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding in ("gzip", "*"):
            q = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


class SiteFileResponse(FileResponse):
    """One site file; decides its validators and caching (hashing the file off the event loop the first time),
    then answers 304, gzip, a range or the whole file."""

    def __init__(self, site: SiteFiles, full_path: str, st: os.stat_result, status_code: int) -> None:
        super().__init__(full_path, status_code=status_code, stat_result=st)
        self.site, self.full_path, self.st = site, full_path, st
        suffix = Path(full_path).suffix.lower()
        if suffix in MEDIA_TYPES:
            self.headers["content-type"] = MEDIA_TYPES[suffix]
        self.headers.update(site.extra_headers)
        self.headers["cache-control"] = REVALIDATE
        self.compressible = suffix in COMPRESSIBLE and st.st_size >= MIN_GZIP_BYTES
        if self.compressible:
            self.headers["vary"] = "Accept-Encoding"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rel = self.site.relative(self.full_path)
        if rel is not None and self.status_code == 200:
            sha = await anyio.to_thread.run_sync(self.site.hashes.sha256, rel, self.full_path, self.st)
            if sha is not None:
                # Same bytes, same ETag: on every replica and after a copy, unlike one made from the mtime.
                self.headers["etag"] = f'"{sha[:32]}"'
                if HashIndex.url_names(sha, rel, QueryParams(scope.get("query_string", b""))):
                    self.headers["cache-control"] = IMMUTABLE
        request = Headers(scope=scope)
        if self.site.is_not_modified(self.headers, request):
            return await NotModifiedResponse(self.headers)(scope, receive, send)
        if "range" in request and self.status_code == 200:
            self._check_range(request, scope["method"])
        if self.compressible and self.status_code == 200 and "range" not in request and _accepts_gzip(request):
            return await GzipFileResponse(self.full_path, self.st, self.headers, self.site.gzip)(scope, receive, send)
        await super().__call__(scope, receive, send)

    def _check_range(self, request: Headers, method: str) -> None:
        """A Range FileResponse would refuse in plain text, refused here in the envelope (400 or 416)."""
        if_range = request.get("if-range")
        if method not in ("GET", "HEAD") or (if_range is not None and not self._should_use_range(if_range)):
            return  # the whole file is sent
        try:
            self._parse_range_header(request["range"], self.st.st_size)
        except MalformedRangeHeader as exc:
            raise HTTPException(400, f"Bad Range header {request['range']!r}: {exc.content}") from None
        except RangeNotSatisfiable:
            raise HTTPException(
                416,
                f"Range {request['range']!r} starts past the end of the file ({self.st.st_size} bytes).",
                headers={"Content-Range": f"bytes */{self.st.st_size}"},
            ) from None


class GzipFileResponse(Response):
    """A file sent gzip-compressed (compressed off the event loop, then cached)."""

    def __init__(self, path: str, st: os.stat_result, headers: Mapping[str, str], cache: GzipCache) -> None:
        self.path, self.st, self.cache = path, st, cache
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self.headers["content-encoding"] = "gzip"
        # The compressed bytes differ from the file's: a weak validator, so If-Range never mixes the two.
        etag = self.headers.get("etag", "")
        if etag and not etag.startswith("W/"):
            self.headers["etag"] = "W/" + etag
        self.headers["accept-ranges"] = "none"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await anyio.to_thread.run_sync(self.cache.get, self.path, self.st)
        self.headers["content-length"] = str(len(body))
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        head = scope["method"] == "HEAD"
        await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


class SiteFiles(StaticFiles):
    """StaticFiles for a built site: MIME types, cache policy, gzip, COOP/COEP; dot-files are never served."""

    def __init__(self, directory: Path, *, cross_origin_isolation: bool = False, **kwargs: Any) -> None:
        super().__init__(directory=directory, html=True, **kwargs)
        self.root = Path(directory).resolve()
        self.hashes = HashIndex(self.root)
        self.gzip = GzipCache()
        self.extra_headers = {"Content-Security-Policy": SITE_CSP}
        if cross_origin_isolation:
            self.extra_headers |= CROSS_ORIGIN_ISOLATION

    def get_path(self, scope: Scope) -> str:
        path = super().get_path(scope)
        # .git, .env and the like are never part of a site; refusing them costs nothing.
        if any(part.startswith(".") and part not in (".", "..") for part in Path(path).parts):
            raise HTTPException(status_code=404)
        return path

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        return SiteFileResponse(self, str(full_path), stat_result, status_code)

    def relative(self, full_path: str) -> str | None:
        """The path as the manifest names it, or None for a file outside the resolved root."""
        try:
            return Path(full_path).relative_to(self.root).as_posix()
        except ValueError:
            return None
