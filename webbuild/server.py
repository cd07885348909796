"""Serve a built site: static files with the MIME types browsers insist on, and room for the /v1 REST API.

Routes are matched in order, so API routes passed to ``create_app`` (``/v1/...``) come before the static
mount that answers everything else.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

from webbuild.errors import InputError

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


class SiteFiles(StaticFiles):
    """StaticFiles (path-traversal guard, ETag/304, index.html for directories) with fixed MIME types.

    Every response says ``Cache-Control: no-cache``: browsers may keep files but revalidate them (cheap,
    with ETags), so a rebuilt site is never mixed with stale runtime or model files.
    """

    def file_response(
        self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = MEDIA_TYPES.get(Path(full_path).suffix.lower())
        if media_type and "content-type" in response.headers:
            response.headers["content-type"] = media_type
        response.headers["cache-control"] = "no-cache"
        return response


def create_app(site_dir: Path, *, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The ASGI app serving ``site_dir`` at ``/``; ``routes`` (e.g. the ``/v1`` API) take precedence."""
    site_dir = Path(site_dir)
    if not (site_dir / "index.html").is_file():
        raise InputError(
            f"{site_dir} is not a built site (no index.html).",
            tip="Build one with `webbuild package <model>` and serve its dist/<model> directory.",
        )
    return Starlette(routes=[*routes, Mount("/", app=SiteFiles(directory=site_dir, html=True), name="site")])


@contextlib.contextmanager
def serving(site: Path | ASGIApp, host: str = "127.0.0.1") -> Iterator[str]:
    """Serves a site folder (or any ASGI app) from a background thread on a free port while the block runs;
    yields its URL. For tests and benchmarks: ``webbuild serve`` runs uvicorn in the foreground."""
    app = create_app(site) if isinstance(site, Path) else site
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the server for {site} did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
