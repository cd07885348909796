import { test } from "node:test";
import assert from "node:assert/strict";
import { resolveModel, webllmAppConfig, webllmModelUrl } from "../src/config.js";
import { ModelLoadError, ModelNotFoundError, ShaderF16UnsupportedError } from "../src/errors.js";

const PAGE = "https://app.test/chat/";
const HF = "https://huggingface.co/mlc-ai";
const appConfig = {
  model_list: [
    {
      model: `${HF}/Llama-3.2-1B-Instruct-q4f16_1-MLC`,
      model_id: "Llama-3.2-1B-Instruct-q4f16_1-MLC",
      model_lib: "https://cdn.test/libs/Llama-3.2-1B-Instruct-q4f16_1-ctx4k_cs1k-webgpu.wasm",
      required_features: ["shader-f16"],
      overrides: { context_window_size: 2048 },
    },
    {
      model: `${HF}/Llama-3.2-1B-Instruct-q4f32_1-MLC/`,
      model_id: "Llama-3.2-1B-Instruct-q4f32_1-MLC",
      model_lib: "libs/Llama-3.2-1B-Instruct-q4f32_1-ctx4k_cs1k-webgpu.wasm",
    },
  ],
};

test("a model URL gets resolve/main/ as WebLLM appends it, unless it names a revision", () => {
  assert.equal(webllmModelUrl(`${HF}/m-MLC`, PAGE), `${HF}/m-MLC/resolve/main/`);
  assert.equal(webllmModelUrl(`${HF}/m-MLC/`, PAGE), `${HF}/m-MLC/resolve/main/`);
  assert.equal(webllmModelUrl(`${HF}/m-MLC/resolve/v2`, PAGE), `${HF}/m-MLC/resolve/v2/`);
  assert.equal(webllmModelUrl("models/m/#/resolve/main/", PAGE), `${PAGE}models/m/#/resolve/main/`);
});

test("WebLLM's appConfig loads the record asked for, with WebLLM's URLs, features and overrides", async () => {
  const model = appConfig.model_list[1].model_id;
  const f32 = await resolveModel(appConfig, { model, hasShaderF16: false, baseUrl: PAGE });
  assert.deepEqual(f32.variantIds, appConfig.model_list.map((r) => r.model_id)); // what reload(modelId) picks from
  assert.equal(f32.record.id, "Llama-3.2-1B-Instruct-q4f32_1-MLC");
  assert.equal(f32.record.quantization, "q4f32_1");
  assert.equal(f32.record.model_url, `${HF}/Llama-3.2-1B-Instruct-q4f32_1-MLC/resolve/main/`);
  assert.equal(f32.record.model_lib, `${PAGE}libs/Llama-3.2-1B-Instruct-q4f32_1-ctx4k_cs1k-webgpu.wasm`);
  assert.equal(f32.record.needs_shader_f16, false);
  const f16 = await resolveModel(appConfig.model_list[0], { hasShaderF16: true, baseUrl: PAGE });
  assert.equal(f16.record.quantization, "q4f16_1");
  assert.equal(f16.record.needs_shader_f16, true);
  assert.equal(f16.record.context_window_size, 2048);
  assert.deepEqual(f16.variantIds, [appConfig.model_list[0].model_id]);
});

test("WebLLM records are refused as manifests are: an unknown id, shader-f16 missing, a field missing", async () => {
  await assert.rejects(resolveModel(appConfig, { model: "nope", hasShaderF16: true, baseUrl: PAGE }), (err) => {
    assert.ok(err instanceof ModelNotFoundError);
    assert.deepEqual(err.data.available, appConfig.model_list.map((r) => r.model_id));
    return true;
  });
  await assert.rejects(
    resolveModel(appConfig.model_list[0], { hasShaderF16: false, baseUrl: PAGE }),
    ShaderF16UnsupportedError,
  );
  const { model_lib: _, ...noLib } = appConfig.model_list[1];
  await assert.rejects(resolveModel({ model_list: [noLib] }, { hasShaderF16: true, baseUrl: PAGE }), (err) => {
    assert.ok(err instanceof ModelLoadError);
    assert.match(err.message, /WebLLM model record 0 has no model_lib/);
    return true;
  });
});

test("a site's WebLLM appConfig names the folders and libraries the manifest does, as absolute URLs", async () => {
  const manifestUrl = "https://host.test/sites/tiny/manifest.json";
  const variant = (q, f16) => ({
    id: `tiny-${q}`,
    quantization: q,
    model_url: `models/tiny-${q}/`,
    model_lib: `libs/tiny-${q}-webgpu.wasm`,
    needs_shader_f16: f16,
  });
  const manifest = {
    format_version: 2,
    name: "tiny",
    default_variant: "tiny-q4f16_1",
    variants: [variant("q4f16_1", true), variant("q4f32_1", false)],
  };
  const config = webllmAppConfig(manifest, manifestUrl);
  assert.deepEqual(config.model_list[0], {
    model: "https://host.test/sites/tiny/models/tiny-q4f16_1/#/resolve/main/",
    model_id: "tiny-q4f16_1",
    model_lib: "https://host.test/sites/tiny/libs/tiny-q4f16_1-webgpu.wasm",
    required_features: ["shader-f16"],
  });
  assert.equal(config.model_list[1].required_features, undefined);
  for (const v of manifest.variants) {
    // WebLLM resolves each file against the model URL: the fragment goes, the manifest's folder remains.
    const rec = config.model_list.find((r) => r.model_id === v.id);
    const inFolder = (folder, base) => new URL("mlc-chat-config.json", new URL(folder, base)).href;
    assert.equal(inFolder(rec.model), inFolder(v.model_url, manifestUrl));
    const ours = await resolveModel(manifest, { model: v.id, hasShaderF16: true, baseUrl: manifestUrl });
    const back = await resolveModel(config, { model: v.id, hasShaderF16: true, baseUrl: PAGE });
    assert.equal(inFolder(back.record.model_url), inFolder(ours.record.model_url));
    assert.equal(back.record.model_lib, ours.record.model_lib);
    assert.equal(back.record.needs_shader_f16, v.needs_shader_f16);
  }
});
