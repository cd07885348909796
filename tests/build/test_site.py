"""webbuild.build.site: assembling the static site (layout, manifest, relative URLs, all-or-nothing writes)."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fake_site import fake_variant, scripted_pipeline_js

from webbuild.build import site as site_mod
from webbuild.build.resources import RUNTIME_DIR
from webbuild.build.site import SiteVariant, assemble_site
from webbuild.errors import CorruptFileError, InputError, ToolchainError


@pytest.fixture()
def variants(tmp_path: Path) -> list[SiteVariant]:
    return [
        fake_variant(tmp_path / "build", "tiny-q4f16_1", "q4f16_1"),
        fake_variant(tmp_path / "build", "tiny-q4f32_1", "q4f32_1"),
    ]


@pytest.fixture()
def built(tmp_path: Path, variants: list[SiteVariant]) -> Path:
    return assemble_site(tmp_path / "dist" / "tiny", name="tiny", variants=variants)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_site_has_the_contract_layout(built: Path) -> None:
    files = files_under(built)
    for path in [
        "index.html",
        "manifest.json",
        "assets/app.js",
        "assets/style.css",
        "runtime/index.js",
        "runtime/worker.js",
        "runtime/engine.js",
        "runtime/vendor/tokenizers.mjs",
        "runtime/vendor/jinja.js",
        "runtime/vendor/tvmjs.js",
        "libs/tiny-q4f16_1-webgpu.wasm",
        "libs/tiny-q4f32_1-webgpu.wasm",
    ]:
        assert path in files, path
    for variant in ["tiny-q4f16_1", "tiny-q4f32_1"]:
        model_files = {f.split("/", 2)[2] for f in files if f.startswith(f"models/{variant}/")}
        assert model_files == {
            "tensor-cache.json",
            "params_shard_0.bin",
            "params_shard_1.bin",
            "mlc-chat-config.json",
            "tokenizer.json",
            "tokenizer_config.json",
        }
    assert not any(f.startswith("runtime/test/") for f in files)


def test_manifest_lists_every_model_file_with_size_and_sha256(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["name"] == "tiny"
    assert manifest["default_variant"] == "tiny-q4f16_1"
    assert re.match(r"\d{4}-\d\d-\d\dT", manifest["created"])
    by_id = {m["id"]: m for m in manifest["variants"]}
    m = by_id["tiny-q4f32_1"]
    assert m["quantization"] == "q4f32_1"
    assert m["model_url"] == "models/tiny-q4f32_1/"
    assert m["model_lib"] == "libs/tiny-q4f32_1-webgpu.wasm"
    assert m["needs_shader_f16"] is False and by_id["tiny-q4f16_1"]["needs_shader_f16"] is True
    assert m["context_window_size"] == 512
    listed: set[str] = set()
    for model in manifest["variants"]:
        for f in model["files"]:
            data = (built / f["path"]).read_bytes()
            assert f["bytes"] == len(data)
            assert f["sha256"] == hashlib.sha256(data).hexdigest()
            listed.add(f["path"])
    model_files = {f for f in files_under(built) if f.startswith(("models/", "libs/"))}
    assert listed == model_files
    site_listed = {f["path"] for f in manifest["files"]}
    assert site_listed == files_under(built) - model_files - {"manifest.json"}


def code_of(script: Path) -> str:
    """A script's text without comment lines (usage examples in comments are not imports)."""
    lines = script.read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith(("//", "*", "/*")))


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_page_and_scripts_use_relative_urls_only(built: Path) -> None:
    parser = _Urls()
    parser.feed((built / "index.html").read_text())
    assert parser.urls, "the page should reference its assets"
    for url in parser.urls:
        assert not url.startswith("/") and "://" not in url, url
        if not url.startswith("data:"):
            assert (built / url).is_file(), url
    for script in [built / "assets" / "app.js", *(built / "runtime").glob("*.js")]:
        loads = re.findall(r"""(?:new URL|fetch|import)\(\s*["'`]([^"'`]+)""", code_of(script))
        for url in loads:
            assert not url.startswith("/") and "://" not in url, f"{script.name}: {url}"


def test_page_lists_the_variants(built: Path) -> None:
    html = (built / "index.html").read_text()
    assert "<title>tiny</title>" in html
    assert 'value="tiny-q4f32_1"' in html and 'value="tiny-q4f16_1" title="needs a GPU with shader-f16"' in html


def test_every_relative_import_of_the_runtime_resolves_inside_the_site(built: Path) -> None:
    pattern = re.compile(r"""(?:from\s+|import\s*\(\s*|import\s+)["'](\.{1,2}/[^"']+)["']""")
    for script in [*(built / "runtime").glob("*.js"), built / "assets" / "app.js"]:
        for spec in pattern.findall(code_of(script)):
            assert (script.parent / spec).resolve().is_file(), f"{script.name} imports {spec}"


def test_the_built_runtime_is_copied_as_it_is(built: Path) -> None:
    runtime = {f: (RUNTIME_DIR / f).read_bytes() for f in files_under(RUNTIME_DIR)}
    assert {"index.js", "worker.js", "vendor/tvmjs.js", "vendor/LICENSE.tvmjs.txt"} <= set(runtime)
    assert {f: (built / "runtime" / f).read_bytes() for f in files_under(built / "runtime")} == runtime


def test_a_missing_runtime_fails_before_writing_and_names_the_build(
    tmp_path: Path, variants: list[SiteVariant]
) -> None:
    unbuilt = tmp_path / "runtime"
    (unbuilt / "vendor").mkdir(parents=True)
    (unbuilt / "index.js").write_text("export {};\n")
    out = tmp_path / "dist" / "tiny"
    with pytest.raises(ToolchainError, match="lacks worker.js") as err:
        assemble_site(out, name="tiny", variants=variants, runtime_dir=unbuilt)
    assert "npm run build:site" in str(err.value.tip)
    assert not out.parent.exists()


def test_vendored_modules_have_no_bare_imports(built: Path) -> None:
    for name in ("tokenizers.mjs", "jinja.js"):
        text = (built / "runtime" / "vendor" / name).read_text()
        assert not re.search(r"""^\s*import\s[^;]*from\s*["'][^./]""", text, re.M), name
    assert (built / "runtime" / "vendor" / "LICENSE.tvmjs.txt").is_file()


def test_rebuilding_replaces_the_previous_site(tmp_path: Path, variants: list[SiteVariant]) -> None:
    out = tmp_path / "dist" / "tiny"
    assemble_site(out, name="tiny", variants=variants)
    (out / "stale.txt").write_text("from the old build")
    assemble_site(out, name="tiny", variants=variants[1:])
    assert not (out / "stale.txt").exists()
    assert [m["id"] for m in json.loads((out / "manifest.json").read_text())["variants"]] == ["tiny-q4f32_1"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_a_failure_midway_leaves_no_partial_site(tmp_path: Path, variants: list[SiteVariant], monkeypatch) -> None:
    out = tmp_path / "dist" / "tiny"
    calls = {"n": 0}
    real_write = site_mod._write

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError("disk full")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(site_mod, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        assemble_site(out, name="tiny", variants=variants)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_a_failed_rebuild_keeps_the_previous_site(tmp_path: Path, variants: list[SiteVariant], monkeypatch) -> None:
    out = tmp_path / "dist" / "tiny"
    assemble_site(out, name="tiny", variants=variants)
    before = {f: (out / f).read_bytes() for f in files_under(out)}
    monkeypatch.setattr(site_mod, "write_manifest", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        assemble_site(out, name="tiny", variants=variants[1:])
    assert {f: (out / f).read_bytes() for f in files_under(out)} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def test_a_missing_or_truncated_shard_is_reported_before_writing(tmp_path: Path, variants: list[SiteVariant]) -> None:
    out = tmp_path / "dist" / "tiny"
    (variants[0].model_dir / "params_shard_1.bin").write_bytes(b"\x02" * 10)
    with pytest.raises(CorruptFileError, match="params_shard_1.bin has 10 bytes"):
        assemble_site(out, name="tiny", variants=variants)
    (variants[0].model_dir / "params_shard_1.bin").unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        assemble_site(out, name="tiny", variants=variants)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


def test_bad_inputs_are_refused_with_clear_errors(tmp_path: Path, variants: list[SiteVariant]) -> None:
    out = tmp_path / "dist" / "tiny"
    with pytest.raises(InputError, match="No model variants"):
        assemble_site(out, name="tiny", variants=[])
    with pytest.raises(InputError, match="unique"):
        assemble_site(out, name="tiny", variants=[variants[0], variants[0]])
    with pytest.raises(InputError, match="default_variant"):
        assemble_site(out, name="tiny", variants=variants, default_variant="other")
    variants[1].library.unlink()
    with pytest.raises(InputError, match="model library"):
        assemble_site(out, name="tiny", variants=variants)


def test_a_directory_that_is_not_a_site_is_never_replaced(tmp_path: Path, variants: list[SiteVariant]) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(InputError, match="not a webbuild site"):
        assemble_site(out, name="tiny", variants=variants)
    assert (out / "thesis.tex").read_text() == "years of work"


# ---- the assembled site in a real browser (headless Chromium, SwiftShader WebGPU: no shader-f16) ---------

# A worker that uses the vendored modules directly: tokenizer, chat template, tvmjs.
CHECK_WORKER = """
import { TextTokenizer } from "../runtime/tokenizer.js";
import { ChatTemplate } from "../runtime/chat_template.js";
import { loadTvmjs } from "../runtime/vendor.js";
import { VerifiedCache } from "../runtime/cache.js";

async function checkCache() {
  const root = new URL("../", self.location.href);
  const manifest = await fetch(new URL("manifest.json", root)).then((r) => r.json());
  const files = manifest.variants.find((m) => m.id === "tiny-q4f32_1").files;
  const digests = new Map(files.map((f) => [new URL(f.path, root).href, f.sha256]));
  const shard = new URL("models/tiny-q4f32_1/params_shard_0.bin", root).href;
  const cache = new VerifiedCache("webbuild-test", { digests });
  const bytes = new Uint8Array(await cache.fetchWithCache(shard, "arraybuffer"));
  const cached = await cache.hasAllKeys([shard]);
  let refused = null;
  try {
    const bad = new VerifiedCache("webbuild-test-bad", { digests: new Map([[shard, "00".repeat(32)]]) });
    await bad.fetchWithCache(shard, "arraybuffer");
  } catch (e) {
    refused = e.code;
  }
  return { bytes: bytes.length, cached, refused };
}

self.onmessage = async (ev) => {
  try {
    const base = new URL("../models/tiny-q4f32_1/", self.location.href);
    const [tj, tc] = await Promise.all(
      ["tokenizer.json", "tokenizer_config.json"].map((f) => fetch(new URL(f, base)).then((r) => r.json())));
    const tok = new TextTokenizer(tj, tc);
    const prompt = ChatTemplate.fromTokenizerConfig(tc).render(ev.data.messages);
    const ids = tok.encode(prompt);
    const tvmjs = await loadTvmjs();
    const cache = await checkCache();
    postMessage({ prompt, ids, decoded: tok.decode(ids), tvmjs: Object.keys(tvmjs), cache });
  } catch (e) {
    postMessage({ error: String((e && e.stack) || e) });
  }
};
"""


def fake_engine_worker(runtime: str) -> str:
    """The real engine, served by the runtime's worker host, with a scripted model instead of a TVM library: it
    replies with the worker's name (or a fixed sentence), a token per decode step."""
    return (
        f"""
import {{ Engine }} from "{runtime}engine.js";
import {{ startWorker }} from "{runtime}worker_host.js";
import {{ TextTokenizer }} from "{runtime}tokenizer.js";
"""
        + "\n"
        + scripted_pipeline_js(decode_delay_ms=5)
        + """
startWorker({ createEngine: () => new Engine({
  detectGpu: async () => ({ hasShaderF16: false, info: { vendor: "scripted" } }),
  loadPipeline: async ({ record, onProgress }) => {
    const get = (f) => fetch(new URL(f, record.model_url)).then((r) => r.json());
    const tok = new TextTokenizer(await get("tokenizer.json"), await get("tokenizer_config.json"));
    onProgress({ phase: "weights", loaded: 1064, total: 1064, text: "loaded" });
    const reply = self.name || "The capital of France is Paris.";
    return new ScriptedPipeline([...tok.encode(reply), tok.tokenId("<|im_end|>")]);
  },
}) });
"""
    )


STREAM_CHAT = """async (reply) => {
  const { WebWorkerEngine, ContextLengthExceededError } = await import("./runtime/index.js");
  const engine = new WebWorkerEngine(new Worker("check/fake_engine_worker.js", { type: "module", name: reply }));
  const progress = [];
  const info = await engine.reload("manifest.json", { initProgressCallback: (p) => progress.push(p) });
  const messages = [{ role: "user", content: "Capital of France?" }];
  const request = { messages, stream: true, stream_options: { include_usage: true } };
  const stream = await engine.chat.completions.create(request);
  let text = "";
  let usage = null;
  let chunks = 0;
  for await (const c of stream) {
    chunks++;
    text += c.choices[0]?.delta?.content ?? "";
    usage = c.usage ?? usage;
  }
  let error = null;
  try {
    await engine.chat.completions.create({ messages, max_tokens: 100000 });
  } catch (e) {
    error = { isClass: e instanceof ContextLengthExceededError, code: e.code, param: e.param };
  }
  engine.terminate();
  return { info, progress, text, usage, chunks, error };
}"""


@pytest.fixture(scope="module")
def served_site(tmp_path_factory: pytest.TempPathFactory):
    import shutil

    from starlette.applications import Starlette
    from starlette.routing import Mount

    from webbuild.serve.app import create_app, serving

    root = tmp_path_factory.mktemp("browser")
    variants = [
        fake_variant(root / "build", "tiny-q4f16_1", "q4f16_1"),
        fake_variant(root / "build", "tiny-q4f32_1", "q4f32_1"),
    ]
    site = assemble_site(root / "dist" / "tiny", name="tiny", variants=variants)
    (site / "check").mkdir()
    (site / "check" / "worker.js").write_text(CHECK_WORKER)
    (site / "check" / "fake_engine_worker.js").write_text(fake_engine_worker("../runtime/"))
    # A copy whose runtime/worker.js hosts the scripted engine, served under a sub-path: the real page,
    # end to end, minus the GPU.
    ui_site = root / "ui-site"
    shutil.copytree(site, ui_site)
    (ui_site / "runtime" / "worker.js").write_text(fake_engine_worker("./"))
    app = Starlette(routes=[Mount("/demo/chat", app=create_app(ui_site)), Mount("/", app=create_app(site))])
    with serving(app) as url:
        yield site, url


@pytest.fixture(scope="module")
def browser_page(served_site):
    from playwright.sync_api import sync_playwright

    from webbuild.browser import launch_options

    site, base = served_site
    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_options())
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base)
        yield page, site, errors
        browser.close()


@pytest.mark.toolchain
def test_page_starts_the_worker_and_shows_typed_load_errors(browser_page) -> None:
    page, _, errors = browser_page
    # SwiftShader has no shader-f16: the automatic choice is the f32 variant, whose fake library fails to load.
    page.wait_for_selector("body[data-state=error]", timeout=60_000)
    code, text = page.eval_on_selector("#error", "e => [e.dataset.code, e.innerText]")
    assert code == "model_load_failed"
    assert "libs/tiny-q4f32_1-webgpu.wasm" in text
    page.select_option("#model", "tiny-q4f16_1")
    page.wait_for_selector("#error[data-code=shader_f16_unsupported]")
    assert '"tiny-q4f32_1"' in page.inner_text("#error")
    assert errors == []


@pytest.mark.toolchain
def test_vendored_modules_and_the_verified_cache_work_in_a_module_worker(browser_page) -> None:
    from tokenizers import Tokenizer

    page, site, _ = browser_page
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world! café 東京 😀"}]
    result = page.evaluate(
        """(messages) => new Promise((resolve) => {
            const w = new Worker("check/worker.js", { type: "module" });
            w.onmessage = (ev) => resolve(ev.data);
            w.onerror = (ev) => resolve({ error: "worker failed: " + ev.message });
            w.postMessage({ messages });
        })""",
        messages,
    )
    assert "error" not in result, result.get("error")
    assert result["prompt"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello world! café 東京 😀<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    tok = Tokenizer.from_file(str(site / "models" / "tiny-q4f32_1" / "tokenizer.json"))
    assert result["ids"] == tok.encode(result["prompt"], add_special_tokens=False).ids
    assert {"instantiate", "detectGPUDevice", "createPolyfillWASI"} <= set(result["tvmjs"])
    # Weights cache: Cache API + WebCrypto check downloads against manifest.json's sha256.
    assert result["cache"] == {"bytes": 1000, "cached": True, "refused": "integrity_check_failed"}


@pytest.mark.toolchain
def test_streamed_chat_and_typed_errors_cross_the_worker_boundary(browser_page) -> None:
    page, _, _ = browser_page
    reply = "Hello world! The capital of France is Paris."
    out = page.evaluate(STREAM_CHAT, reply)
    assert out["info"]["id"] == "tiny-q4f32_1"
    assert out["progress"][-1] == {"phase": "weights", "loaded": 1064, "total": 1064, "text": "loaded"}
    assert out["text"] == reply
    assert out["chunks"] > 5
    assert out["usage"]["completion_tokens"] > 5
    assert set(out["usage"]["extra"]) >= {"prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s"}
    assert out["error"] == {"isClass": True, "code": "context_length_exceeded", "param": "max_tokens"}


@pytest.mark.toolchain
def test_the_chat_page_streams_a_reply_under_a_sub_path(browser_page) -> None:
    page, _, errors = browser_page
    page.goto(page.url.rstrip("/") + "/demo/chat/")
    page.wait_for_selector("body[data-state=ready]", timeout=60_000)
    page.fill("#prompt", "What is the capital of France?")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".msg.assistant .meta", timeout=60_000)
    page.wait_for_selector("body[data-state=ready]")
    assert page.inner_text(".msg.user") == "What is the capital of France?"
    reply = page.inner_text(".msg.assistant")
    assert reply.startswith("The capital of France is Paris.")
    assert "tok/s" in page.inner_text(".msg.assistant .meta")
    assert "tok/s" in page.inner_text("#stats")
    assert errors == []
