"""The assembled site in headless Chromium trusts no file it did not check against manifest.json: a tampered
tokenizer on the server is refused naming the file; truncated and bit-flipped entries in the browser's storage
(Cache API or IndexedDB) are found on the next load, evicted and fetched again, and the page works after that
one reload. The page is the real one (app.js, the real Engine and its verified loading of configs and
tokenizer); only the GPU pipeline is scripted, and it loads the model library, tensor-cache.json and the shards
through the runtime's verified cache in the order tvmjs uses it."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_site import fake_variant, scripted_pipeline_js

from webbuild.build.site import assemble_site

pytestmark = pytest.mark.toolchain

VARIANT = "tiny-q4f32_1"  # SwiftShader has no shader-f16: the page picks the f32 variant
WORKER = (
    """
import { Engine } from "./engine.js";
import { startWorker } from "./worker_host.js";
import { TextTokenizer } from "./tokenizer.js";
import { variantFiles } from "./cache.js";

"""
    + scripted_pipeline_js()
    + """
startWorker({ createEngine: () => new Engine({
  detectGpu: async () => ({ hasShaderF16: false, info: { vendor: "scripted" } }),
  loadPipeline: async ({ record, onProgress, signal, cacheType }) => {
    // pipeline.js's files: the library, then tvmjs's fetchTensorCache (hasAllKeys, addToCache, fetchWithCache).
    const files = variantFiles(record, cacheType);
    await files.fetchWithCache(record.model_lib, "arraybuffer", signal);
    const index = await files.fetchWithCache(new URL("tensor-cache.json", record.model_url).href, "json", signal);
    const shards = index.records.map((r) => new URL(r.dataPath, record.model_url).href);
    if (!(await files.hasAllKeys(shards))) for (const url of shards) await files.addToCache(url, "arraybuffer", signal);
    for (const url of shards) await files.fetchWithCache(url, "arraybuffer");
    onProgress({ phase: "weights", loaded: 1, total: 1, text: "loaded" });
    const get = (name) => files.fetchWithCache(new URL(name, record.model_url).href, "json");
    const tok = new TextTokenizer(await get("tokenizer.json"), await get("tokenizer_config.json"));
    return new ScriptedPipeline([...tok.encode("Verified."), tok.tokenId("<|im_end|>")]);
  },
}) });
"""
)
# In the page: damages the stored copy of each named file (Cache API "webbuild/model") as told.
DAMAGE_CACHE = """async (damage) => {
  const cache = await caches.open("webbuild/model");
  const done = [];
  for (const request of await cache.keys()) {
    const name = new URL(request.url).pathname.split("/").pop();
    if (!(name in damage)) continue;
    let bytes = new Uint8Array(await (await cache.match(request)).arrayBuffer());
    if (damage[name] === "truncate") bytes = bytes.slice(0, Math.floor(bytes.length / 2));
    else bytes[bytes.length - 1] ^= 0x01;
    await cache.put(request, new Response(bytes));
    done.push(name);
  }
  return done.sort();
}"""
# In the page: the sha256 of every stored file, by name.
STORED_DIGESTS = """async () => {
  const cache = await caches.open("webbuild/model");
  const out = {};
  for (const request of await cache.keys()) {
    const bytes = await (await cache.match(request)).arrayBuffer();
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
    const name = new URL(request.url).pathname.split("/").pop();
    out[name] = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return out;
}"""
# In a module worker of the page: the IndexedDB store, a damaged entry, and a second load.
IDB_CHECK = """async (urls) => {
  const code = `
    import { VerifiedCache } from "${new URL("runtime/cache.js", location.href).href}";
    onmessage = async ({ data: { url, sha256 } }) => {
      try {
        const digests = new Map([[url, sha256]]);
        const make = () => new VerifiedCache("webbuild-idb-test", { digests, storage: "indexeddb" });
        const first = new Uint8Array(await make().fetchWithCache(url, "arraybuffer"));
        const db = await new Promise((ok) => {
          const r = indexedDB.open("webbuild-idb-test", 1);
          r.onsuccess = () => ok(r.result);
        });
        const key = url + "?sha256=" + sha256;
        await new Promise((ok) => {
          const tx = db.transaction("files", "readwrite");
          tx.objectStore("files").put(first.slice(0, 10), key);
          tx.oncomplete = ok;
        });
        const again = new Uint8Array(await make().fetchWithCache(url, "arraybuffer"));
        const stored = await new Promise((ok) => {
          const r = db.transaction("files").objectStore("files").get(key);
          r.onsuccess = () => ok(r.result);
        });
        postMessage({ first: first.length, again: again.length, stored: stored.length });
      } catch (e) { postMessage({ error: String(e.stack || e) }); }
    };`;
  const worker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })), { type: "module" });
  return new Promise((resolve) => {
    worker.onmessage = (ev) => resolve(ev.data);
    worker.postMessage(urls);
  });
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    variants = [fake_variant(root / "build", VARIANT, "q4f32_1", shard_bytes=5000)]
    built = assemble_site(root / "dist" / "tiny", name="tiny", variants=variants)
    (built / "runtime" / "worker.js").write_text(WORKER)
    return built


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[tuple[str, list[str]]]:
    """The site as `webbuild serve --no-api` serves it (CSP included); the paths of the GETs it answers."""
    from webbuild.serve.app import create_app, serving

    app, requests = create_app(site), []

    async def logged(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            requests.append(scope["path"])
        await app(scope, receive, send)

    with serving(logged) as url:
        yield url, requests


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    from webbuild.browser import launch_options

    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_options())
        yield browser
        browser.close()


@pytest.fixture()
def tab(chromium: Any, server: tuple[str, list[str]]) -> Iterator[Any]:
    """A page in a fresh profile (empty storage) that fails the test on a script error or a CSP violation."""
    context = chromium.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(server[0])
    yield page
    context.close()
    assert problems == []


def wait_state(tab: Any, state: str) -> None:
    tab.wait_for_selector(f"body[data-state={state}]", timeout=60_000)


def shared_files(site: Path) -> dict[str, str]:
    """sha256 of each file of the variant, by name, as manifest.json lists them."""
    manifest = json.loads((site / "manifest.json").read_text())
    (variant,) = [v for v in manifest["variants"] if v["id"] == VARIANT]
    return {f["path"].rsplit("/", 1)[-1]: f["sha256"] for f in variant["files"]}


def model_requests(requests: list[str]) -> list[str]:
    return sorted(p.rsplit("/", 1)[-1] for p in requests if p.startswith(("/models/", "/libs/")))


def test_damaged_stored_files_are_evicted_and_fetched_again_on_the_next_load(tab: Any, server, site: Path) -> None:
    url, requests = server
    wait_state(tab, "ready")
    expected = shared_files(site)
    assert tab.evaluate(STORED_DIGESTS) == expected  # everything was stored, verified
    damage = {
        "params_shard_0.bin": "truncate",
        "params_shard_1.bin": "flip",
        f"{VARIANT}-webgpu.wasm": "truncate",
        "tokenizer.json": "flip",
    }
    assert tab.evaluate(DAMAGE_CACHE, damage) == sorted(damage)
    requests.clear()
    tab.reload()
    wait_state(tab, "ready")  # one reload, and the page works
    assert model_requests(requests) == sorted(damage)  # exactly the damaged files came again
    assert tab.evaluate(STORED_DIGESTS) == expected  # and storage is healed
    tab.fill("#prompt", "Hello?")
    tab.press("#prompt", "Enter")
    tab.wait_for_selector(".msg.assistant .meta", timeout=60_000)
    assert tab.inner_text(".msg.assistant").startswith("Verified.")


def test_a_tampered_tokenizer_on_the_server_is_refused_naming_it(tab: Any, site: Path) -> None:
    tokenizer = site / "models" / VARIANT / "tokenizer.json"
    original = tokenizer.read_bytes()
    wait_state(tab, "ready")
    tab.context.clear_cookies()
    tab.evaluate("caches.delete('webbuild/model')")
    tampered = original.replace(b'"Hello"', b'"Hellp"', 1) if b'"Hello"' in original else original + b" "
    assert hashlib.sha256(tampered).hexdigest() != hashlib.sha256(original).hexdigest()
    shutil.copyfile(tokenizer, tokenizer.with_suffix(".bak"))
    try:
        tokenizer.write_bytes(tampered)
        tab.reload()
        wait_state(tab, "error")
        code, text = tab.eval_on_selector("#error", "e => [e.dataset.code, e.innerText]")
        assert code == "integrity_check_failed"
        assert f"models/{VARIANT}/tokenizer.json" in text
    finally:
        tokenizer.write_bytes(original)
    tab.reload()
    wait_state(tab, "ready")


def test_indexeddb_storage_is_verified_and_healed_too(tab: Any, server, site: Path) -> None:
    url, requests = server
    shard = f"{url}models/{VARIANT}/params_shard_0.bin"
    sha = hashlib.sha256((site / "models" / VARIANT / "params_shard_0.bin").read_bytes()).hexdigest()
    result = tab.evaluate(IDB_CHECK, {"url": shard, "sha256": sha})
    assert result == {"first": 5000, "again": 5000, "stored": 5000}, result
