"""The HTTP app: a built site's static files and, given an engine, the OpenAI REST API beside them.

Routes are matched in order: the API (``/v1/...``, ``/health``, ``/metrics``, ``/openapi.json``) and any
``routes`` passed in come before the static mount that answers everything else. Every error, from the API or
the static files, leaves in OpenAI's envelope through one handler (``errors.error_response``); the middleware
of security.py (Host check, CORS, security headers) and the server protocol (server.py) use the same envelope.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp

from webbuild.errors import InputError, WebbuildError
from webbuild.serve.errors import error_response
from webbuild.serve.security import EnvelopeCORS, HostCheck, SecurityHeaders
from webbuild.serve.server import Limits, server_config
from webbuild.serve.static import MEDIA_TYPES, SiteFiles

if TYPE_CHECKING:
    from webbuild.serve.loading import EngineLoader
    from webbuild.serve.routes import EngineLike

__all__ = ["MEDIA_TYPES", "SiteFiles", "create_app", "serving"]


def _check_site(site_dir: Path) -> Path:
    site_dir = Path(site_dir)
    if not (site_dir / "index.html").is_file():
        raise InputError(
            f"{site_dir} is not a built site (no index.html).",
            tip="Build one with `webbuild package <model>` and serve its dist/<model> directory.",
        )
    return site_dir


def create_app(
    site_dir: Path | None = None,
    *,
    routes: Sequence[BaseRoute] = (),
    engine: EngineLike | EngineLoader | None = None,
    api_key: str | None = None,
    allow_origins: Sequence[str] = (),
    allowed_hosts: Sequence[str] | None = None,
    cross_origin_isolation: bool = False,
) -> Starlette:
    """The ASGI app serving ``site_dir`` at ``/`` and, with ``engine``, the REST API.

    ``engine`` may be an EngineLoader still loading: the site and ``/health`` answer at once, the API with
    503 until the engine is ready.

    ``api_key`` protects ``/v1`` (the site, ``/health`` and ``/metrics`` stay public). ``allow_origins``
    lists the origins whose pages may call the server (``*`` for any); by default browsers allow only
    same-origin pages. ``allowed_hosts`` lists the host names requests may name in ``Host`` (IP addresses
    always pass; None: any, as for tests; ``webbuild serve`` passes ``security.default_allowed_hosts`` plus
    ``--allowed-hosts``). ``cross_origin_isolation`` adds COOP/COEP to the site's files.
    """
    if site_dir is None and engine is None and not routes:
        raise InputError("Nothing to serve: give a site folder, an engine, or both.")
    all_routes = list(routes)
    if engine is not None:
        from webbuild.serve.routes import Api

        all_routes += Api(engine, api_key=api_key).routes()
    if site_dir is not None:
        site = SiteFiles(_check_site(site_dir), cross_origin_isolation=cross_origin_isolation)
        all_routes.append(Mount("/", app=site, name="site"))
    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts is not None:
        middleware.append(Middleware(HostCheck, allowed=allowed_hosts))
    if allow_origins:
        middleware.append(
            Middleware(
                EnvelopeCORS,
                allow_origins=list(allow_origins),
                allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Range", "OpenAI-Organization", "OpenAI-Project"],
                expose_headers=["Content-Length", "Content-Range", "ETag"],
                max_age=600,
            )
        )
    handlers = {WebbuildError: error_response, HTTPException: error_response, Exception: error_response}
    return Starlette(routes=all_routes, middleware=middleware, exception_handlers=handlers)


@contextlib.contextmanager
def serving(site: Path | ASGIApp, host: str = "127.0.0.1", limits: Limits | None = None) -> Iterator[str]:
    """Serves a site folder (or any ASGI app) from a background thread on a free port while the block runs;
    yields its URL. For tests and benchmarks: ``webbuild serve`` runs uvicorn in the foreground."""
    app = create_app(site) if isinstance(site, Path) else site
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(app, host, port, limits=limits or Limits()))
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
