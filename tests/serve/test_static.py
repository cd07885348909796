"""webbuild.serve.static: what a CDN and a browser get for each file of a site (caching, ranges, gzip, COOP/COEP)."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from webbuild.serve.app import create_app
from webbuild.serve.static import IMMUTABLE
from webbuild.site_format import FileRecord, Manifest, Variant, write_manifest

SHARD = bytes(range(256)) * 64  # 16 KiB, every byte value
WASM = b"\x00asm\x01\x00\x00\x00" + b"\x01\x02\x03\x04" * 2048
RUNTIME_JS = "export const x = 1;\n" * 200


def _record(root: Path, rel: str) -> FileRecord:
    data = (root / rel).read_bytes()
    return FileRecord(rel, len(data), hashlib.sha256(data).hexdigest())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A site laid out as site.py writes it, plus one shard whose file name carries its hash."""
    root = tmp_path / "site"
    model = root / "models" / "m-q4f32_1"
    model.mkdir(parents=True)
    (root / "runtime").mkdir()
    (root / "libs").mkdir()
    (root / "index.html").write_text("<!doctype html><title>t</title>" + "<p>chat</p>" * 200)
    (root / "runtime" / "index.js").write_text(RUNTIME_JS)
    (root / "runtime" / "small.js").write_text("export {};\n")
    (model / "params_shard_0.bin").write_bytes(SHARD)
    hashed = f"params_shard_1.{_sha(SHARD[::-1])[:12]}.bin"
    (model / hashed).write_bytes(SHARD[::-1])
    (root / "libs" / "m-q4f32_1-webgpu.wasm").write_bytes(WASM)
    (root / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("outside the site")
    files = ["models/m-q4f32_1/params_shard_0.bin", f"models/m-q4f32_1/{hashed}", "libs/m-q4f32_1-webgpu.wasm"]
    variant = Variant("m-q4f32_1", "q4f32_1", False, 64, [_record(root, f) for f in files])
    site_files = [_record(root, "index.html"), _record(root, "runtime/index.js")]
    write_manifest(root, Manifest("t", "2026-12-02T00:00:00+00:00", variant.id, [variant], site_files))
    return root


@pytest.fixture()
def client(site: Path) -> TestClient:
    return TestClient(create_app(site))


def hashed_shard(site: Path) -> str:
    return "/" + next(site.glob("models/m-q4f32_1/params_shard_1.*.bin")).relative_to(site).as_posix()


# ---- caching ---------------------------------------------------------------------------------------------


def test_a_file_whose_name_carries_its_hash_is_immutable(client: TestClient, site: Path) -> None:
    response = client.get(hashed_shard(site))
    assert response.headers["cache-control"] == IMMUTABLE == "public, max-age=31536000, immutable"


def test_a_url_asking_for_the_listed_hash_is_immutable(client: TestClient) -> None:
    response = client.get(f"/libs/m-q4f32_1-webgpu.wasm?v={_sha(WASM)[:16]}")
    assert response.headers["cache-control"] == IMMUTABLE
    assert response.content == WASM


@pytest.mark.parametrize(
    "path",
    [
        "/models/m-q4f32_1/params_shard_0.bin",  # listed with its hash, but the URL does not say which content
        "/libs/m-q4f32_1-webgpu.wasm",
        "/libs/m-q4f32_1-webgpu.wasm?v=00000000deadbeef",  # asks for other content than the file has
        "/libs/m-q4f32_1-webgpu.wasm?v=ab",  # too short to name anything
        "/runtime/index.js",
        "/",
        "/manifest.json",
    ],
)
def test_everything_else_revalidates(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"


def test_a_listed_file_changed_after_the_build_loses_its_hash(client: TestClient, site: Path) -> None:
    url = hashed_shard(site)
    assert client.get(url).headers["cache-control"] == IMMUTABLE
    path = site / url.lstrip("/")
    path.write_bytes(b"tampered" + SHARD[8:])  # same size and name: only the bytes tell
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1))  # (coarse file system clocks)
    response = client.get(url)
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["etag"] != f'"{_sha(SHARD[::-1])[:32]}"'


def test_listed_files_have_content_etags_that_survive_a_copy(site: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "replica"
    shutil.copytree(site, copy)  # new mtimes: an mtime-based ETag would differ between replicas
    os.utime(copy / "manifest.json")
    a = TestClient(create_app(site)).get("/models/m-q4f32_1/params_shard_0.bin").headers["etag"]
    b = TestClient(create_app(copy)).get("/models/m-q4f32_1/params_shard_0.bin").headers["etag"]
    assert a == b == f'"{_sha(SHARD)[:32]}"'


@pytest.mark.parametrize("path", ["/models/m-q4f32_1/params_shard_0.bin", "/runtime/index.js", "/"])
def test_conditional_requests_get_304(client: TestClient, path: str) -> None:
    first = client.get(path)
    assert first.headers["last-modified"]
    again = client.get(path, headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["cache-control"] == first.headers["cache-control"]
    since = client.get(path, headers={"if-modified-since": first.headers["last-modified"]})
    assert since.status_code == 304


# ---- ranges ----------------------------------------------------------------------------------------------


def test_range_request_returns_206_with_the_bytes(client: TestClient) -> None:
    response = client.get("/models/m-q4f32_1/params_shard_0.bin", headers={"range": "bytes=100-199"})
    assert response.status_code == 206
    assert response.content == SHARD[100:200]
    assert response.headers["content-range"] == f"bytes 100-199/{len(SHARD)}"
    assert response.headers["accept-ranges"] == "bytes"


def test_if_range_gets_the_range_only_while_the_file_is_unchanged(client: TestClient) -> None:
    etag = client.get("/models/m-q4f32_1/params_shard_0.bin").headers["etag"]
    same = client.get("/models/m-q4f32_1/params_shard_0.bin", headers={"range": "bytes=0-9", "if-range": etag})
    assert same.status_code == 206 and same.content == SHARD[:10]
    stale = client.get("/models/m-q4f32_1/params_shard_0.bin", headers={"range": "bytes=0-9", "if-range": '"old"'})
    assert stale.status_code == 200 and stale.content == SHARD


def test_suffix_range(client: TestClient) -> None:
    response = client.get("/models/m-q4f32_1/params_shard_0.bin", headers={"range": "bytes=-10"})
    assert response.status_code == 206 and response.content == SHARD[-10:]


def test_unsatisfiable_range_is_416_in_the_envelope(client: TestClient) -> None:
    response = client.get("/models/m-q4f32_1/params_shard_0.bin", headers={"range": f"bytes={len(SHARD) + 5}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(SHARD)}"
    assert response.json()["error"]["code"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["pages=0-9", "bytes=9-2", "bytes=", "nonsense"])
def test_a_malformed_range_is_400_in_the_envelope(client: TestClient, header: str) -> None:
    response = client.get("/models/m-q4f32_1/params_shard_0.bin", headers={"range": header})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert header in response.json()["error"]["message"]


def test_range_on_a_compressible_file_is_served_uncompressed(client: TestClient) -> None:
    response = client.get("/runtime/index.js", headers={"range": "bytes=0-9", "accept-encoding": "gzip"})
    assert response.status_code == 206
    assert "content-encoding" not in response.headers
    assert response.content == RUNTIME_JS.encode()[:10]


# ---- compression -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/runtime/index.js", "/", "/libs/m-q4f32_1-webgpu.wasm"])
def test_text_and_wasm_are_gzipped_for_clients_that_accept_it(client: TestClient, site: Path, path: str) -> None:
    response = client.get(path, headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["etag"].startswith('W/"')  # not the identity bytes: a weak validator
    local = site / (path.lstrip("/") or "index.html")
    assert response.content == local.read_bytes()  # httpx decodes it
    again = client.get(path, headers={"accept-encoding": "gzip", "if-none-match": response.headers["etag"]})
    assert again.status_code == 304


def test_gzip_body_is_really_gzip(site: Path) -> None:
    with TestClient(create_app(site)) as client:
        raw = client.build_request("GET", "/runtime/index.js", headers={"accept-encoding": "gzip"})
        response = client.send(raw, stream=True)
        body = b"".join(response.iter_raw())
    assert int(response.headers["content-length"]) == len(body) < len(RUNTIME_JS)
    assert gzip.decompress(body) == RUNTIME_JS.encode()


def test_small_files_are_not_worth_compressing(client: TestClient) -> None:
    assert "content-encoding" not in client.get("/runtime/small.js", headers={"accept-encoding": "gzip"}).headers


def test_weight_shards_are_not_compressed(client: TestClient) -> None:
    response = client.get("/models/m-q4f32_1/params_shard_0.bin", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in response.headers
    assert response.content == SHARD


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br"])
def test_no_gzip_unless_accepted(client: TestClient, accept: str) -> None:
    response = client.get("/runtime/index.js", headers={"accept-encoding": accept})
    assert "content-encoding" not in response.headers


def test_head_has_the_headers_and_no_body(client: TestClient) -> None:
    response = client.head("/runtime/index.js", headers={"accept-encoding": "gzip"})
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-encoding"] == "gzip"


# ---- isolation and refusals ------------------------------------------------------------------------------


def test_site_files_confine_the_page(client: TestClient) -> None:
    """CSP: the page's own scripts, workers (and blob: workers for embedding), wasm, same-origin fetches;
    no sniffing a file into another type; no Referer to other sites."""
    for path in ("/", "/runtime/index.js", "/models/m-q4f32_1/params_shard_0.bin"):
        headers = client.get(path).headers
        csp = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
        assert csp["script-src"] == "'self' 'wasm-unsafe-eval'"
        assert csp["worker-src"] == "'self' blob:"
        assert csp["connect-src"] == "'self'" and csp["default-src"] == "'self'"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
    missing = client.get("/nope.js")
    assert missing.status_code == 404 and missing.headers["x-content-type-options"] == "nosniff"


def test_cross_origin_isolation_headers_are_opt_in(site: Path) -> None:
    plain = TestClient(create_app(site)).get("/")
    assert "cross-origin-opener-policy" not in plain.headers
    isolated = TestClient(create_app(site, cross_origin_isolation=True)).get("/")
    assert isolated.headers["cross-origin-opener-policy"] == "same-origin"
    assert isolated.headers["cross-origin-embedder-policy"] == "require-corp"


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/runtime/..%2f..%2fsecret.txt",
        "/runtime/%2e%2e/%2e%2e/secret.txt",
        "/..%5c..%5csecret.txt",
        "/.env",
        "/runtime/../.env",
        "/%00",
    ],
)
def test_paths_outside_the_site_and_dot_files_are_refused(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "outside the site" not in response.text and "SECRET" not in response.text
    assert response.json()["error"]["code"] == "not_found"


def test_symlinks_out_of_the_site_are_refused(site: Path, tmp_path: Path) -> None:
    (site / "runtime" / "leak.txt").symlink_to(tmp_path / "secret.txt")
    assert TestClient(create_app(site)).get("/runtime/leak.txt").status_code == 404


def test_static_files_refuse_writes(client: TestClient) -> None:
    response = client.post("/index.html", content=b"x")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
