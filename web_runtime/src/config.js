// What to load: the site's manifest.json (written by `webbuild package`), the variant that suits this GPU,
// and the model's mlc-chat-config.json facts the engine needs (generation defaults, stop tokens).

import { ModelLoadError, ModelNotFoundError, ShaderF16UnsupportedError } from "./errors.js";

/**
 * @typedef {object} Variant  one build of the site's model (a quantization), as manifest.json lists it
 * @property {string} id  "<model_id>-<quantization>"
 * @property {string} quantization
 * @property {string} model_url  folder with tensor-cache.json, shards, configs (relative to the manifest)
 * @property {string} model_lib  the -webgpu.wasm model library (relative to the manifest)
 * @property {boolean} [needs_shader_f16]
 * @property {number} [context_window_size]
 * @property {{path: string, bytes: number, sha256: string}[]} [files]  paths relative to the manifest
 */

/**
 * @typedef {object} Manifest  manifest.json (webbuild/site_format/manifest.py writes it)
 * @property {number} format_version
 * @property {string} name
 * @property {string} [created]
 * @property {string} default_variant
 * @property {Variant[]} variants
 */

/** The manifest format this runtime reads (webbuild/site_format/manifest.py FORMAT_VERSION). */
export const MANIFEST_FORMAT_VERSION = 2;

/**
 * @param {string} url
 * @param {string} what  for the error message ("the site manifest")
 * @param {AbortSignal} [signal]
 * @returns {Promise<any>}
 */
export async function fetchJson(url, what, signal) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (err) {
    throw new ModelLoadError(`Could not fetch ${what} (${url}): ${errorText(err)}`, { cause: err, data: { url } });
  }
  if (!response.ok) {
    throw new ModelLoadError(`Could not fetch ${what} (${url}): HTTP ${response.status}.`, {
      data: { url, status: response.status },
      tip: response.status === 404 ? "Is the site complete? Re-run `webbuild package`." : null,
    });
  }
  try {
    return await response.json();
  } catch (err) {
    throw new ModelLoadError(`${what} (${url}) is not valid JSON.`, { cause: err, data: { url } });
  }
}

/** @param {Variant} record */
export function needsShaderF16(record) {
  return record.needs_shader_f16 ?? /f16/.test(record.quantization ?? "");
}

/**
 * The variant of the same model that runs without shader-f16, and whether the bundle carries it.
 * @param {Variant} record
 * @param {Variant[]} models
 * @returns {{id: string, record: Variant | null}}
 */
export function f32Variant(record, models) {
  const quant = record.quantization ?? "";
  const base = quant && record.id.endsWith(`-${quant}`) ? record.id.slice(0, -quant.length - 1) : record.id;
  const f32Quant = quant.replace("f16", "f32") || "q4f32_1";
  const id = `${base}-${f32Quant}`;
  const exact = models.find((m) => m.id === id && !needsShaderF16(m));
  const sameBase = models.find((m) => m.id.startsWith(`${base}-`) && !needsShaderF16(m));
  const found = exact ?? sameBase ?? null;
  return { id: found ? found.id : id, record: found };
}

/**
 * Chooses the variant to load. An explicit `requested` id is honoured or refused; without one, the
 * manifest's default is used, swapped for its f32 variant when the adapter lacks shader-f16.
 * @param {Variant[]} models
 * @param {{requested?: string | null, defaultId?: string | null, hasShaderF16: boolean}} options
 * @returns {Variant}
 */
export function pickVariant(models, { requested = null, defaultId = null, hasShaderF16 }) {
  if (models.length === 0) throw new ModelNotFoundError("The manifest lists no models.");
  const wanted = requested ?? defaultId ?? models[0].id;
  const record = models.find((m) => m.id === wanted);
  if (!record) {
    throw new ModelNotFoundError(
      `Model "${wanted}" is not on this site; it has: ${models.map((m) => m.id).join(", ")}.`,
      { param: "model", data: { model: wanted, available: models.map((m) => m.id) } },
    );
  }
  if (hasShaderF16 || !needsShaderF16(record)) return record;
  const alt = f32Variant(record, models);
  if (requested == null && alt.record) return alt.record;
  throw ShaderF16UnsupportedError.forModel(record.id, alt.id, alt.record !== null);
}

/**
 * Resolves a load source to a record whose URLs are absolute.
 * @param {string | Manifest | Variant} source  manifest URL, manifest object, or one model record
 * @param {{model?: string | null, hasShaderF16: boolean, baseUrl?: string, signal?: AbortSignal}} options
 * @returns {Promise<{record: Variant, manifest: Manifest | null}>}
 */
export async function resolveModel(source, { model = null, hasShaderF16, baseUrl, signal }) {
  const base = baseUrl ?? globalThis.location?.href;
  /** @type {Manifest | null} */ let manifest = null;
  /** @type {string | undefined} */ let manifestUrl = base;
  if (typeof source === "string") {
    manifestUrl = new URL(source, base).href;
    manifest = await fetchJson(manifestUrl, "the site manifest", signal);
  } else if (source && Array.isArray(/** @type {Manifest} */ (source).variants)) {
    manifest = /** @type {Manifest} */ (source);
  }
  let record;
  if (manifest) {
    if (manifest.format_version !== MANIFEST_FORMAT_VERSION || !Array.isArray(manifest.variants)) {
      throw new ModelLoadError(
        `The manifest at ${manifestUrl} has format version ${manifest.format_version}; this runtime reads ` +
          `version ${MANIFEST_FORMAT_VERSION}.`,
        { tip: "Rebuild the site with `webbuild package`, or use the runtime it was built with." },
      );
    }
    record = pickVariant(manifest.variants, {
      requested: model,
      defaultId: manifest.default_variant,
      hasShaderF16,
    });
  } else {
    record = /** @type {Variant} */ (source);
    if (!record || typeof record.model_url !== "string" || typeof record.model_lib !== "string") {
      throw new ModelLoadError(
        "reload() needs a manifest URL, a manifest, or a variant with model_url/model_lib.",
      );
    }
    record = pickVariant([record], { requested: model, hasShaderF16 });
  }
  if (!manifestUrl) throw new ModelLoadError("Relative model URLs need a baseUrl outside a page.");
  const modelUrl = new URL(record.model_url, manifestUrl).href;
  return {
    record: {
      ...record,
      model_url: modelUrl.endsWith("/") ? modelUrl : `${modelUrl}/`,
      model_lib: new URL(record.model_lib, manifestUrl).href,
      files: record.files?.map((f) => ({ ...f, path: new URL(f.path, manifestUrl).href })),
    },
    manifest,
  };
}

/**
 * The request defaults a model ships with (mlc-chat-config.json); OpenAI's defaults fill the rest.
 * @param {Record<string, any>} chatConfig
 * @returns {import("./openai.js").ModelDefaults}
 */
export function generationDefaults(chatConfig) {
  /** @type {Record<string, number>} */
  const out = {};
  for (const key of ["temperature", "top_p", "presence_penalty", "frequency_penalty"]) {
    if (typeof chatConfig[key] === "number") out[key] = chatConfig[key];
  }
  return out;
}

/**
 * Token ids that end generation: eos_token_id (int or list), the conversation template's stop tokens,
 * and the tokenizer's eos token.
 * @param {Record<string, any>} chatConfig
 * @param {{eosToken: string | null, tokenId: (t: string) => number | undefined}} tokenizer
 * @returns {Set<number>}
 */
export function stopTokenIds(chatConfig, tokenizer) {
  const ids = new Set();
  const eos = chatConfig.eos_token_id;
  for (const id of Array.isArray(eos) ? eos : [eos]) if (Number.isInteger(id)) ids.add(id);
  for (const id of chatConfig.conv_template?.stop_token_ids ?? []) if (Number.isInteger(id)) ids.add(id);
  if (tokenizer.eosToken) {
    const id = tokenizer.tokenId(tokenizer.eosToken);
    if (id !== undefined) ids.add(id);
  }
  return ids;
}

/**
 * Extra stop strings for chat from the conversation template (e.g. a role marker that is not a special
 * token); special tokens are left out, since they are stopped by id and never decoded into text.
 * @param {Record<string, any>} chatConfig
 * @param {{tokenId: (t: string) => number | undefined}} tokenizer
 * @param {Set<number>} stopIds
 * @returns {string[]}
 */
export function chatStopStrings(chatConfig, tokenizer, stopIds) {
  const strs = chatConfig.conv_template?.stop_str ?? [];
  return strs.filter((s) => typeof s === "string" && s.length > 0 && !stopIds.has(tokenizer.tokenId(s) ?? -1));
}

/** @param {unknown} err */
export function errorText(err) {
  return err instanceof Error ? err.message : String(err);
}
