"""webbuild.serve.app: one app for the static site and the API (MIME types, index, traversal refused, 404)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from webbuild.errors import InputError
from webbuild.serve.app import create_app


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "runtime" / "vendor").mkdir(parents=True)
    (root / "models" / "m-q4f32_1").mkdir(parents=True)
    (root / "libs").mkdir()
    (root / "index.html").write_text("<!doctype html><title>t</title>")
    (root / "runtime" / "index.js").write_text("export {};")
    (root / "runtime" / "vendor" / "tokenizers.mjs").write_text("export {};")
    (root / "manifest.json").write_text('{"name": "t"}')
    (root / "models" / "m-q4f32_1" / "params_shard_0.bin").write_bytes(b"\x00" * 64)
    (root / "libs" / "m-q4f32_1-webgpu.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    (tmp_path / "secret.txt").write_text("outside the site")
    return root


@pytest.fixture()
def client(site: Path) -> TestClient:
    return TestClient(create_app(site))


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/runtime/index.js", "text/javascript"),
        ("/runtime/vendor/tokenizers.mjs", "text/javascript"),
        ("/libs/m-q4f32_1-webgpu.wasm", "application/wasm"),
        ("/manifest.json", "application/json"),
        ("/models/m-q4f32_1/params_shard_0.bin", "application/octet-stream"),
        ("/index.html", "text/html"),
    ],
)
def test_files_are_served_with_the_media_type_browsers_require(client: TestClient, path: str, media_type: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media_type


def test_root_serves_index_html(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.text.startswith("<!doctype html>")


def test_wasm_bytes_arrive_intact(client: TestClient, site: Path) -> None:
    assert client.get("/libs/m-q4f32_1-webgpu.wasm").content == (site / "libs" / "m-q4f32_1-webgpu.wasm").read_bytes()


def test_files_revalidate_so_a_rebuilt_site_is_never_mixed_with_stale_files(client: TestClient) -> None:
    first = client.get("/runtime/index.js")
    assert first.headers["cache-control"] == "no-cache"
    again = client.get("/runtime/index.js", headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/runtime/..%2f..%2fsecret.txt"])
def test_paths_outside_the_site_are_refused(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "outside the site" not in response.text


def test_missing_files_are_404(client: TestClient) -> None:
    assert client.get("/models/nope/tensor-cache.json").status_code == 404


def test_routes_given_to_create_app_come_before_the_static_site(site: Path) -> None:
    async def models(request: object) -> JSONResponse:
        return JSONResponse({"object": "list", "data": []})

    client = TestClient(create_app(site, routes=[Route("/v1/models", models)]))
    assert client.get("/v1/models").json() == {"object": "list", "data": []}
    assert client.get("/manifest.json").json() == {"name": "t"}


def test_a_directory_without_index_html_is_not_a_site(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a built site"):
        create_app(tmp_path)


def test_a_site_and_the_api_in_one_app(site: Path) -> None:
    from fake_engine import FakeEngine

    client = TestClient(create_app(site, engine=FakeEngine()))
    assert client.get("/").text.startswith("<!doctype html>")
    assert client.get("/v1/models").json()["data"][0]["id"] == "fake-model-q4f32_1"
    assert client.get("/health").status_code == 200
    assert client.get("/runtime/index.js").status_code == 200


def test_an_app_needs_something_to_serve() -> None:
    with pytest.raises(InputError, match="Nothing to serve"):
        create_app()


def test_errors_of_the_static_site_use_the_api_envelope(client: TestClient) -> None:
    body = client.get("/models/nope/tensor-cache.json").json()
    assert body == {"error": {"message": "Not found.", "type": "invalid_request_error", "param": None,
                              "code": "not_found"}}  # fmt: skip


def test_the_site_is_served_while_the_engine_loads(site: Path) -> None:
    from fake_engine import FakeEngine

    from webbuild.serve.loading import EngineLoader

    client = TestClient(create_app(site, engine=EngineLoader(FakeEngine)))  # never started: loading for good
    assert client.get("/").text.startswith("<!doctype html>")
    assert client.get("/runtime/index.js").status_code == 200
    assert client.get("/health").json() == {"status": "loading"}
    assert client.get("/v1/models").status_code == 503
