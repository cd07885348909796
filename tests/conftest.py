"""Shared fixtures: an isolated cache, a loopback file server, a tiny random Llama, the engine device."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tiny_llama import TinyLlama, tiny_llama_model


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engine-device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="device of the Python engine behind the REST API tests (cuda: run them on a GPU machine)",
    )


@pytest.fixture(scope="session")
def engine_device(request: pytest.FixtureRequest) -> str:
    device = request.config.getoption("--engine-device")
    if device == "cuda":
        import tvm

        if not tvm.cuda(0).exist:
            pytest.fail("--engine-device cuda needs a CUDA GPU")
    return device


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points ``webbuild.cache.cache_dir`` at an empty temp dir for this test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("WEBBUILD_CACHE", str(root))
    return root


# --- a file server on 127.0.0.1 (tests never reach the network) -------------------------------------------


@dataclass
class FileServer:
    """Serves ``root`` over HTTP on loopback. ``faults`` holds what the next requests get instead of the file:
    an HTTP status (int) or ``"truncate"`` (a correct Content-Length, then half the body and a hang-up)."""

    root: Path
    port: int = 0
    requests: list[str] = field(default_factory=list)
    faults: list[int | str] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


def _handler(server: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server calls do_<METHOD>
            server.requests.append(self.path)
            fault = server.faults.pop(0) if server.faults else None
            path = server.root / self.path.lstrip("/")
            if isinstance(fault, int):
                self.send_error(fault)
                return
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if fault == "truncate" else body)
            if fault == "truncate":
                self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    return Handler


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    root = tmp_path / "served"
    root.mkdir()
    state = FileServer(root)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


# --- a tiny random Llama ----------------------------------------------------------------------------------


@pytest.fixture
def tiny_llama() -> TinyLlama:
    return tiny_llama_model()


@pytest.fixture
def prefill_counter(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``count(engine)``: the list of the token counts ``engine`` prefills from then on, one entry per chunk."""

    def count(engine: Any) -> list[int]:
        runner, counted = engine.scheduler.runner, []
        real = runner.prefill_batch

        def prefill_batch(chunks: Any) -> Any:
            counted.extend(len(chunk) for _, chunk in chunks)
            return real(chunks)

        monkeypatch.setattr(runner, "prefill_batch", prefill_batch)
        return counted

    return count
