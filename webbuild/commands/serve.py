"""``webbuild serve``: a built site and/or the OpenAI REST API on the Python engine, with uvicorn."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from webbuild import _log
from webbuild.errors import InputError
from webbuild.serve.app import create_app


@dataclass
class ServeOptions:
    """``model``: a folder ``webbuild package`` wrote (site + API), or a model spec (preset, .gguf, HF dir: API
    only). ``api=False`` serves a site's files without loading the engine."""

    model: str
    device: str = "cpu"
    mode: str = "local"  # engine limits (webbuild.engine.engine.MODES)
    host: str = "127.0.0.1"
    port: int = 8000
    api: bool = True
    api_key: str | None = None
    allow_origins: list[str] = field(default_factory=list)
    cross_origin_isolation: bool = False
    quantization: str | None = None
    log_level: str = "warning"


def is_site(path: Path) -> bool:
    return (path / "index.html").is_file() and (path / "manifest.json").is_file()


def serve(opts: ServeOptions) -> None:
    """Builds the app and runs uvicorn in the foreground until Ctrl-C."""
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
    engine = None
    if opts.api:
        from webbuild.engine.engine import Engine, EngineConfig  # imports TVM: only when the API is wanted

        with _log.timed(f"loading the {opts.device} engine for {opts.model}"):
            engine = Engine(
                str(path) if site else opts.model,
                device=opts.device,
                quantization=opts.quantization,
                config=EngineConfig(mode=opts.mode),
            )
    app = create_app(
        site,
        engine=engine,
        api_key=opts.api_key,
        allow_origins=opts.allow_origins,
        cross_origin_isolation=opts.cross_origin_isolation,
    )
    url = f"http://{opts.host}:{opts.port}"
    if site is not None:
        _log.step(f"serving the site {site} at {url}/")
    if engine is not None:
        auth = " (bearer token required)" if opts.api_key else ""
        _log.step(f"OpenAI API for {engine.model_name} at {url}/v1{auth}; metrics at {url}/metrics")
    _log.step("Ctrl-C to stop")
    uvicorn.run(app, host=opts.host, port=opts.port, log_level=opts.log_level, timeout_graceful_shutdown=5)
