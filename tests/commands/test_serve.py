"""``webbuild serve``: what the command line turns into (uvicorn itself is replaced by a recorder), and the real
command in a subprocess: the site at once, the API once the engine has compiled in the background."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient
from tiny_llama import package_tiny_site, tiny_llama_model, write_hf_dir

from webbuild.cli import main


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Captures the app and config ``serve`` hands to uvicorn, whose server reports itself started at once."""
    got: dict[str, Any] = {}

    def run(server: uvicorn.Server) -> None:
        got["app"], got["config"] = server.config.app, server.config
        server.started = True

    monkeypatch.setattr("webbuild.commands.serve.uvicorn.Server.run", run)
    monkeypatch.delenv("WEBBUILD_API_KEY", raising=False)
    return got


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    (root / "manifest.json").write_text('{"name": "t", "models": [], "files": []}')
    return root


def test_a_site_without_the_api(served: dict, site: Path) -> None:
    code = main(
        ["--quiet", "serve", str(site), "--no-api", "--port", "9123", "--host", "0.0.0.0",
         "--allow-origins", "https://a.example,https://b.example", "--allow-origins", "https://c.example",
         "--cross-origin-isolation"]
    )  # fmt: skip
    assert code == 0
    assert served["config"].port == 9123 and served["config"].host == "0.0.0.0"
    client = TestClient(served["app"], base_url="http://localhost:9123")
    page = client.get("/", headers={"origin": "https://c.example"})
    assert page.status_code == 200
    assert page.headers["access-control-allow-origin"] == "https://c.example"
    other = client.get("/", headers={"origin": "https://a.example"})
    assert other.headers["access-control-allow-origin"] == "https://a.example"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert client.get("/v1/models").status_code == 404


@pytest.mark.parametrize(
    ("args", "host", "allowed"),
    [
        ([], "localhost:8000", True),
        ([], "127.0.0.1:8000", True),
        ([], "[::1]:8000", True),
        ([], "app.localhost", True),
        ([], "evil.example:8000", False),  # a rebound name: refused
        ([], "127.0.0.1.nip.io", False),
        (["--allowed-hosts", "llm.example.com,*.corp.example"], "llm.example.com", True),
        (["--allowed-hosts", "llm.example.com,*.corp.example"], "a.corp.example:8000", True),
        (["--allowed-hosts", "llm.example.com,*.corp.example"], "evil.example", False),
        (["--allowed-hosts", "*"], "anything.example", True),
        (["--host", "0.0.0.0"], "192.168.1.20:8000", True),  # an address cannot be rebound
        (["--host", "0.0.0.0"], socket.gethostname(), True),
        (["--host", "0.0.0.0"], "evil.example", False),
    ],
)
def test_the_host_header_must_name_this_server(served: dict, site: Path, args: list, host: str, allowed: bool):
    assert main(["--quiet", "serve", str(site), "--no-api", *args]) == 0
    response = TestClient(served["app"]).get("/manifest.json", headers={"host": host})
    assert response.status_code == (200 if allowed else 400)
    if not allowed:
        assert response.json()["error"]["code"] == "host_not_allowed"
        assert "--allowed-hosts" in response.json()["error"]["message"]


def test_allowed_hosts_are_checked_while_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "x", "--allowed-hosts", "https://llm.example.com"])
    assert exit_.value.code == 2
    assert "not a host name" in capsys.readouterr().err


def test_a_port_in_use_exits_3(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_:
            main(["--quiet", "serve", str(site), "--no-api", "--port", str(port)])
    assert exit_.value.code == 3


def test_no_api_needs_a_site(served: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quiet", "serve", str(tmp_path / "nothing"), "--no-api"]) == 1
    assert "webbuild package" in capsys.readouterr().err
    assert "app" not in served


def wait_for_health(get: Any, timeout: float) -> Any:
    """Polls GET /health until it stops saying ``loading``; returns the last response."""
    deadline = time.monotonic() + timeout
    while (response := get("/health")).status_code == 503 and response.json() == {"status": "loading"}:
        assert time.monotonic() < deadline, "the engine was still loading at the deadline"
        time.sleep(0.2)
    return response


def test_a_load_failure_is_reported_and_the_site_stays_up(
    served: dict, site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", str(site)]) == 0  # a manifest without variants: the engine cannot load from it
    client = TestClient(served["app"], base_url="http://127.0.0.1:8000")
    health = wait_for_health(client.get, timeout=120)
    assert health.status_code == 503 and health.json()["status"] == "error"
    message = health.json()["message"]
    reply = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "model_load_failed"
    assert reply.json()["error"]["message"] == f"The model failed to load: {message}"
    assert client.get("/").status_code == 200
    err = capsys.readouterr().err
    assert err.index("* serving the site") < err.index("* loading the cpu engine") < err.index("failed to load: ")


@pytest.mark.parametrize(("args", "prefix_cache"), [([], True), (["--no-prefix-cache"], False)])
def test_the_prefix_cache_flag_reaches_the_engine(
    served: dict, site: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], prefix_cache: bool
) -> None:
    got: dict[str, Any] = {}

    def load_engine(*_: Any, **kwargs: Any) -> None:
        got.update(kwargs)
        raise RuntimeError("not loading a model here")

    monkeypatch.setattr("webbuild.commands.serve.load_engine", load_engine)
    assert main(["serve", str(site), *args]) == 0
    wait_for_health(TestClient(served["app"], base_url="http://127.0.0.1:8000").get, timeout=30)
    assert got["prefix_cache"] is prefix_cache


@pytest.mark.toolchain
def test_a_model_directory_serves_the_api_only(served: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = write_hf_dir(tmp_path / "tiny", tiny_llama_model())
    monkeypatch.setenv("WEBBUILD_API_KEY", "from-env")
    assert main(["--quiet", "serve", str(model_dir), "-q", "q0f32", "--mode", "server"]) == 0
    client = TestClient(served["app"], base_url="http://localhost:8000")
    assert wait_for_health(client.get, timeout=900).status_code == 200
    assert client.get("/v1/models").status_code == 401
    models = client.get("/v1/models", headers={"authorization": "Bearer from-env"}).json()
    assert models["data"][0]["id"].endswith("-q0f32")
    assert client.get("/").status_code == 404
    assert client.get("/health").json()["status"] == "ok"
    metrics = client.get("/metrics", headers={"authorization": "Bearer from-env"}).text
    capacity = float(re.search(r"^webbuild_kv_cache_capacity_tokens (\S+)$", metrics, re.M).group(1))
    assert capacity == 8 * tiny_llama_model().config["max_position_embeddings"]  # server mode: 8 context windows


# A `webbuild serve` whose engine is the scripted one: endless replies, a chunk every 50 ms.
SERVE_FAKE = """
import sys
from fake_engine import FakeEngine
import webbuild.commands.serve as serve
serve.load_engine = lambda *args, **kwargs: FakeEngine(endless=True, delay=0.05)
from webbuild.cli import main
sys.exit(main(["serve", *sys.argv[1:]]))
"""


def test_ctrl_c_stops_serve_within_a_second_while_requests_run(site: Path, tmp_path: Path) -> None:
    """Ctrl-C with a stream and a non-streamed request in flight, neither of which would ever end by itself, and
    an idle connection: the server aborts them and exits within a second."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    err = tmp_path / "stderr.txt"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE_FAKE, str(site), "--port", str(port)], env=env, stderr=stderr
        )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
                time.sleep(0.05)
            body = {"messages": [{"role": "user", "content": "hi"}]}
            pending = threading.Thread(
                target=lambda: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30), daemon=True
            )
            pending.start()
            time.sleep(0.5)  # it has reached the engine
            with http.stream("POST", "/v1/chat/completions", json=body | {"stream": True}) as stream:
                next(stream.iter_bytes())  # the stream is running
                idle = socket.create_connection(("127.0.0.1", port))
                proc.send_signal(signal.SIGINT)
                t0 = time.monotonic()
                code = proc.wait(10)
                elapsed = time.monotonic() - t0
                idle.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code in (0, 130), err.read_text()
    assert elapsed < 1.0, f"{elapsed:.2f} s to stop"


# ---- the real command, in a subprocess, on an empty cache --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return package_tiny_site(tmp_path_factory.mktemp("serve"), seed=5, quantization="q0f32")


@pytest.fixture()
def cold_serve(tiny_site: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, Path, float]]:
    """``webbuild serve <site>`` started now with an empty cache (its engine must compile): the process, its
    URL, its stderr file and its start time; stopped with Ctrl-C at the end if still running."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WEBBUILD_CACHE": str(tmp_path / "empty-cache")}
    err = tmp_path / "stderr.txt"
    started = time.monotonic()
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "webbuild.cli", "serve", str(tiny_site), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    yield proc, f"http://127.0.0.1:{port}", err, started
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def first_answer(url: str, started: float) -> float:
    """Seconds from the process start to the first accepted connection."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=0.1).close()
            return time.monotonic() - started
        except OSError:
            assert time.monotonic() - started < 10, "the server did not open its port"
            time.sleep(0.01)


@pytest.mark.toolchain
def test_serve_answers_at_once_and_the_api_once_the_engine_has_compiled(cold_serve) -> None:
    proc, url, err, started = cold_serve
    first_answer(url, started)
    with httpx.Client(base_url=url, timeout=30) as http:
        page, health = http.get("/"), http.get("/health")
        assert time.monotonic() - started < 2, "the site and /health took more than 2 s from the process start"
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert (health.status_code, health.json()) == (503, {"status": "loading"})

        early = http.post("/v1/completions", json={"prompt": "The capital", "max_tokens": 3})
        assert early.status_code == 503 and int(early.headers["retry-after"]) > 0
        assert early.json()["error"]["code"] == "model_loading"
        assert set(early.json()["error"]) == {"message", "type", "param", "code"}

        ready = wait_for_health(http.get, timeout=900)
        assert ready.status_code == 200 and ready.json()["status"] == "ok"
        reply = http.post("/v1/completions", json={"prompt": "The capital", "max_tokens": 3, "temperature": 0})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3
    text = err.read_text()
    steps = ["* serving the site", "* loading the cpu engine", "* compiling llama q0f32 for cpu", "* engine ready ("]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), text


def compile_processes(cache: Path) -> list[int]:
    """Processes that multiprocessing spawned with ``cache`` as their WEBBUILD_CACHE: the server's compile child
    (not its resource tracker, which leaves on its own once the server has gone)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            spawned = b"spawn_main" in (proc / "cmdline").read_bytes()
            if spawned and f"WEBBUILD_CACHE={cache}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                pids.append(int(proc.name))
        except OSError:  # gone, or not ours to read
            pass
    return pids


@pytest.mark.toolchain
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the compile process through /proc")
def test_ctrl_c_while_the_engine_compiles_stops_the_server_at_once(cold_serve, tmp_path: Path) -> None:
    proc, url, err, started = cold_serve
    deadline = time.monotonic() + 300
    while "* compiling llama" not in err.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, err.read_text()
        time.sleep(0.1)
    assert compile_processes(tmp_path / "empty-cache")
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    assert proc.wait(15) in (0, 130), err.read_text()  # not an abort or a segfault of an unwound compile
    assert time.monotonic() - t0 < 10
    assert not compile_processes(tmp_path / "empty-cache"), "the compile went on after the server stopped"
    assert not list((tmp_path / "empty-cache").rglob("llama-*.so")), "the server waited for the compile to finish"
    assert "failed to load" not in err.read_text()  # stopping is not a failure
