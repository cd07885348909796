"""``webbuild serve``: the static site over HTTP with uvicorn."""

from __future__ import annotations

from pathlib import Path

import uvicorn

from .. import _log
from ..errors import InputError
from ..server import create_app


def serve(site: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    if not (site / "index.html").is_file():
        raise InputError(
            f"{site} is not a built site (no index.html)", tip="build one first: webbuild package smollm2-135m-instruct"
        )
    _log.step(f"serving {site} on http://{host}:{port}/  (Ctrl-C to stop)")
    uvicorn.run(create_app(site), host=host, port=port, log_level="warning")
