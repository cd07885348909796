"""``webbuild serve``: what the command line turns into (uvicorn itself is replaced by a recorder)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from tiny_llama import tiny_llama_model, write_hf_dir

from webbuild.cli import main


@pytest.fixture()
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Captures the app and options ``serve`` would hand to uvicorn."""
    got: dict[str, Any] = {}

    def run(app: Any, **kwargs: Any) -> None:
        got["app"], got["kwargs"] = app, kwargs

    monkeypatch.setattr("webbuild.commands.serve.uvicorn.run", run)
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
    assert served["kwargs"]["port"] == 9123 and served["kwargs"]["host"] == "0.0.0.0"
    client = TestClient(served["app"])
    page = client.get("/", headers={"origin": "https://c.example"})
    assert page.status_code == 200
    assert page.headers["access-control-allow-origin"] == "https://c.example"
    other = client.get("/", headers={"origin": "https://a.example"})
    assert other.headers["access-control-allow-origin"] == "https://a.example"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    assert client.get("/v1/models").status_code == 404


def test_no_api_needs_a_site(served: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quiet", "serve", str(tmp_path / "nothing"), "--no-api"]) == 1
    assert "webbuild package" in capsys.readouterr().err
    assert "app" not in served


@pytest.mark.toolchain
def test_a_model_directory_serves_the_api_only(served: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = write_hf_dir(tmp_path / "tiny", tiny_llama_model())
    monkeypatch.setenv("WEBBUILD_API_KEY", "from-env")
    assert main(["--quiet", "serve", str(model_dir), "-q", "q0f32", "--mode", "server"]) == 0
    client = TestClient(served["app"])
    assert client.get("/v1/models").status_code == 401
    models = client.get("/v1/models", headers={"authorization": "Bearer from-env"}).json()
    assert models["data"][0]["id"].endswith("-q0f32")
    assert client.get("/").status_code == 404
    assert client.get("/health").json()["status"] == "ok"
    metrics = client.get("/metrics", headers={"authorization": "Bearer from-env"}).text
    capacity = float(re.search(r"^webbuild_kv_cache_capacity_tokens (\S+)$", metrics, re.M).group(1))
    assert capacity == 8 * tiny_llama_model().config["max_position_embeddings"]  # server mode: 8 context windows
