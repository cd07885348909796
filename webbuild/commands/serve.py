"""``webbuild serve``: a built site and/or the OpenAI REST API on the Python engine, with uvicorn."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from webbuild import _log
from webbuild.errors import InputError
from webbuild.serve.app import create_app
from webbuild.serve.loading import EngineLoader, load_engine
from webbuild.serve.security import default_allowed_hosts
from webbuild.serve.server import server_config
from webbuild.site_format import is_site


@dataclass
class ServeOptions:
    """``model``: a folder ``webbuild package`` wrote (site + API), or a model spec (preset, .gguf, HF dir: API
    only). ``api=False`` serves a site's files without loading the engine."""

    model: str
    device: str = "cpu"
    mode: str = "local"  # engine limits (webbuild.engine.engine.MODES)
    prefix_cache: bool = True  # keep finished requests' KV for prompts that extend them
    host: str = "127.0.0.1"
    port: int = 8000
    api: bool = True
    api_key: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    allowed_hosts: list[str] = field(default_factory=list)  # beside security.default_allowed_hosts(host)
    cross_origin_isolation: bool = False
    quantization: str | None = None
    log_level: str = "warning"


def serve(opts: ServeOptions) -> None:
    """Builds the app and runs uvicorn in the foreground until Ctrl-C; the engine loads in the background
    meanwhile, so the site is served at once."""
    path = Path(opts.model)
    site = path if is_site(path) else None
    if site is None and not opts.api:
        raise InputError(
            f"{opts.model} is not a built site (no index.html and manifest.json), so without the API there is "
            "nothing to serve.",
            tip="Build one with `webbuild package <model>`, or drop --no-api to serve a model spec's API.",
        )
    if site is None and path.is_dir() and not (path / "config.json").is_file():
        raise InputError(
            f"{path} is neither a built site (index.html and manifest.json) nor a Hugging Face model directory "
            "(config.json).",
            tip="Build a site with `webbuild package <model>`, or give a preset name, a .gguf file or a model "
            "directory to serve its API.",
        )
    loader = None
    if opts.api:
        model = str(path) if site else opts.model
        load = functools.partial(
            load_engine,
            model,
            device=opts.device,
            quantization=opts.quantization,
            mode=opts.mode,
            prefix_cache=opts.prefix_cache,
        )
        loader = EngineLoader(load, f"the {opts.device} engine for {model}")
    app = create_app(
        site,
        engine=loader,
        api_key=opts.api_key,
        allow_origins=opts.allow_origins,
        allowed_hosts=default_allowed_hosts(opts.host) + opts.allowed_hosts,
        cross_origin_isolation=opts.cross_origin_isolation,
    )
    url = f"http://{opts.host}:{opts.port}"
    if site is not None:
        _log.step(f"serving the site {site} at {url}/")
    if loader is not None:
        auth = " (bearer token required)" if opts.api_key else ""
        _log.step(
            f"OpenAI API at {url}/v1{auth}, 503 until the engine is ready ({url}/health); metrics at {url}/metrics"
        )
    _log.step("Ctrl-C to stop")
    server = uvicorn.Server(server_config(app, opts.host, opts.port, log_level=opts.log_level))
    if loader is not None:  # once the port is open: importing TVM holds the GIL for a second or more at times
        loader.start(after=lambda: server.started)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn stops on Ctrl-C, then raises it again
        server.run()  # a port in use: uvicorn says so and exits 3
