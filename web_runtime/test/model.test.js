import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { loadModel } from "../src/model.js";
import { IntegrityError } from "../src/errors.js";
import { fixture } from "./helpers.js";

const SITE = "https://site.test/";
const MODEL = `${SITE}models/tiny-q4f32_1/`;
const hex = (text) => createHash("sha256").update(text).digest("hex");
const originals = {
  "mlc-chat-config.json": JSON.stringify({ vocab_size: 400, eos_token_id: 2 }),
  "tokenizer.json": JSON.stringify(fixture("tokenizer.json")),
  "tokenizer_config.json": JSON.stringify(fixture("tokenizer_config.json")),
};
const variant = {
  id: "tiny-q4f32_1",
  quantization: "q4f32_1",
  model_url: "models/tiny-q4f32_1/",
  model_lib: "libs/tiny-q4f32_1-webgpu.wasm",
  files: Object.entries(originals).map(([name, text]) => ({
    path: `models/tiny-q4f32_1/${name}`,
    bytes: text.length,
    sha256: hex(text),
  })),
};
const manifest = { format_version: 2, name: "tiny", default_variant: variant.id, variants: [variant] };

let served = {};
globalThis.fetch = async (url) => {
  const u = String(url);
  if (u === `${SITE}manifest.json`) return new Response(JSON.stringify(manifest));
  const name = u.slice(MODEL.length);
  return u.startsWith(MODEL) && name in served ? new Response(served[name]) : new Response("missing", { status: 404 });
};

const load = () =>
  loadModel(`${SITE}manifest.json`, { hasShaderF16: false, info: {} }, async () => ({ contextWindowSize: 64 }), {
    onProgress: () => {},
  });

test("the configs and the tokenizer load when they match the manifest", async () => {
  served = { ...originals };
  const model = await load();
  assert.equal(model.vocabSize, 400);
  assert.ok(model.tokenizer.encode("hello").length > 0);
});

for (const name of Object.keys(originals)) {
  test(`a tampered ${name} is refused, naming it`, async () => {
    served = { ...originals, [name]: originals[name].replace("}", ', "x": 1}') };
    await assert.rejects(load(), (err) => {
      assert.ok(err instanceof IntegrityError, err.name);
      assert.equal(err.code, "integrity_check_failed");
      assert.equal(err.data.url, `${MODEL}${name}`);
      assert.ok(err.message.includes(name));
      return true;
    });
  });
}

test("a WebLLM model folder without tokenizer_config.json loads, for completions only", async () => {
  const { "tokenizer_config.json": _, ...rest } = originals;
  served = rest;
  const record = { model: `${SITE}models/tiny-q4f32_1/#/resolve/main/`, model_id: "tiny", model_lib: `${SITE}lib.wasm` };
  const model = await loadModel(record, { hasShaderF16: false, info: {} }, async () => ({ contextWindowSize: 64 }), {
    onProgress: () => {},
  });
  assert.equal(model.record.id, "tiny");
  assert.equal(model.template, null);
  assert.ok(model.tokenizer.encode("hello").length > 0);
  // A site's manifest lists the file, so there a missing one is a broken site, not a WebLLM folder.
  await assert.rejects(load(), /tokenizer_config\.json: HTTP 404/);
});
