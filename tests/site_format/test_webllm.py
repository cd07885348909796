"""WebLLM interop both ways, in headless Chromium (SwiftShader) on a tiny site served by a plain static host:
WebLLM 0.2.86 (npm, tests/webllm) loads the site's bundle as it sits there (built from a Hugging Face folder, and
from a GGUF file) and generates our runtime's greedy tokens; our runtime loads the same model laid out as a WebLLM
model folder (an HF-style ``resolve/main/`` folder with ``ndarray-cache.json``, records ``{model, model_id,
model_lib}``) and generates them too."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_llama import package_tiny_site

from webbuild.site_format import read_manifest

pytestmark = pytest.mark.toolchain

WEBLLM = Path(__file__).parents[1] / "webllm" / "node_modules" / "@mlc-ai" / "web-llm"
PROMPTS = ["the cat sat on the", "in the garden", "0123 the"]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "tell me on the sea"}]
GREEDY = {"max_tokens": 16, "temperature": 0}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module", params=["hf", "gguf"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A plain static host (Python's http.server) of a folder holding a tiny site (``site/``) and WebLLM's
    browser bundle (``webllm/``), as an app that uses both would deploy them. The site is built from a Hugging
    Face folder, or from a GGUF file, whose tokenizer.json keeps the GGUF's "left right" merge strings."""
    bundle = WEBLLM / "lib" / "index.js"
    if not bundle.is_file():
        pytest.fail("WebLLM is not installed: run scripts/setup.sh (npm ci in tests/webllm)")
    root = tmp_path_factory.mktemp("webllm-interop")
    site = package_tiny_site(root, seed=5, from_gguf=request.param == "gguf")
    (tokenizer,) = site.glob("models/*/tokenizer.json")
    merge = json.loads(tokenizer.read_text())["model"]["merges"][0]
    assert isinstance(merge, str if request.param == "gguf" else list)
    (root / "webllm").mkdir()
    shutil.copy(bundle, root / "webllm" / "index.js")
    (root / "blank.html").write_text("<!doctype html><title>interop</title>")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tab(served: tuple[Path, str]) -> Iterator[Any]:
    from webbuild.browser import launch_chromium

    with launch_chromium() as chromium:
        tab = chromium.open(served[1] + "blank.html")
        tab.wait_for("document.readyState === 'complete'", timeout_s=30)
        yield tab


# Greedy completions of PROMPTS and one chat, from whichever engine `load` (a JS expression) makes; each text
# with its token counts, as the engines' usage reports them.
_GENERATE_JS = """(async () => {
  const engine = await (%s);
  const out = [];
  for (const prompt of %s) {
    const r = await engine.completions.create({ prompt, ...%s });
    out.push([r.choices[0].text, r.usage.prompt_tokens, r.usage.completion_tokens]);
  }
  const chat = await engine.chat.completions.create({ messages: %s, ...%s });
  out.push([chat.choices[0].message.content, chat.usage.prompt_tokens, chat.usage.completion_tokens]);
  return out;
})()"""

_OUR_ENGINE_JS = """(async () => {
  const { CreateWebWorkerEngine, createEngineWorker } = await import("/site/runtime/index.js");
  return CreateWebWorkerEngine(createEngineWorker("/site/runtime/worker.js"), %s, { model: %s });
})()"""


def generate(tab: Any, load: str) -> list[list[Any]]:
    g = json.dumps(GREEDY)
    return tab.evaluate(_GENERATE_JS % (load, json.dumps(PROMPTS), g, json.dumps(CHAT), g), timeout_s=600)


@pytest.fixture(scope="module")
def ours(tab: Any) -> list[list[Any]]:
    """Our runtime's greedy outputs, loading the site from its manifest."""
    out = generate(tab, _OUR_ENGINE_JS % ('"/site/manifest.json"', "null"))
    assert all(tokens >= 4 for _, _, tokens in out) and len({text for text, _, _ in out}) > 1, out
    return out


def test_webllm_loads_the_site_as_served_and_generates_our_greedy_tokens(tab: Any, ours: list[list[Any]]) -> None:
    # The URLs come from webllmAppConfig (README: "WebLLM"): <site>/models/<id>/#/resolve/main/ and the library.
    load = """(async () => {
      const webllm = await import("/webllm/index.js");
      const { webllmAppConfig } = await import("/site/runtime/index.js");
      const manifestUrl = new URL("/site/manifest.json", location.href).href;
      const manifest = await (await fetch(manifestUrl)).json();
      const appConfig = webllmAppConfig(manifest, manifestUrl);
      return webllm.CreateMLCEngine(manifest.default_variant, { appConfig, logLevel: "WARN" });
    })()"""
    assert generate(tab, load) == ours


def to_webllm_folder(root: Path, model_id: str) -> None:
    """The site's default variant laid out as WebLLM's model folders on Hugging Face are: ``<repo>/resolve/main/``
    with mlc-chat-config.json (model_config as MLC LLM writes it: position_embedding_base, no rope_theta),
    ndarray-cache.json (the index's older name) and unhashed shard names; the library elsewhere."""
    variant = read_manifest(root / "site").portable_variant()
    src = root / "site" / variant.model_url
    dst = root / "hf" / model_id / "resolve" / "main"
    dst.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)
    chat_config = json.loads((src / "mlc-chat-config.json").read_text())
    chat_config["model_config"].pop("rope_theta")
    (dst / "mlc-chat-config.json").write_text(json.dumps(chat_config))
    index = json.loads((src / "tensor-cache.json").read_text())
    for i, shard in enumerate(index["records"]):
        shutil.copy(src / shard["dataPath"], dst / f"params_shard_{i}.bin")
        shard["dataPath"] = f"params_shard_{i}.bin"
    (dst / "ndarray-cache.json").write_text(json.dumps(index))
    (root / "hf-libs").mkdir()
    shutil.copy(root / "site" / variant.model_lib, root / "hf-libs" / f"{model_id}-webgpu.wasm")


def test_our_runtime_loads_a_webllm_model_folder_and_generates_the_same_tokens(
    served: tuple[Path, str], tab: Any, ours: list[list[Any]]
) -> None:
    root, url = served
    to_webllm_folder(root, "tiny-MLC")
    record = {"model": f"{url}hf/tiny-MLC", "model_id": "tiny-MLC", "model_lib": f"{url}hf-libs/tiny-MLC-webgpu.wasm"}
    assert not list((root / "hf").rglob("tensor-cache.json")) and not list((root / "hf").rglob("manifest.json"))
    app_config = {"model_list": [record | {"model_id": "other", "model": f"{url}nowhere"}, record]}
    assert generate(tab, _OUR_ENGINE_JS % (json.dumps(app_config), '"tiny-MLC"')) == ours
